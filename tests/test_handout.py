"""Next year's handout in one command (`python -m hw3tools handout PATH`): the handed-out table and
tests/handed_out.json are regenerated from the handout, what to port is listed, and on today's handout nothing
changes. The drill: a handout whose training cell says another number of epochs, ported by one cell's edit."""
import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import hw3_helpers as hw3
from hw3tools import handout

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT.parent / "shared" / "assignment" / "000_900078325203ea3f.txt"


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


def copy_of_the_project(folder: Path) -> Path:
    """The project's own files, as test_setup copies them (no .venv, no build outputs)."""
    from test_setup import copy_of_the_project as copy_project

    return copy_project(folder)


def test_on_the_handout_the_notebook_was_made_from_it_changes_nothing_and_has_nothing_to_port(tmp_path, capsys):
    project = copy_of_the_project(tmp_path / "project")
    source = handout_notebook(tmp_path / "handout.ipynb")
    before = (project / "hw3_helpers.py").read_bytes()
    assert handout.main([str(source)], root=project) == 0
    said = capsys.readouterr().out
    assert "nothing to port" in said and (project / "hw3_helpers.py").read_bytes() == before
    assert (project / "tests" / "handed_out.json").read_bytes() == (ROOT / "tests" / "handed_out.json").read_bytes()


@pytest.mark.skipif(not ASSIGNMENT.exists(), reason="the assignment text lives outside this clone")
def test_on_todays_text_export_the_command_is_a_no_op(tmp_path, capsys):
    project = copy_of_the_project(tmp_path / "project")
    before = {name: (project / name).read_bytes() for name in ("hw3_helpers.py", "tests/handed_out.json")}
    assert handout.main([str(ASSIGNMENT)], root=project) == 0
    assert "as they were" in capsys.readouterr().out
    assert {name: (project / name).read_bytes() for name in before} == before


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("hw3_helpers_of_the_copy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def port_a_drilled_handout(project: Path, folder: Path) -> int:
    """The drill on a copy of the project: a handout whose training cell says another number of epochs (written into
    `folder`), the command run on it, and the maintainer's one edit to homework3.ipynb. Returns the new epochs."""
    from hw3tools import study

    prescribed = study.notebook_settings(study.notebook_sources(project / "homework3.ipynb")).epochs
    epochs = prescribed - 2 if prescribed > 2 else prescribed + 2  # another number of epochs, never a literal here
    pattern = re.compile(r"num_epochs=(\d+)")
    new = handout_notebook(folder / "handout.ipynb", lambda source: pattern.sub(f"num_epochs={epochs}", source),
                           project / "homework3.ipynb")
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert handout.main([str(new)], root=project) == 0
    said = said.getvalue()
    assert "rewrote hw3_helpers.py (HANDED_OUT_CELLS), tests/handed_out.json" in said
    assert re.search(rf"changed, the code cell starting 'model = Transformer\(':.*-num_epochs=\d+\s+"
                     rf"\+num_epochs={epochs}", said, re.S), said
    assert said.count("\n- ") == 1, "one cell to port"
    notebook = project / "homework3.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    helpers = load_module(project / "hw3_helpers.py")
    assert not helpers.handed_out_intact(hw3.as_notebook(nb))[0], "the notebook is last year's until ported"
    training = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("model = Transformer("))
    training.source = pattern.sub(f"num_epochs={epochs}", training.source)  # the maintainer's edit: that cell
    nbformat.write(nb, notebook)
    assert helpers.handed_out_intact(hw3.as_notebook(nb))[0]
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        assert handout.main([str(new)], root=project) == 0
    assert "nothing to port" in said.getvalue()
    return epochs


def drilled(tmp_path) -> Path:
    project = copy_of_the_project(tmp_path / "project")
    port_a_drilled_handout(project, tmp_path)
    return project


