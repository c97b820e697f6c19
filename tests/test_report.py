"""The report is written in the notebook's code cells and formats the graded path's own variables. Rendered here
from the numbers of the record run (report/record.json, which no run rewrites), it covers the handout's five
elements in order, stands on its own within 350-500 words, and each sentence whose truth depends on the run holds
for the record and is caught when a run breaks it."""
import ast
import copy
import re
import types

import matplotlib
import nbformat
import numpy as np
import pytest

import hw3_helpers as hw3
from hw3tools import notebook as runner
from hw3tools import record

matplotlib.use("Agg")
RECORD = record.load_json(record.RECORD)
NB = nbformat.read(runner.NOTEBOOK, as_version=4)


def tagged_report_cells(nb) -> list:
    """The five report cells we wrote (tagged), not hw3.report_cells' whole report section."""
    return [c for c in nb.cells if hw3.REPORT_TAG in c.metadata.get("tags", [])]


REPORT_CELLS = tagged_report_cells(NB)
HEADS = ["**Cross-entropy in training.**", "**Generating tokens.**", "**Nucleus sampling against greedy.**",
         "**Temperature.**", "**Per-token accuracy.**"]
POINTER = "**Beyond the assignment.**"  # the report's only mention of the appendix
APPENDIX_WORDS = re.compile(r"\b(bayes\w*|kl|bits?|posterior)\b", re.I)
# Terms the handout does not use -> words that show the sentence where the term first appears defines it
DEFINED_WHERE_FIRST_USED = {"rule-consistent": "could have produced it", "truncation": "the whole distribution",
                            "Bayes-optimal": "the best any predictor can do"}


def graded_numbers(metrics: dict) -> dict:
    """The graded path's variables that the report quotes, as a run's metrics record them."""
    rows = metrics["sampling_study"]
    setting = {row["setting"]: "greedy" if row["setting"] == "greedy" else (row["temperature"], row["top_p"])
               for row in rows}
    return {"final_test_accuracy": metrics["final_test_accuracy"],
            "per_token_acc": np.array(metrics["per_position_accuracy"]),
            "rule_consistent": {setting[row["setting"]]: row["rule_consistent"] for row in rows},
            "distinct": {setting[row["setting"]]: row["distinct_continuations"] for row in rows}}


def pre_report_cells(nb=NB) -> list:
    """The added code cells between the plot's description and the report heading: the plot saved for the report,
    its flat part's mean, and report()."""
    plot = next(i for i, c in enumerate(nb.cells) if "per_token_acc = calc_per_token_acc(" in c.source)
    heading = next(i for i, c in enumerate(nb.cells) if c.source.startswith(hw3.REPORT_HEADING))
    return [c for c in nb.cells[plot + 2:heading] if c.cell_type == "code"]


def render(numbers: dict, tmp_path, notebook=runner.NOTEBOOK) -> str:
    """The report as the kernel writes it: the cell before the heading, then the report cells, on `numbers` and
    the constants of `notebook` (the figures they show stand in as placeholder files)."""
    nb = nbformat.read(notebook, as_version=4)
    namespace = {**vars(runner.load_definitions(notebook)), **copy.deepcopy(numbers), "FIGURES": tmp_path / "figures"}
    (tmp_path / "figures").mkdir(exist_ok=True)
    for cell in tagged_report_cells(nb):
        for image in hw3.linked_images(cell.source):
            (tmp_path / image).write_bytes(b"a figure")
    for cell in [*pre_report_cells(nb), *tagged_report_cells(nb)]:
        namespace["display"] = lambda *shown, **options: None  # set before each cell: report()'s imports display
        exec(cell.source, namespace)
    return "\n\n".join(namespace["report_parts"].values()) + "\n"


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return render(graded_numbers(RECORD), tmp_path_factory.mktemp("render"))


def paragraphs(report: str) -> list[str]:
    return [part for part in report.split("\n\n") if part.strip() and not part.startswith("![")]


def test_the_five_elements_come_in_the_handouts_order_each_under_its_own_lead_in(text):
    assert [text.index(head) for head in HEADS] == sorted(text.index(head) for head in HEADS)
    assert text.startswith(HEADS[0]) and "`F.cross_entropy`" in paragraphs(text)[0]
    assert text.index(POINTER) > text.index(HEADS[-1])


def test_the_report_has_350_to_500_words_as_wc_counts_them(text):
    assert 350 <= len(text.split()) <= 500


def test_the_appendix_is_named_only_in_the_pointer_which_carries_no_numbers(text):
    pointer = [part for part in paragraphs(text) if part.startswith(POINTER)]
    assert len(pointer) == 1 and not re.search(r"\d", pointer[0])
    assert len(re.findall(r"[.!?](\s|$)", pointer[0].removeprefix(POINTER))) <= 2  # at most two sentences
    for part in paragraphs(text):
        if not part.startswith(POINTER):
            assert not APPENDIX_WORDS.search(part), (APPENDIX_WORDS.search(part).group(0), part[:60])


