"""The notebook on its own, as a student runs it in Jupyter or Colab: no `make`, no hw3tools, no hw3_helpers.py
beside it, another thread count. It must run start to end, skip each extension section with one line, and report
the numbers of the run on screen (training is cut to one epoch here, so they differ from any record)."""
import os
import re
import subprocess
import sys

import nbformat
import pytest

from hw3tools import notebook as hw3

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alone")
    nb = nbformat.read(hw3.NOTEBOOK, as_version=4)
    training = next(c for c in nb.cells if c.cell_type == "code" and "num_epochs=8" in c.source)
    training.source = training.source.replace("num_epochs=8", "num_epochs=1")  # a short run: this test is not about it
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


def test_each_extension_section_is_skipped_with_one_line(alone):
    sections = {c.source.splitlines()[0][len("# Extension:"):].strip() for c in alone.cells
                if c.cell_type == "code" and c.source.startswith("# Extension:")}
    lines = [line for c in alone.cells if c.cell_type == "code" for line in text_of(c).splitlines()
             if "skipped (it needs hw3_helpers.py" in line]
    assert sorted(lines) == sorted(f"{s}: skipped (it needs hw3_helpers.py beside the notebook)" for s in sections)
    assert len(sections) >= 6


def test_the_report_quotes_this_runs_accuracy_and_marks_what_it_did_not_measure(alone):
    training = next(c for c in alone.cells if c.cell_type == "code" and "num_epochs=1" in c.source)
    printed = re.findall(r"Avg eval accuracy ([0-9.]+)", text_of(training))[-1]
    report = hw3.report_text(alone)
    assert f"the model's test accuracy is {float(printed):.3f}" in report
    assert "[ceiling: not measured in this run]" in report
    check = next(c for c in alone.cells if c.cell_type == "code" and hw3.REPORT_CHECK_TAG in c.metadata.get("tags", []))
    assert "could not be checked" in text_of(check) and "does not bear out" not in text_of(check)
