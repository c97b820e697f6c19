"""The notebook on its own, as a student runs it in Colab with the notebook alone: no `make`, no hw3tools, no
hw3_helpers.py beside it, another thread count. The homework and the whole report run start to end on the handout's
packages and quote the run's numbers (training is cut to one epoch here, so they differ from any record); the
report's check and the appendix each say in one line that they were skipped."""
import os
import re
import subprocess
import sys

import nbformat
import pytest

import hw3_helpers as hw3
from hw3tools import notebook as runner

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alone")
    nb = nbformat.read(runner.NOTEBOOK, as_version=4)
    training = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("model = Transformer("))
    training.source = re.sub(r"num_epochs=\d+", "num_epochs=1", training.source)  # a short run: not what it tests
    nbformat.write(nb, folder / "homework3.ipynb")
    env = {**os.environ, "HW3_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
                             "--output", "executed.ipynb", "homework3.ipynb"], cwd=folder, env=env,
                            capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return nbformat.read(folder / "executed.ipynb", as_version=4)


def text_of(cell):
    return "".join(o.get("text", "") for o in cell.outputs) + "".join(
        str(o.get("data", {}).get("text/markdown", "")) for o in cell.outputs)


def test_it_runs_start_to_end_without_errors(alone):
    code = [c for c in alone.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "1 CPU threads" in text_of(code[0])


def test_the_appendix_and_the_reports_check_each_say_in_one_line_that_they_were_skipped(alone):
    lines = [line for c in alone.cells if c.cell_type == "code" for line in text_of(c).splitlines()
             if "skipped" in line]
    assert lines == ["The report's check was skipped: it needs hw3_helpers.py beside this notebook.",
                     "Beyond the assignment: skipped, as hw3_helpers.py is not beside this notebook (the homework "
                     "above is complete without it)."]
    appendix = next(i for i, c in enumerate(alone.cells) if c.source.startswith("## Beyond the assignment"))
    *after_guard, export = [c for c in alone.cells[appendix:] if c.cell_type == "code"][1:]
    assert all(not c.outputs for c in after_guard)  # the guards ran and did nothing
    said = text_of(export).strip().splitlines()  # the Moodle zip's cell: what to drop beside it, or by hand
    assert len(said) == 1 and "hw3_helpers.py" in said[0] and "by hand" in said[0]


def test_the_whole_report_runs_and_quotes_this_runs_numbers(alone):
    training = next(c for c in alone.cells if c.cell_type == "code" and "num_epochs=1" in c.source)
    printed = re.findall(r"Avg eval accuracy ([0-9.]+)", text_of(training))[-1]
    report = " ".join(hw3.report_text(alone).split())
    assert f"model gets {float(printed):.3f} of the test set's next tokens right" in report
    assert "not measured" not in report and "{" not in report
    parts = [c for c in hw3.report_cells(alone) if c.cell_type == "code"]
    assert len(parts) == 5 and all(any("text/markdown" in o.get("data", {}) for o in c.outputs) for c in parts)
    assert len(report.split()) >= 350
