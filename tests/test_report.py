"""The report is written in the notebook's code cells and formats the graded path's own variables. Rendered here by
the notebook's own cells (those between the plot's description and the report heading, then the report cells) from
a run's numbers in metrics.json's shape: the record run's (report/record.json, which no run rewrites), or numbers
built for the test. It covers the handout's five elements in order, stands on its own within 350-550 words, names
nothing of the appendix or of this repository's tooling, and each sentence whose truth depends on the run holds for
the record and is caught, by the rubric too, when a run breaks it."""
import ast
import copy
import json
import re
import types

import matplotlib
import nbformat
import numpy as np
import pytest
import torch
from nbformat.v4 import new_markdown_cell, new_output
from support import handed_out_lines

import hw3_helpers as hw3
from hw3tools import notebook as runner
from hw3tools import record, study
from hw3tools.__main__ import COMMANDS

matplotlib.use("Agg")
RECORD = record.load_json(record.RECORD)
NB = nbformat.read(runner.NOTEBOOK, as_version=4)


def tagged_report_cells(nb) -> list:
    """The four report cells we wrote (tagged), not hw3.report_cells' whole report section."""
    return [c for c in nb.cells if hw3.REPORT_TAG in c.metadata.get("tags", [])]


REPORT_CELLS = tagged_report_cells(NB)
HEADING = next(i for i, c in enumerate(NB.cells) if c.source.startswith(hw3.REPORT_HEADING))
HEADS = ["**Cross-entropy in training.**", "**Generating tokens.**", "**Nucleus sampling against greedy.**",
         "**Temperature.**", "**Per-token accuracy.**"]
# The graded path's variables the report quotes: the training's, the sampling comparison's, the plot's, and the
# plateau's, which the cells between the plot's description and the report heading compute
RUN_VARIABLES = {"final_test_accuracy", "per_token_acc", "rule_consistent", "distinct", "levels_off", "plateau",
                 "best_plateau", "best_per_token", "prompt_gens"}
# Terms the handout does not use -> words that show the sentence where the term first appears defines it: in the
# report, which stands on its own, and in the homework's prose read from the top (the added markdown, then the report)
DEFINED_WHERE_FIRST_USED = {
    "report": {"rule-consistent": "could have produced it", "best possible predictor": "knows how the data are made"},
    "prose": {"Bayes-optimal": "considers every hidden pair"},
}
# The appendix's vocabulary, which the homework's prose does without
APPENDIX_VOCABULARY = re.compile(r"\b(truncation|bits per token|multi-seed|posterior|KL|residual stream|probes?|"
                                 r"ablate|ablating|run stamp)\b", re.I)
# A command of this repository: `make run`, `python -m hw3tools zip`, hw3tools (not "make of it")
OUR_COMMANDS = re.compile(rf"\bmake ({'|'.join(COMMANDS)})\b|python -m hw3tools|\bhw3tools\b")


# --- A run's numbers, in metrics.json's shape --------------------------------------------------------------------

def with_plateau(metrics: dict, hw) -> dict:
    """A run's numbers with the plateau's as the notebook's metrics cell records them, where the curve levels off
    found by the notebook's own levels_off_at."""
    accuracy, best = np.array(metrics["per_position_accuracy"]), np.array(metrics["best_possible_per_position"])
    at = hw.levels_off_at(accuracy)
    plateau, best_plateau = float(accuracy[at:].mean()), float(best[at:].mean())
    return {**metrics, "levels_off_at": at, "plateau_accuracy": plateau, "best_possible_plateau": best_plateau,
            "gap_to_best_possible_plateau": best_plateau - plateau, "best_possible_accuracy": float(best.mean())}


def graded_numbers(metrics: dict) -> dict:
    """The graded path's variables, above the plateau's, as a run's metrics record them."""
    rows = metrics["sampling_study"]
    setting = {row["setting"]: "greedy" if row["temperature"] is None else (row["temperature"], row["top_p"])
               for row in rows}
    return {"final_test_accuracy": metrics["final_test_accuracy"],
            "prompt_gens": [None] * metrics["sampling_prompts"],  # the report states only how many
            "per_token_acc": np.array(metrics["per_position_accuracy"]),
            "rule_consistent": {setting[row["setting"]]: row["rule_consistent"] for row in rows},
            "distinct": {setting[row["setting"]]: row["distinct_continuations"] for row in rows}}


# --- The report as the kernel renders it -------------------------------------------------------------------------

