"""The report is a template over a run's metrics: every number is tied to the metric it reports, the committed
report quotes the committed record exactly, and a check names any number or claim that a run contradicts."""
import copy
import re

import nbformat
import pytest

from hw3tools import report
from hw3tools.notebook import NOTEBOOK, report_text

TEMPLATE = report.TEMPLATE.read_text()
RECORD = report.load_json(report.RECORD)
QUOTED = report.quoted_sources(RECORD)  # the record's metrics and the committed study
# Numbers written into the template's prose rather than read from a run: the sampling grid's settings and the
# accuracy level that the field {model_first_084} is defined by.
SETTINGS = {"0.5", "0.9", "1.0", "1.5", "2.0", "0.84"}


def test_every_field_of_the_template_names_a_metric_of_the_record():
    values = report.field_values(TEMPLATE, QUOTED)
    assert len(values) >= 20
    assert set(values) <= set(report.VALUES)


def test_the_committed_notebook_quotes_the_record_exactly():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert report_text(nb) == "\n\n".join(report.render(TEMPLATE, QUOTED)) + "\n"
    assert report.contradictions(report_text(nb), TEMPLATE, QUOTED) == []


def test_the_template_writes_no_measured_number_into_its_prose():
    prose = report.FIELD.sub("", TEMPLATE)
    prose = re.sub(r"\([^)]*\.png\)", "", prose)  # figure paths
    decimals = set(re.findall(r"(?<![\w.])\d+\.\d+", prose))
    assert decimals <= SETTINGS, f"literal decimals {decimals - SETTINGS}: make them fields read from the metrics"


def test_every_claim_stands_in_the_template_and_holds_for_the_record():
    assert report.CLAIMS
    for claim in report.CLAIMS:
        assert claim.text in " ".join(TEMPLATE.split()), claim.text
    assert report.broken_claims(QUOTED) == []


def test_a_number_changed_by_hand_is_named_with_its_metric():
    rendered = "\n\n".join(report.render(TEMPLATE, QUOTED))
    quoted = format(QUOTED["final_test_accuracy"], ".3f")
    tampered = rendered.replace(f"reaches {quoted} test accuracy", "reaches 0.912 test accuracy", 1)
    assert tampered != rendered
    assert report.contradictions(tampered, TEMPLATE, QUOTED) == [
        f"the report quotes 0.912 for final_test_accuracy ({{accuracy}}); this run gives {quoted}"]


def test_a_run_with_other_numbers_is_told_which_ones_differ():
    other = copy.deepcopy(QUOTED)
    other["final_test_accuracy"] += 0.01
    rendered = "\n\n".join(report.render(TEMPLATE, QUOTED))
    problems = report.contradictions(rendered, TEMPLATE, other)
    assert problems and all("final_test_accuracy" in p or "final_test_accuracy" in p.split("(")[0]
                            or "bayes_optimal_accuracy - final_test_accuracy" in p for p in problems)
    assert report.contradictions("\n\n".join(report.render(TEMPLATE, other)), TEMPLATE, other) == []


def test_reworded_prose_is_named_by_its_line():
    rendered = "\n\n".join(report.render(TEMPLATE, QUOTED))
    reworded = rendered.replace("autoregressively", "one at a time", 1)
    [problem] = report.contradictions(reworded, TEMPLATE, QUOTED)
    assert "wording differs" in problem and "one at a time" in problem


def test_a_claim_that_a_run_contradicts_is_named():
    for claim in report.CLAIMS:
        assert claim.contradicted_by is not None, f"{claim.text!r} has no example of a run that breaks it"
        broken = claim.contradicted_by(copy.deepcopy(QUOTED))
        assert any(claim.text in problem for problem in report.broken_claims(broken)), claim.text


def test_set_report_replaces_the_report_cells_only(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    before = [c.source for c in nb.cells]
    count = len(report.render(TEMPLATE, QUOTED))
    report.set_report(nb, ["one", "two"])
    assert report_text(nb) == "one\n\ntwo\n"
    assert [c.source for c in nb.cells][: len(before) - count] == before[: len(before) - count]


def test_flatten_names_rows_by_their_setting_and_group():
    flat = report.flatten({"a": [1, 2], "sampling_study": [{"setting": "greedy", "x": 0.5}],
                           "study": [{"group": "epochs", "name": "16 epochs", "y": {"mean": 1}}], "flag": True})
    assert flat == {"a[0]": 1.0, "a[1]": 2.0, "sampling_study[greedy].x": 0.5, "study[epochs: 16 epochs].y.mean": 1.0,
                    "flag": 1.0}


def test_tolerances_cover_every_metric_and_follow_their_measurements():
    tolerances = report.load_json(report.TOLERANCES)
    assert report.deviations(RECORD, RECORD, tolerances["families"])  # raises if a metric has no family
    assert report.outside_tolerance(RECORD, RECORD, tolerances) == []
    for name, family in tolerances["families"].items():
        measured = [m["difference"] for m in family["measured"].values()] + list(family.get("reported", {}).values())
        assert {"threads=1", "threads=4"} <= set(family["measured"]), name
        assert family["tolerance"] == report.tolerance(family, tolerances["margin"])
        assert family["tolerance"] >= max([family["floor"]] + [tolerances["margin"] * d for d in measured]) * (1 - 1e-9)


def test_a_run_beyond_tolerance_is_named():
    tolerances = report.load_json(report.TOLERANCES)
    far = copy.deepcopy(RECORD)
    far["per_position_accuracy"][5] += 10 * tolerances["families"]["per_position_accuracy"]["tolerance"]
    [problem] = report.outside_tolerance(far, RECORD, tolerances)
    assert "per_position_accuracy[5]" in problem
    missing = copy.deepcopy(RECORD)
    del missing["final_test_accuracy"]
    assert any("final_test_accuracy" in p for p in report.outside_tolerance(missing, RECORD, tolerances))


@pytest.mark.parametrize("bad", ["{no_such_metric:.3f}", "{accuracy:.3f} {ceiling_pos99:.3f}"])
def test_an_unknown_field_is_refused_by_name(bad):
    with pytest.raises(KeyError, match="no_such_metric|ceiling_pos99"):
        report.render(bad, QUOTED)
