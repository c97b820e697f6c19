"""A student in plain Jupyter: Run All, save, then `make zip` (`python -m hw3tools zip`). The notebook as Jupyter saved
it is the run: it is zipped as it is, with nothing executed again, no .venv built and no torch imported. The run is
the session's (tests/conftest.py: `homework_run`), saved as Jupyter saves it; that `jupyter nbconvert --execute`
itself runs the notebook is tested on its own kernel in tests/test_notebook_alone.py."""
import html
import json
import os
import shutil
import subprocess
import sys
import zipfile

import nbformat
import pytest
from conftest import STUDENT_SENTENCE as REWORDED

import hw3_helpers as hw3
from hw3tools import notebook as runner

pytestmark = pytest.mark.e2e

NO_TORCH = ("import runpy, sys; sys.modules['torch'] = sys.modules['numpy'] = None; sys.argv = ['hw3tools', 'zip']; "
            "runpy.run_module('hw3tools', run_name='__main__')")


@pytest.fixture(scope="module")
def saved(homework_run, tmp_path_factory):
    """The session's run as Jupyter's Run All and save leave it: homework3.ipynb holding its outputs (with the
    student's sentence in a report cell), beside hw3_helpers.py, hw3tools, figures/ and build/ with the run's
    numbers and weights, and no `make run` copy."""
    folder = tmp_path_factory.mktemp("jupyter") / "student"
    shutil.copytree(homework_run["out"], folder, ignore=shutil.ignore_patterns("hw3_submission.zip"))
    nb = nbformat.read(folder / "build" / "homework3.ipynb", as_version=4)
    nb.metadata.pop(hw3.RUN_KEY)
    nbformat.write(nb, folder / "homework3.ipynb")
    (folder / "build" / "homework3.ipynb").unlink()
    (folder / "report.md").unlink()  # Jupyter writes none: the zip writes it
    shutil.copytree(runner.ROOT / "hw3tools", folder / "hw3tools", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def zip_with_no_torch(folder):
    return subprocess.run([sys.executable, "-c", NO_TORCH], cwd=folder, capture_output=True, text=True,
                          encoding="utf-8", env={**os.environ, "PYTHONPATH": str(folder)})


@pytest.fixture(scope="module")
def zipped(saved, tmp_path_factory):
    """The saved run zipped once with no torch: its folder (build/hw3_submission.zip in it), what the command said,
    and the notebook as it was before."""
    folder = tmp_path_factory.mktemp("zipped") / "student"
    shutil.copytree(saved, folder)
    before = (folder / "homework3.ipynb").read_bytes()
    return folder, zip_with_no_torch(folder), before


def test_a_run_saved_from_jupyter_is_zipped_as_it_is_with_no_torch_and_no_venv(zipped):
    folder, done, before = zipped
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the run: homework3.ipynb (saved from Jupyter)" in done.stdout
    assert "TODO  a link to the Colab version" in done.stdout and "FAIL" not in done.stdout, done.stdout
    assert (folder / "homework3.ipynb").read_bytes() == before and not (folder / ".venv").exists()
    assert not (folder / "build" / "homework3.ipynb").exists(), "nothing was run again"
    with zipfile.ZipFile(folder / "build" / "hw3_submission.zip") as archive:
        report = archive.read("report.md").decode("utf-8")
        assert REWORDED in " ".join(report.split())
        assert REWORDED in " ".join(archive.read("homework3.ipynb").decode("utf-8").split())
        nbformat.validate(nbformat.reads(archive.read("homework3.ipynb").decode("utf-8"), as_version=4))
        assert archive.read("metrics.json") == (folder / "build" / "metrics.json").read_bytes()
        assert REWORDED in " ".join(html.unescape(archive.read("homework3.html").decode("utf-8")).split())
    assert (folder / "report.md").read_text(encoding="utf-8") == report


PROOF = "the code is what the kernel ran: every code cell once, in order, from a fresh kernel"


def edit_and_save(folder, find, edit):
    """An edit in Jupyter after the run, saved and not run again."""
    nb = nbformat.read(folder / "homework3.ipynb", as_version=4)
    cell = next(c for c in nb.cells if find(c))
    cell.source = edit(cell.source)
    nbformat.write(nb, folder / "homework3.ipynb")
    return nb.cells.index(cell) + 1


@pytest.mark.parametrize("where", ["a report cell", "a TODO body"])
def test_code_edited_after_the_saved_run_is_refused_naming_the_cell_and_an_older_zip_stays(zipped, tmp_path, where):
    folder = tmp_path / "student"
    shutil.copytree(zipped[0], folder)  # the saved run, already zipped once
    assert zipped[1].returncode == 0
    older = (folder / "build" / "hw3_submission.zip").read_bytes()
    report_before = (folder / "report.md").read_bytes()
    if where == "a report cell":
        number = edit_and_save(folder, lambda c: "**Temperature.**" in c.source,
                               lambda source: source.replace("sharpens", "much sharpens", 1))
        title, line = "Report: temperature", "much sharpens"
    else:
        number = edit_and_save(folder, lambda c: c.source.startswith("class SwiGLUFeedForward"),
                               lambda source: source.replace("self.w2(", "0.5 * self.w2(", 1))
        title, line = "class SwiGLUFeedForward(torch.nn.Module):", "0.5 * self.w2("
    notebook = (folder / "homework3.ipynb").read_bytes()
    done = zip_with_no_torch(folder)
    assert done.returncode == 1 and "no zip written" in done.stdout
    assert f'FAIL  {PROOF}  (cell {number} "{title}" was changed after it ran (first changed line:' in done.stdout
    assert line in done.stdout and "Restart and Run All, save, zip again" in done.stdout
    assert (folder / "build" / "hw3_submission.zip").read_bytes() == older, "the older zip is left as it was"
    assert (folder / "homework3.ipynb").read_bytes() == notebook, "nothing the student wrote is touched"
    assert (folder / "report.md").read_bytes() == report_before


@pytest.mark.parametrize("where", ["a markdown cell", "the Colab link"])
def test_a_markdown_or_link_edit_after_the_saved_run_needs_no_new_run(saved, tmp_path, where):
    folder = tmp_path / "student"
    shutil.copytree(saved, folder)
    link = "https://colab.research.google.com/drive/1AbC-xyz"
    if where == "a markdown cell":
        edit_and_save(folder, lambda c: c.source.startswith("**What the plot shows (added).**"),
                      lambda source: source + "\n\nA sentence of mine, added after the run.")
    else:
        edit_and_save(folder, hw3.is_link_cell,
                      lambda source: f"{hw3.COLAB_LEAD} [open in Colab]({link})")
    done = zip_with_no_torch(folder)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout
    assert f"PASS  {PROOF}" in done.stdout
    with zipfile.ZipFile(folder / "build" / "hw3_submission.zip") as archive:
        zipped = archive.read("homework3.ipynb").decode("utf-8")
        assert ("A sentence of mine" in zipped) if where == "a markdown cell" else (link in zipped)


def test_a_notebook_saved_half_run_is_refused_and_the_rule_named(saved, tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(saved, folder)
    nb = nbformat.read(folder / "homework3.ipynb", as_version=4)
    training = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith("model = Tr"))
    for cell in nb.cells[training + 1:]:
        if cell.cell_type == "code":
            cell.execution_count, cell.outputs = None, []
    nbformat.write(nb, folder / "homework3.ipynb")
    done = zip_with_no_torch(folder)
    assert done.returncode == 1
    assert f'FAIL  {PROOF}  (cell ' in done.stdout and "never ran" in done.stdout and "no zip written" in done.stdout
    assert not (folder / "build" / "hw3_submission.zip").exists()


def test_a_saved_run_beside_a_build_of_another_run_zips_one_runs_files_and_says_which(saved, tmp_path):
    folder = tmp_path / "student"
    shutil.copytree(saved, folder)
    other = hw3.read_notebook(folder / "homework3.ipynb")  # an earlier `make run`: another stamp
    for cell in other["cells"]:
        for output in cell.get("outputs", []):
            if "run id" in output.get("text", ""):
                output["text"] = hw3.RUN_ID.sub("run id 000000000000", output["text"])
    other["metadata"][hw3.RUN_KEY] = hw3.run_stamp_metadata(other)
    (folder / "build" / "homework3.ipynb").write_text(json.dumps(other), encoding="utf-8")
    os.utime(folder / "build" / "homework3.ipynb", (1e9, 1e9))  # older than the saved run
    done = zip_with_no_torch(folder)
    assert done.returncode == 0, done.stdout
    assert ("the run: homework3.ipynb (saved from Jupyter); newer than build/homework3.ipynb (`make run`), "
            "which is left out") in done.stdout
    with zipfile.ZipFile(folder / "build" / "hw3_submission.zip") as archive:
        assert archive.read("homework3.ipynb") == hw3.notebook_json(
            hw3.read_notebook(folder / "homework3.ipynb")).encode("utf-8")
    os.utime(folder / "build" / "homework3.ipynb")  # now the other run is the newer: its files do not match
    (folder / "build" / "hw3_submission.zip").unlink()
    done = zip_with_no_torch(folder)
    assert done.returncode == 1 and "FAIL  the notebook, its metrics and its figures come from one run" in done.stdout
    assert not (folder / "build" / "hw3_submission.zip").exists()