def pre_report_cells(nb=NB) -> list:
    """The added code cells between the plot's description and the report heading: the best possible accuracy, the
    plateau's numbers, the report's figure, and report()."""
    plot = next(i for i, c in enumerate(nb.cells) if "per_token_acc = calc_per_token_acc(" in c.source)
    heading = next(i for i, c in enumerate(nb.cells) if c.source.startswith(hw3.REPORT_HEADING))
    return [c for c in nb.cells[plot + 2:heading] if c.cell_type == "code"]


def render(metrics: dict, folder, hw, notebook=runner.NOTEBOOK) -> types.SimpleNamespace:
    """The report as the kernel shows it and report.md holds it, on a run's `metrics`: the cells between the plot's
    description and the report heading run as they are, on the graded path's variables and the constants of
    `notebook`, with `best_possible_accuracy` giving the run's best possible curve (the exact computation takes the
    whole test set), then the report cells, each one's displays captured as its outputs. Returns the report's text
    and the kernel's variables."""
    nb = nbformat.read(notebook, as_version=4)
    best = np.array(metrics["best_possible_per_position"])

    def best_possible_accuracy(tokens):
        assert tokens.shape == (3, hw.SEQ_LEN + 1), "the test set's sequences, each with its last target"
        return best.copy()

    test_set = torch.utils.data.TensorDataset(*torch.zeros((2, 3, hw.SEQ_LEN), dtype=torch.long))
    settings = study.notebook_settings([c.source for c in nb.cells if c.cell_type == "code"])
    optimizer = getattr(torch.optim, settings.optimizer)(torch.nn.Linear(1, 1).parameters(),
                                                        **settings.optimizer_options)  # as the training cell makes it
    namespace = {**vars(hw), **graded_numbers(metrics), "FIGURES": folder / "figures", "TEST_DATASET": test_set,
                 "optimizer": optimizer}
    (folder / "figures").mkdir(exist_ok=True)
    for cell in pre_report_cells(nb):
        exec(cell.source, namespace)
        namespace["best_possible_accuracy"] = best_possible_accuracy
    for cell in tagged_report_cells(nb):  # a figure another part of the run saves stands in as a placeholder
        for image in hw3.linked_images(cell.source):
            if not (folder / image).exists():
                (folder / image).write_bytes(b"a figure")
    cells = [new_markdown_cell(next(c.source for c in nb.cells if c.source.startswith(hw3.REPORT_HEADING)))]
    for cell in tagged_report_cells(nb):
        shown = []
        namespace["display"] = lambda item, raw=False, shown=shown: shown.append(
            item if raw else {"text/markdown": item.data})
        exec(cell.source, namespace)
        cells.append(copy.deepcopy(cell))
        cells[-1].outputs = [new_output("display_data", data=data) for data in shown]
    return types.SimpleNamespace(text=hw3.report_text(nbformat.v4.new_notebook(cells=cells)), kernel=namespace)


@pytest.fixture(scope="module")
def metrics(hw):
    return copy.deepcopy(RECORD)


@pytest.fixture(scope="module")
def rendered(metrics, hw, tmp_path_factory):
    return render(metrics, tmp_path_factory.mktemp("render"), hw)


@pytest.fixture(scope="module")
def text(rendered):
    return rendered.text


def paragraphs(report: str) -> list[str]:
    return [part for part in report.split("\n\n") if part.strip() and not part.startswith("![")]


def flat(report: str) -> str:
    return " ".join(report.split())


# --- What the report is ------------------------------------------------------------------------------------------

def test_the_five_elements_come_in_the_handouts_order_each_under_its_own_lead_in(text):
    assert [text.index(head) for head in HEADS] == sorted(text.index(head) for head in HEADS)
    assert text.startswith(HEADS[0]) and "`F.cross_entropy`" in paragraphs(text)[0]
    assert all(text.count(head) == 1 for head in HEADS)


def test_the_report_has_350_to_550_words_as_wc_counts_them(text):
    assert 350 <= len(text.split()) <= 550


def test_the_report_does_not_mention_the_appendix(text):
    assert "appendix" not in text.lower() and "beyond the assignment" not in text.lower()
    assert all(not image.startswith("appendix/") for image in hw3.linked_images(text))
    assert not any("appendix" in cell.source.lower() for cell in REPORT_CELLS)


def test_a_term_the_handout_does_not_use_is_defined_where_it_first_appears(text):
    handout = " ".join(handed_out_lines(NB)).lower()
    before, after = ([c.source for c in cells if c.cell_type == "markdown" and hw3.is_added(c)]
                     for cells in (NB.cells[:HEADING], NB.cells[HEADING:]))
    for where, terms in DEFINED_WHERE_FIRST_USED.items():
        read = text if where == "report" else "\n\n".join([*before, text, *after])  # from the top
        sentences = re.split(r"(?<=[.;])\s+", flat(read))
        for term, definition in terms.items():
            assert term.lower() not in handout, term
            first = next(sentence for sentence in sentences if term in sentence)
            assert definition in first, (where, term, first)


