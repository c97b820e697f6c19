"""The notebook on its own kernel, as `jupyter nbconvert --execute` runs it and as a student runs it in Colab with the
notebook alone: no `make`, no hw3tools, no hw3_helpers.py beside it, another thread count. The homework and the
whole report run start to end on the handout's packages and quote the run's numbers; the two cells that need the
module (saving the run, the Moodle zip) each say so in one line. The budget is cut in this copy, by the tests
(tests/conftest.py, `small_budget`: one epoch on a tenth of the training set, a tenth of the test set, two prompts
for the sampling): what is tested here is that the notebook runs, not what it reaches, which the session's full run
covers."""
import re

import nbformat
import pytest

import hw3_helpers as hw3

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def alone(notebook_alone):
    """The copy as nbconvert saved it in place (tests/conftest.py runs it once a session)."""
    return {"nb": nbformat.read(notebook_alone / "homework3.ipynb", as_version=4), "folder": notebook_alone}


def text_of(cell):
    return "".join(o.get("text", "") for o in cell.outputs) + "".join(
        str(o.get("data", {}).get("text/markdown", "")) for o in cell.outputs)


def test_it_runs_start_to_end_without_errors_and_saves_its_run_in_place(alone):
    code = [c for c in alone["nb"].cells if c.cell_type == "code"]
    assert [c.execution_count for c in code if c.source.strip()] == list(range(1, len(code) + 1))
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "1 CPU threads" in text_of(code[0])


def test_the_two_cells_that_need_the_module_each_say_so_in_one_line_and_write_nothing(alone):
    *_, save, export = [c for c in alone["nb"].cells if c.cell_type == "code"]
    assert text_of(save).strip() == "Nothing saved: that needs hw3_helpers.py beside this notebook."
    said = text_of(export).strip().splitlines()  # the Moodle zip's cell: what to drop beside it, or by hand
    assert len(said) == 1 and "hw3_helpers.py" in said[0] and "by hand" in said[0]
    assert not (alone["folder"] / "build").exists()
    assert sorted(p.name for p in (alone["folder"] / "figures").iterdir()) == [
        "per_position_accuracy.png", "sampling.png"]


def test_the_whole_report_runs_and_quotes_this_runs_numbers(alone):
    nb = alone["nb"]
    training = next(c for c in nb.cells if c.cell_type == "code" and "num_epochs=1" in c.source)
    printed = re.findall(r"Avg eval accuracy ([0-9.]+)", text_of(training))[-1]
    report = " ".join(hw3.report_text(nb).split())
    assert f"model gets {float(printed):.3f} of the test set's next tokens right" in report
    numbers = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("def levels_off_at"))
    levels_off = re.search(r"levels off at (\d+)", text_of(numbers)).group(1)
    assert f"levels off at about position {levels_off}" in report
    assert "not measured" not in report and "{" not in report
    parts = [c for c in hw3.report_cells(nb) if c.cell_type == "code"]
    assert len(parts) == 4 and all(any("text/markdown" in o.get("data", {}) for o in c.outputs) for c in parts)
    assert len(report.split()) >= 300