def test_the_drill_a_handout_with_another_number_of_epochs_is_ported_by_one_cells_edit(tmp_path):
    """A short form of the drill; tests/test_setup.py runs the whole fast suite on a ported copy."""
    project = drilled(tmp_path)
    # the integrity tests pass on the ported notebook with the regenerated table and manifest, no test edited
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_integrity.py"],
                          cwd=project, capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stdout[-3000:]
    # the study's committed runs are of another setup now, and the appendix says so instead of drawing them as this
    nb = nbformat.read(project / "homework3.ipynb", as_version=4)
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    said = load_module(project / "hw3_helpers.py").study_provenance(
        summary, [c.source for c in nb.cells if c.cell_type == "code"])
    runs = sum(len(config["seeds"]) for config in summary["configs"])
    assert said.startswith(f"{runs} of {runs} runs were trained by other code than this notebook's"), said


def test_no_fingerprint_is_written_twice_in_our_code_and_each_entry_of_the_table_is_a_cell_of_the_notebook():
    hashes = []
    for path in [ROOT / "hw3_helpers.py", *sorted((ROOT / "hw3tools").glob("*.py")), *sorted(ROOT.glob("tests/*.py"))]:
        hashes += re.findall(r"\b[0-9a-f]{64}\b", path.read_text(encoding="utf-8"))
    assert len(hashes) == len(set(hashes)), [h for h in set(hashes) if hashes.count(h) > 1]
    nb = hw3.read_notebook(ROOT / "homework3.ipynb")
    assert [form for form, _ in hw3.handed_out_cells(nb)] == [form for form, _ in
                                                                       hw3.HANDED_OUT_CELLS]


def prescribed_literals() -> list[re.Pattern]:
    """The prescribed setup as literals would spell it, built from the values the notebook's cells give (never
    typed here): the epochs, the training set's size, the steps they make, the steps of the equal-compute run."""
    from hw3tools import study

    settings = study.notebook_settings()
    epochs, sequences, batch = settings.epochs, settings.train_sequences, settings.batch_size
    steps, fresh_steps = epochs * -(-sequences // batch), epochs * sequences // batch
    return [re.compile(pattern) for pattern in (
        rf"num_epochs\s*=\s*{epochs}\b", rf"\b{epochs} epochs\b", rf"""epochs["']?\]?\s*==\s*{epochs}\b""",
        rf"\b{steps}\b", rf"\b{fresh_steps}\b", rf"\b{sequences} (?:training )?sequences\b", rf"\bat {sequences}\b",
        rf"\b{sequences:,}\b")]


def our_texts() -> dict[str, str]:
    """Our code and our prose: the notebook's added cells and TODO bodies, the module, the tooling, the tests and
    the benchmark. The handed-out text (the cells as given, the table of their fingerprints) is the handout's."""
    texts = {}
    nb = hw3.read_notebook(ROOT / "homework3.ipynb")
    for number, cell in enumerate(nb["cells"], start=1):
        if hw3.is_added(cell):
            texts[f"homework3.ipynb cell {number}"] = cell["source"]
        elif cell["cell_type"] == "code" and hw3.TODO_START in cell["source"]:
            bodies = [part.split(hw3.TODO_END)[0] for part in cell["source"].split(hw3.TODO_START)[1:]]
            texts[f"homework3.ipynb cell {number} (TODO bodies)"] = "\n".join(bodies)
    for path in [ROOT / "hw3_helpers.py", *sorted(ROOT.glob("hw3tools/*.py")), *sorted(ROOT.glob("tests/*.py")),
                 *sorted(ROOT.glob("bench/*.py"))]:
        texts[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return texts


def literals_in(texts: dict[str, str]) -> list[str]:
    return [f"{where}: {match.group(0)!r}" for where, text in texts.items() for pattern in prescribed_literals()
            for match in pattern.finditer(text)]


def test_no_literal_of_the_prescribed_setup_is_copied_outside_the_handed_out_cells():
    assert literals_in(our_texts()) == []


def test_a_planted_literal_of_the_prescribed_setup_is_found():
    from hw3tools import study

    settings = study.notebook_settings()
    planted = {"a docstring": f"trained for {settings.epochs} epochs", "a test": f"num_epochs={settings.epochs}",
               "a label": f"at {settings.train_sequences} sequences"}
    assert len(literals_in(planted)) >= 3