def top_level_names(sources) -> set[str]:
    """The names code cells bind at their top level: assigned (tuples too), defined or imported."""
    names = set()
    for source in sources:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.parse(code).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def test_the_report_quotes_only_variables_of_the_graded_path_and_the_handouts_constants():
    handed_out = [c.source for c in NB.cells if c.cell_type == "code" and not hw3.is_added(c)]
    constants = {name for name in top_level_names(handed_out) if name.isupper()}
    assert {"SEQ_LEN", "VOCAB_SIZE", "NEXT_PROB"} <= constants
    above = top_level_names(c.source for c in NB.cells[:HEADING] if c.cell_type == "code")
    assert RUN_VARIABLES | {"report"} <= above, "each one the graded path makes before the report heading"
    given = {"optimizer"} & top_level_names(handed_out)  # the training cell's, whose learning rate the report quotes
    assert given == {"optimizer"}
    for cell in REPORT_CELLS:
        names = {node.id for node in ast.walk(ast.parse(cell.source)) if isinstance(node, ast.Name)}
        allowed = RUN_VARIABLES | constants | given | {"len"}
        assert names - {"report"} <= allowed, names - allowed


def test_the_report_cells_hide_their_code_in_every_viewer():
    assert len(REPORT_CELLS) == 4
    for cell in REPORT_CELLS:
        assert cell.metadata["jupyter"]["source_hidden"] is True and cell.metadata["cellView"] == "form"
        assert cell.source.startswith("#@title ")


def test_the_reports_per_position_figure_is_the_one_the_cell_above_the_heading_saves(rendered):
    [figure] = [image for image in hw3.linked_images(rendered.text) if "per_position" in image]
    saved = rendered.kernel["FIGURES"].parent / figure
    assert saved.read_bytes().startswith(b"\x89PNG"), "the figure cell did not save the report's figure"


# --- The homework's prose: nothing of the appendix, none of our commands, no verdict on itself ---------------------

def homework_prose(nb, report: str) -> dict[str, str]:
    """What a grader reads as ours, by where it stands: every added markdown cell, the plot's description, the
    report. Printed strings of the added code cells are left out."""
    prose = {f"cell {number}": cell.source for number, cell in enumerate(nb.cells, start=1)
             if cell.cell_type == "markdown" and hw3.is_added(cell)}
    return {**prose, "the plot's description": hw3.plot_description(hw3.as_notebook(nb)), "the report": report}


def test_the_homeworks_prose_and_report_use_none_of_the_appendixs_vocabulary(text):
    for where, words in homework_prose(NB, text).items():
        found = APPENDIX_VOCABULARY.search(words)
        assert found is None, (where, found and found.group(0))


def test_the_homeworks_prose_names_no_command_of_this_repository_but_in_the_moodle_zips_description(text):
    prose = homework_prose(NB, text)
    zip_cell = [where for where, words in prose.items() if words.startswith("In Colab, the cell below reads this")]
    assert len(zip_cell) == 1 and OUR_COMMANDS.search(prose[zip_cell[0]]), "the zip cell says how to zip elsewhere"
    for where, words in prose.items():
        if where not in zip_cell:
            found = OUR_COMMANDS.search(words)
            assert found is None, (where, found and found.group(0))
    assert OUR_COMMANDS.search("the rules of `make check`") and not OUR_COMMANDS.search("what greedy make of it")


def test_no_check_mark_or_warning_sign_anywhere_in_the_homework_notebook():
    everything = json.dumps(nbformat.read(runner.NOTEBOOK, as_version=4), ensure_ascii=False)
    assert "✅" not in everything and "⚠" not in everything
    printed_by_its_cells = (runner.ROOT / "hw3_helpers.py").read_text(encoding="utf-8")
    assert "✅" not in printed_by_its_cells and "⚠" not in printed_by_its_cells


