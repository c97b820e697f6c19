"""Rubric rules that read a notebook's text: prompts that would stop Run All, the Colab link, the plot's
description, the word count; the accuracy rules' verdicts; and what a failing rule tells the student."""
import json

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import hw3_helpers as hw3


def test_calls_that_wait_for_a_person_are_found_by_name_and_line():
    assert hw3.prompts_in("x = 1\nseed = int(input('seed? '))") == ["input() on line 2"]
    assert hw3.prompts_in("from google.colab import files\nfiles.upload()") == ["upload() on line 2"]
    assert hw3.prompts_in("import getpass\ngetpass.getpass()") == ["getpass() on line 2"]
    assert hw3.prompts_in("%matplotlib inline\nprint('input')\ninputs = [1]") == []


def test_the_colab_link_is_read_from_its_cell():
    cell = new_markdown_cell("**Colab version of this notebook:** *(not shared yet)*")
    cell.metadata["tags"] = ["added", hw3.COLAB_TAG]
    nb = new_notebook(cells=[cell])
    assert hw3.colab_link(nb) is None
    cell.source = "**Colab version of this notebook:** https://colab.research.google.com/drive/1AbC-xyz"
    assert hw3.colab_link(nb) == "https://colab.research.google.com/drive/1AbC-xyz"
    cell.source = "**Colab version:** [open](https://colab.research.google.com/drive/1AbC-xyz)."
    assert hw3.colab_link(nb) == "https://colab.research.google.com/drive/1AbC-xyz"


def test_the_plot_description_is_the_markdown_cell_right_below_the_plot_and_not_a_heading():
    plot = new_code_cell("per_token_acc = calc_per_token_acc(model, TEST_LOADER)\nplt.show()")
    nb = new_notebook(cells=[plot, new_markdown_cell("Accuracy climbs over the first tokens because ...")])
    assert hw3.plot_description(nb).startswith("Accuracy climbs")
    nb.cells[1] = new_markdown_cell("#### The best possible accuracy on this test set (added)\n\nA section.")
    assert hw3.plot_description(nb) is None
    nb.cells[1] = new_code_cell("print(1)")
    assert hw3.plot_description(nb) is None
    assert hw3.plot_description(nbformat.v4.new_notebook(cells=[plot])) is None


def test_words_are_counted_as_wc_counts_them():
    assert hw3.words("Greedy (see ![a caption](figures/a.png)) picks the argmax.\n\nNext.") == 8


HANDOUTS_BAR, OUR_TARGET = "test accuracy >= 0.65 (assignment)", \
    "test accuracy >= 0.80 (ours: a warning, the handout's 0.65 decides)"


def accuracy_verdicts(accuracy, tmp_path) -> dict[str, str]:
    nb = hw3.as_notebook(new_notebook(cells=[new_code_cell("x = 1", execution_count=1)]))
    results = hw3.check_submission(nb, json.dumps({"final_test_accuracy": accuracy}).encode(), tmp_path)
    return {name: status for name, status, _ in results if name in (HANDOUTS_BAR, OUR_TARGET)}


def test_below_our_080_a_run_is_warned_and_below_the_handouts_065_it_fails(tmp_path):
    assert accuracy_verdicts(0.85, tmp_path) == {HANDOUTS_BAR: hw3.PASS, OUR_TARGET: hw3.PASS}
    assert accuracy_verdicts(0.75, tmp_path) == {HANDOUTS_BAR: hw3.PASS, OUR_TARGET: hw3.WARN}
    assert accuracy_verdicts(0.60, tmp_path) == {HANDOUTS_BAR: hw3.FAIL, OUR_TARGET: hw3.WARN}


def a_notebook_that_breaks_every_rule(tmp_path):
    """A small notebook and its run's metrics.json that fail every rule that can fail (the link's is a to-do, our
    0.80 a warning): code run out of order, with an error and a prompt; no handed-out cell; another run's metrics; a
    plot without a description; a short report without its elements, whose claim and number the run does not bear
    out; a report.md of another report; a picture from outside the folder and one that is missing."""
    metrics = {"final_test_accuracy": 0.6, "kernel_ran": {"1": "x = 1"}, "figures": {},
               "per_position_accuracy": [0.1, 0.2, 0.3] + [0.9] * 61,
               "best_possible_per_position": [0.3, 0.5, 0.6] + [0.8] * 61, "levels_off_at": 3}
    failing = new_code_cell("x = int(input())", execution_count=2)
    failing.outputs = [new_output("error", ename="ValueError", evalue="no", traceback=[])]
    saved = new_code_cell("print('saved')", execution_count=3)
    saved.outputs = [new_output("stream", name="stdout", text="saved build/metrics.json (run id 000000000000)\n")]
    nb = new_notebook(cells=[
        new_markdown_cell("# A title"), failing,
        new_code_cell("per_token_acc = calc_per_token_acc(model, TEST_LOADER)", execution_count=4),
        new_markdown_cell(hw3.REPORT_HEADING + " (min 300 words - max 600 words) (2 points)"),
        new_markdown_cell("The model stays 0.123 below the best possible there. ![a](../a.png) ![b](figures/b.png)"),
        new_markdown_cell("## Saving the run, and the Moodle zip (added)"), saved])
    return hw3.as_notebook(nb), json.dumps(metrics).encode()


def test_every_rule_that_fails_says_how_to_fix_it(tmp_path):
    nb, metrics = a_notebook_that_breaks_every_rule(tmp_path)
    results = hw3.check_submission(nb, metrics, tmp_path, report_md="another report\n")
    statuses = {name: status for name, status, _ in results}
    assert statuses.pop(OUR_TARGET) == hw3.WARN
    assert statuses.pop("a link to the Colab version near the top (deliverable)") == hw3.TODO
    assert set(statuses.values()) == {hw3.FAIL}, [name for name, status in statuses.items() if status != hw3.FAIL]
    for name, status, detail in results:
        if status == hw3.FAIL:
            assert "fix: " in detail and detail.split("fix: ")[-1].strip(), (name, detail)


def test_a_rule_that_passes_says_no_fix():
    nb, record = hw3.as_notebook(new_notebook(cells=[new_code_cell("x = 1", execution_count=1)])), {"1": "x = 1"}
    [(name, status, detail)] = [r for r in hw3.check_submission(nb, json.dumps({"kernel_ran": record}).encode(), ".")
                                if r[0].startswith("the code is what the kernel ran")]
    assert status == hw3.PASS and "fix" not in detail
