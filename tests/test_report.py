"""The report is written in the notebook's code cells and formats the kernel's own numbers. Rendered here from the
numbers the record run quoted (report/record.json), it must be the committed report.md word for word; each
sentence whose truth depends on the run holds for the record and is caught when a run breaks it."""
import copy
import json
import textwrap

import nbformat
import pytest

from hw3tools import notebook as hw3
from hw3tools import record

RECORD = record.load_json(record.RECORD)


@pytest.fixture(scope="module")
def kernel():
    """The notebook's definitions (Quoted, report, report_claims, ...) with the stand-ins a kernel would give."""
    module = hw3.load_definitions()
    module.__dict__.update(report_paragraphs={}, display=lambda shown: None, Markdown=str, textwrap=textwrap)
    return module


def render(kernel, numbers: dict) -> str:
    """The report cells run on `numbers`, as the kernel runs them on its variables."""
    kernel.q = kernel.Quoted(copy.deepcopy(numbers))
    kernel.report_paragraphs = {}
    nb = nbformat.read(hw3.NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if hw3.REPORT_TAG in cell.metadata.get("tags", []):
            exec(cell.source, kernel.__dict__)
    return "\n\n".join(kernel.report_paragraphs.values()) + "\n"


def test_the_committed_report_is_the_record_runs_report_word_for_word(kernel):
    committed = (hw3.ROOT / "report.md").read_text(encoding="utf-8")
    assert render(kernel, RECORD["report_numbers"]) == committed
    assert f"test accuracy is {RECORD['final_test_accuracy']:.3f}" in committed
    assert f"reaches {RECORD['bayes_optimal_accuracy']:.3f}" in committed


def test_the_report_has_300_to_540_words_as_wc_counts_them(kernel):
    words = len(render(kernel, RECORD["report_numbers"]).split())
    assert 300 <= words <= 540
    assert RECORD["report_words"] == words


def test_the_report_has_the_five_required_elements_first(kernel):
    text = render(kernel, RECORD["report_numbers"])
    heads = ["**Training and generation.**", "**Nucleus sampling against greedy.**", "**Temperature.**",
             "**Per-position accuracy.**"]
    assert [text.index(head) for head in heads] == sorted(text.index(head) for head in heads)
    assert text.startswith(heads[0]) and "`cross_entropy`" in text.split("\n\n")[0]
    assert "warm-up" in text and "cosine decay" in text and "clipping" in text


def test_a_number_the_run_did_not_measure_shows_as_a_marked_gap(kernel):
    gap = format(kernel.NotMeasured("ceiling"), ".3f")
    assert gap == "**[ceiling: not measured in this run]**"
    text = render(kernel, {"accuracy": 0.5, "model_pos": [0.1] * 64})  # what a run without hw3_helpers has
    assert "test accuracy is 0.500" in text and "[ceiling: not measured in this run]" in text


def test_every_claim_stands_in_the_report_and_holds_for_the_record(kernel):
    text = " ".join(render(kernel, RECORD["report_numbers"]).split())
    claims = kernel.report_claims()
    assert len(claims) >= 10
    for sentence, holds in claims.items():
        assert sentence in text, sentence
        assert holds(kernel.Quoted(copy.deepcopy(RECORD["report_numbers"]))), sentence
    assert set(RECORD["report_claims"].values()) == {"holds"}


def setting(numbers, name):
    return numbers["sampled"][name]


def study_gain(numbers, name, value):
    numbers["study"][name]["difference_from_prescribed"]["mean"] = value


BREAKERS = {  # claim -> a run that would not bear it out
    "the ceiling for any model": lambda n: n.update(accuracy=n["ceiling"] + 0.01),
    "Greedy stays on the rule more often": lambda n: n["greedy"].update(rule_consistent=0.5),
    "Without truncation (`top_p`=1) rule-consistency falls":
        lambda n: n["untruncated"].update(rule_consistent=0.999),
    "rule-consistency falls at every step up in temperature":
        lambda n: setting(n, "t=2.0, top_p=1.0").update(rule_consistent=0.999),
    "A small nucleus protects against high temperature":
        lambda n: setting(n, "t=2.0, top_p=0.5").update(rule_consistent=0.1),
    "then follows the ceiling closely": lambda n: n.update(late_gap=0.2),
    "Its gap is largest in the first ten positions": lambda n: n.update(largest_gap_at=40),
    "the model is slower than the ideal predictor to identify the rule": lambda n: n.update(early_share=0.1),
    "Data gains most": lambda n: study_gain(n, "width 128", 0.05),
    "alone will not reach half a point or 0.02 bits at this width":
        lambda n: n.update(kl_bits_floor=0.01),
    "within its error but above it": lambda n: n["gap_to_ceiling_test"]["measured"].update(
        mean=n["gap_to_ceiling_test"]["predicted"] - 0.0001),
}


def test_each_claim_is_caught_when_a_run_breaks_it(kernel):
    assert set(BREAKERS) == set(kernel.report_claims())
    for sentence, holds in kernel.report_claims().items():
        numbers = copy.deepcopy(RECORD["report_numbers"])
        BREAKERS[sentence](numbers)
        assert not holds(kernel.Quoted(numbers)), sentence


def test_one_standard_judges_every_comparison_of_the_study(kernel):
    assert kernel.differs({"mean": 0.005, "std": 0.001, "per_seed": [0.004, 0.005, 0.006]}) is True
    assert kernel.differs({"mean": -0.001, "std": 0.002, "per_seed": [0.001, -0.003, 0.0]}) is False
    assert kernel.differs({"mean": 0.02, "std": 0.0, "per_seed": [0.02]}) is None  # one seed: not judged
    numbers = RECORD["report_numbers"]
    summary = json.loads((hw3.ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    for config in summary["configs"]:
        verdict = kernel.differs(config["difference_from_prescribed"])
        if config["name"] != "dense (prescribed)" and config["group"] != "prediction":
            listed = [key for key in ("gains", "no_difference", "unjudged") if config["name"] in numbers[key]]
            assert listed == [{True: "gains", False: "no_difference", None: "unjudged"}[verdict]], config["name"]


def test_every_claim_is_unchecked_not_stuck_when_its_numbers_were_not_measured(kernel):
    unmeasured = kernel.Quoted({"accuracy": 0.5, "model_pos": [0.1] * 64})
    for holds in kernel.report_claims().values():
        with pytest.raises((TypeError, KeyError)):
            holds(unmeasured)