def test_no_cell_under_the_report_prints_a_verdict_on_it():
    """The report does not grade itself: no cell checks its claims or counts its sentences. The Moodle zip cell is
    the rubric's (in Colab it prints every rule of the zip's check), not a verdict the report carries."""
    graders = {"report_verdicts", "REPORT_CLAIMS", "report_numbers", "check_report", "check_submission",
               "build_submission", "print_verdicts", "unsupported_numbers"}
    under = [c for c in NB.cells[HEADING + 1:] if c.cell_type == "code" and not hw3.is_export_cell(c)]
    assert len(under) == len(REPORT_CELLS) + 1, "the report cells, then the cell that saves the run"
    for cell in under:
        tree = ast.parse(cell.source)
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert not used & graders, (cell.source.splitlines()[0], used & graders)
        if cell not in REPORT_CELLS:  # what it prints
            said = " ".join(node.value for node in ast.walk(tree)
                            if isinstance(node, ast.Constant) and isinstance(node.value, str))
            assert not re.search(r"\b(claims?|holds?|sentences?|verdicts?)\b", said, re.I), said


# --- Its claims hold for the record, and follow the run ------------------------------------------------------------

def test_every_claim_stands_in_the_report_and_holds_for_the_record(text, metrics):
    assert hw3.report_verdicts(text, **hw3.report_numbers(metrics)) == {
        claim: "holds" for claim in hw3.REPORT_CLAIMS}


def test_every_number_the_report_states_is_one_of_the_records_or_the_handouts(text, metrics):
    assert hw3.unsupported_numbers(text, metrics, hw3.handout_numbers(hw3.as_notebook(NB))) == []


def test_the_report_levels_off_where_the_runs_numbers_say(rendered, metrics):
    assert rendered.kernel["levels_off"] == metrics["levels_off_at"]  # the notebook's own cell, on the record
    assert f"levels off at about position {metrics['levels_off_at']}" in flat(rendered.text)


def a_run_levelling_off_at_20(hw, metrics) -> dict:
    """A curve that climbs to 0.67 over 20 positions and then stays at 0.80, with a best possible 0.30 above it early
    on and at 0.95 from position 20: a gap of 0.15, several times the record's."""
    accuracy = [round(0.1 + 0.03 * i, 3) for i in range(20)] + [0.8] * (hw.SEQ_LEN - 20)
    best = [min(0.95, a + 0.3) for a in accuracy[:20]] + [0.95] * (hw.SEQ_LEN - 20)
    return with_plateau({**copy.deepcopy(metrics), "per_position_accuracy": accuracy,
                         "final_test_accuracy": float(np.mean(accuracy)), "best_possible_per_position": best}, hw)


def test_the_reports_plateau_best_possible_and_gap_follow_the_run(hw, metrics, tmp_path):
    other = a_run_levelling_off_at_20(hw, metrics)
    assert (other["levels_off_at"], round(other["gap_to_best_possible_plateau"], 3)) == (20, 0.15)
    report = render(other, tmp_path, hw).text
    assert "levels off at about position 20" in flat(report)
    stated = hw3.stated_numbers(report)
    for key, digits in (("plateau_accuracy", 4), ("best_possible_plateau", 4), ("gap_to_best_possible_plateau", 4),
                        ("best_possible_accuracy", 3), ("final_test_accuracy", 3)):
        assert f"{other[key]:.{digits}f}" in stated, key
        assert f"{metrics[key]:.{digits}f}" not in stated, f"the record's {key} is still in the report"
    assert hw3.unsupported_numbers(report, other, hw3.handout_numbers(hw3.as_notebook(NB))) == []
    assert set(hw3.report_verdicts(report, **hw3.report_numbers(other)).values()) == {"holds"}


def setting(metrics, name, **values):
    next(row for row in metrics["sampling_study"] if row["setting"] == name).update(values)


def curves(hw, metrics, model=lambda acc, at: None, best=lambda best, acc, at: None):
    """Change the run's accuracy curve and its best possible one (as arrays, in place), then its plateau."""
    acc, top = np.array(metrics["per_position_accuracy"]), np.array(metrics["best_possible_per_position"])
    at = metrics["levels_off_at"]
    model(acc, at)
    best(top, acc, at)
    metrics.update(with_plateau({**metrics, "per_position_accuracy": acc.tolist(),
                                 "best_possible_per_position": top.tolist()}, hw))