def test_a_term_the_handout_does_not_use_is_defined_where_it_first_appears(text):
    handout = " ".join(runner.handed_out_lines(NB)).lower()
    sentences = re.split(r"(?<=[.;])\s+", " ".join(text.split()))
    for term, definition in DEFINED_WHERE_FIRST_USED.items():
        assert term not in handout, term
        first = next(sentence for sentence in sentences if term in sentence)
        assert definition in first, (term, first)


def test_the_report_quotes_only_variables_of_the_graded_path_and_the_handouts_constants():
    graded = {"final_test_accuracy", "per_token_acc", "rule_consistent", "distinct", "late_accuracy",
              *hw3.TRAINING_CELLS["the constants"]}
    for cell in REPORT_CELLS:
        names = {node.id for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Name)}
        assert names - {"report"} <= graded, names - graded


def test_every_claim_stands_in_the_report_and_holds_for_the_record(text):
    assert hw3.report_verdicts(text, **claim_numbers(graded_numbers(RECORD))) == {
        claim: "holds" for claim in hw3.REPORT_CLAIMS}
    assert set(RECORD["report_claims"].values()) == {"holds"} and len(RECORD["report_claims"]) >= 10


def claim_numbers(numbers: dict, metrics: dict = RECORD) -> dict:
    """What the check cell under the report passes to check_report: the run's numbers and the constants it ran with
    (NEXT_PROB and VOCAB_SIZE, as its metrics record them)."""
    return {"rule_consistent": numbers["rule_consistent"], "distinct": numbers["distinct"],
            "per_token_acc": numbers["per_token_acc"], "next_prob": metrics["next_prob"],
            "vocab_size": metrics["vocab_size"]}


def late_positions_at(numbers, value):
    numbers["per_token_acc"][10:] = value


BREAKERS = {  # claim -> a run that would not bear it out
    "the 8 continuations of a prompt are always the same": lambda n: n["distinct"].update(greedy=1.5),
    "at a price": lambda n: n["rule_consistent"].update({(1.0, 0.9): 0.999}),
    "without truncation (`top_p=1`, the whole distribution)":
        lambda n: n["rule_consistent"].update({(1.0, 1.0): 0.99}),
    "Greedy keeps to the rule more often": lambda n: n["rule_consistent"].update({(1.5, 0.9): 0.9999}),
    "sampling behaves almost like greedy decoding": lambda n: n["distinct"].update({(0.5, 0.9): 4.0}),
    "nearly every sample differs": lambda n: n["distinct"].update({(2.0, 1.0): 5.0}),
    "rule-consistency falls at every step up in temperature":
        lambda n: n["rule_consistent"].update({(2.0, 1.0): 0.999}),
    "A small nucleus protects against high temperature": lambda n: n["rule_consistent"].update({(2.0, 0.5): 0.1}),
    "climbs steeply and stays flat from about position 10 on":
        lambda n: n["per_token_acc"].__setitem__(slice(37, None), 0.5),
    "the flat part lies close to that": lambda n: late_positions_at(n, 0.95),
}


def test_each_claim_is_caught_when_a_run_breaks_it():
    assert set(BREAKERS) == set(hw3.REPORT_CLAIMS)
    for claim, holds in hw3.REPORT_CLAIMS.items():
        numbers = copy.deepcopy(graded_numbers(RECORD))
        BREAKERS[claim](numbers)
        assert not holds(types.SimpleNamespace(**claim_numbers(numbers))), claim


def test_a_claim_a_student_rewrote_is_reported_as_gone_not_as_false():
    verdicts = hw3.report_verdicts("A report in my own words.", **claim_numbers(graded_numbers(RECORD)))
    assert set(verdicts.values()) == {"no longer in the report"}


def test_the_report_cells_hide_their_code_in_every_viewer():
    assert len(REPORT_CELLS) == 5
    for cell in REPORT_CELLS:
        assert cell.metadata["jupyter"]["source_hidden"] is True and cell.metadata["cellView"] == "form"
        assert cell.source.startswith("#@title ")


def test_a_claim_whose_numbers_the_check_cell_left_out_is_named_as_not_checked_never_as_holding(text, monkeypatch):
    numbers = claim_numbers(graded_numbers(RECORD))
    del numbers["next_prob"]
    numbers["rule_consistent"] = {"greedy": numbers["rule_consistent"]["greedy"]}  # the sampled settings left out
    verdicts = hw3.report_verdicts(text, **numbers)
    assert verdicts["the flat part lies close to that"] == "not checked: check_report was given no next_prob"
    assert verdicts["at a price"] == "not checked: the numbers given to check_report have no entry (1.0, 0.9)"
    assert verdicts["the 8 continuations of a prompt are always the same"] == "holds"
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda markdown: shown.append(markdown.data))
    hw3.check_report(paragraphs(text), **numbers)
    assert "could not be checked" in shown[0] and "next_prob" in shown[0] and "✅" not in shown[0]
