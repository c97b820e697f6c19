"""What several tests do to a copy of the project: make the copy, make a handout from the notebook, and the drill
(a changed handout, ported as a maintainer would). Not a test module: test_setup and test_handout import it."""
import contextlib
import importlib.util
import io
import re
import shutil
import subprocess
from pathlib import Path

import nbformat

import hw3_helpers as hw3
from hw3tools import handout

ROOT = Path(__file__).resolve().parents[1]


def copy_of_the_project(target):
    """The project's own files, edited or not yet added to git included, without .venv, build outputs or caches."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True).stdout.decode("utf-8")
        for name in filter(None, listed.split("\0")):
            if (ROOT / name).is_file():  # a file deleted but not yet committed is listed too
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target / name)
    else:  # an unpacked zip of the project
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
            ".venv", "build", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"))
    return target


def handout_notebook(path: Path, edit=lambda source: source, notebook: Path = ROOT / "homework3.ipynb") -> Path:
    """The handout as a course hands it out: the notebook's handed-out cells, TODO bodies empty, no outputs."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [cell for cell in nb.cells if not hw3.is_added(cell)]
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.source = edit(hw3.strip_todo_bodies(cell.source))
    nbformat.write(nb, path)
    return path


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("hw3_helpers_of_the_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def another_number_of_epochs(settings) -> tuple[str, str]:
    epochs = settings.epochs - 2 if settings.epochs > 2 else settings.epochs + 2
    return r"num_epochs=\d+", f"num_epochs={epochs}"


def another_jump_probability(settings) -> tuple[str, str]:
    jump = settings.next_prob * 2 if settings.next_prob <= 0.25 else settings.next_prob / 2
    return r"(?m)^NEXT_PROB = \S+$", f"NEXT_PROB = {jump:g}"


DRILLS = {"epochs": another_number_of_epochs, "NEXT_PROB": another_jump_probability}  # each: (what, its new text)


def port_a_drilled_handout(project: Path, folder: Path, drills=("epochs",)):
    """The drill on a copy of the project: a handout with the `drills` changed (another number of epochs in the
    training cell, another NEXT_PROB in the constants cell; the new values from the notebook's, never typed here),
    written into `folder`; the command run on it; and the maintainer's edit to homework3.ipynb, one cell a change.
    Returns the copy's settings after the port."""
    from hw3tools import study

    notebook = project / "homework3.ipynb"
    changes = [DRILLS[name](study.notebook_settings(study.notebook_sources(notebook))) for name in drills]

    def edit(source):
        for pattern, new in changes:
            source = re.sub(pattern, new, source)
        return source

    new = handout_notebook(folder / "handout.ipynb", edit, notebook)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert handout.main([str(new)], root=project) == 0
    said = said.getvalue()
    assert "rewrote hw3_helpers.py (HANDED_OUT_CELLS)" in said
    nb = nbformat.read(notebook, as_version=4)
    for pattern, new_text in changes:  # the command names the cell and shows the line that changed
        [cell] = [c for c in nb.cells if c.cell_type == "code" and re.search(pattern, c.source)]
        first = hw3.significant_lines(hw3.strip_todo_bodies(cell.source))[0]
        assert re.search(rf"changed, the code cell starting {re.escape(repr(first))}:.*\+{re.escape(new_text)}\n",
                         said + "\n", re.S), said
    assert said.count("\n- ") == len(changes), "one cell to port a change"
    helpers = load_module(project / "hw3_helpers.py")
    assert not helpers.handed_out_intact(hw3.as_notebook(nb))[0], "the notebook is last year's until ported"
    for cell in nb.cells:  # the maintainer's edit: the cells the command named
        if cell.cell_type == "code":
            cell.source = edit(cell.source)
    nbformat.write(nb, notebook)
    assert helpers.handed_out_intact(hw3.as_notebook(nb))[0]
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert handout.main([str(new)], root=project) == 0
    assert "nothing to port" in said.getvalue()
    return study.notebook_settings(study.notebook_sources(notebook))