BREAKERS = {  # claim -> a run that would not bear it out, as its metrics.json
    "the 8 continuations of a prompt are always the same":
        lambda m, hw: setting(m, "greedy", distinct_continuations=1.5),
    "at a price": lambda m, hw: setting(m, "t=1.0, top_p=0.9", rule_consistent=0.999),
    "when sampling from the whole distribution (`top_p=1`)":
        lambda m, hw: setting(m, "t=1.0, top_p=1.0", rule_consistent=0.99),
    "Greedy keeps to the rule more often": lambda m, hw: setting(m, "t=1.5, top_p=0.9", rule_consistent=0.9999),
    "sampling behaves almost like greedy decoding":
        lambda m, hw: setting(m, "t=0.5, top_p=0.9", distinct_continuations=4.0),
    "nearly every sample differs": lambda m, hw: setting(m, "t=2.0, top_p=1.0", distinct_continuations=5.0),
    "rule-consistency falls at every step up in temperature":
        lambda m, hw: setting(m, "t=2.0, top_p=1.0", rule_consistent=0.999),
    "A small nucleus protects against high temperature":
        lambda m, hw: setting(m, "t=2.0, top_p=0.5", rule_consistent=0.1),
    "levels off at about position":  # the first positions already as good as the plateau
        lambda m, hw: curves(hw, m, model=lambda acc, at: acc.__setitem__(slice(0, 3), acc[at:].mean())),
    "below the best possible there":  # the model above the best possible from where it levels off
        lambda m, hw: curves(hw, m, best=lambda best, acc, at: best.__setitem__(slice(at, None), acc[at:] - 0.01)),
    "the rest of the difference lies in the first positions":  # no gap at all before the plateau
        lambda m, hw: curves(hw, m, best=lambda best, acc, at: best.__setitem__(slice(0, at), acc[:at])),
}


def test_each_claim_is_caught_when_a_run_breaks_it(text, metrics, hw):
    assert set(BREAKERS) == set(hw3.REPORT_CLAIMS)
    for claim, breaker in BREAKERS.items():
        broken = copy.deepcopy(metrics)
        breaker(broken, hw)
        assert hw3.report_verdicts(text, **hw3.report_numbers(broken))[claim] == "does not hold", claim


def claims_rule(report: str, metrics: dict, folder) -> tuple[str, str]:
    """The rubric's verdict on the report's claims, for a notebook whose report reads `report` and a run's
    metrics.json."""
    nb = nbformat.v4.new_notebook(cells=[new_markdown_cell(NB.cells[HEADING].source), new_markdown_cell(report)])
    results = hw3.check_submission(hw3.as_notebook(nb), json.dumps(metrics).encode(), folder)
    return next((status, detail) for name, status, detail in results
                if name == "every claim of the report holds for this run")


def test_the_rubric_fails_a_report_whose_gap_sentence_no_longer_holds(text, metrics, hw, tmp_path):
    assert claims_rule(text, metrics, tmp_path) == (hw3.PASS, f"{len(hw3.REPORT_CLAIMS)} claims")
    above = copy.deepcopy(metrics)
    BREAKERS["below the best possible there"](above, hw)
    assert above["plateau_accuracy"] > above["best_possible_plateau"]
    report = render(above, tmp_path, hw).text  # what that run's notebook shows
    status, detail = claims_rule(report, above, tmp_path)
    assert status == hw3.FAIL and detail.startswith("'below the best possible there': does not hold")
    assert detail.count(": does not hold") == 1 and "; fix: reword" in detail


def test_a_claim_whose_numbers_the_run_lacks_is_named_as_not_checked_and_fails_the_rubric(text, metrics, tmp_path):
    lacking = copy.deepcopy(metrics)
    del lacking["best_possible_per_position"]
    lacking["sampling_study"] = [row for row in lacking["sampling_study"] if row["setting"] == "greedy"]
    verdicts = hw3.report_verdicts(text, **hw3.report_numbers(lacking))
    assert verdicts["below the best possible there"] == "not checked: the run's numbers have no best_per_token"
    assert verdicts["at a price"] == "not checked: the run's numbers have no entry (1.0, 0.9)"
    assert verdicts["the 8 continuations of a prompt are always the same"] == "holds"
    status, detail = claims_rule(text, lacking, tmp_path)
    assert status == hw3.FAIL and "not checked" in detail


def test_a_claim_a_student_rewrote_is_reported_as_gone_not_as_false(metrics):
    verdicts = hw3.report_verdicts("A report in my own words.", **hw3.report_numbers(metrics))
    assert set(verdicts.values()) == {"no longer in the report"}


def test_a_curve_level_from_the_first_position_breaks_the_claims_on_it_without_an_error(metrics):
    level = {**copy.deepcopy(metrics), "per_position_accuracy": [0.5] * 64, "best_possible_per_position": [0.6] * 64,
             "levels_off_at": 0}
    verdicts = hw3.report_verdicts(" ".join(hw3.REPORT_CLAIMS), **hw3.report_numbers(level))
    assert verdicts["levels off at about position"] == "does not hold"
    assert verdicts["the rest of the difference lies in the first positions"] == "does not hold"
