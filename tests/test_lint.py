"""`make lint` holds our lines of the notebook to 88 characters: the added cells and the TODO bodies, not the
handout's own lines."""
import json

import hw3_helpers as hw3
from hw3tools import lint

LONG = 100


def notebook() -> dict:
    return hw3.read_notebook(lint.NOTEBOOK)  # sources joined, as everything that reads a cell's source has them


def code_cells(nb, added):
    return [(number, cell) for number, cell in enumerate(nb["cells"], start=1)
            if cell["cell_type"] == "code" and lint.is_added(cell) == added]


def set_source(cell, text):
    cell["source"] = text


def lint_copy(nb, tmp_path, capsys):
    path = tmp_path / "homework3.ipynb"
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    code = lint.main([str(path)])
    return code, capsys.readouterr().out


def test_the_repository_notebook_passes(capsys):
    assert lint.too_long(notebook()) == []
    assert lint.main([]) == 0
    assert "within 88 characters" in capsys.readouterr().out


def test_a_long_line_in_an_added_cell_fails_and_is_named(tmp_path, capsys):
    nb = notebook()
    number, cell = code_cells(nb, added=True)[0]
    planted = "planted = " + repr("x" * (LONG - len("planted = ") - 2))
    assert len(planted) == LONG
    set_source(cell, cell["source"] + "\n" + planted)
    code, out = lint_copy(nb, tmp_path, capsys)
    line = len(cell["source"].splitlines())
    assert code == 1
    assert f"homework3.ipynb: cell {number} (" in out and f"line {line} is {LONG} characters" in out
    assert len([row for row in out.splitlines() if row.startswith("homework3.ipynb: cell")]) == 1


def test_a_long_line_of_the_handout_outside_the_todo_markers_is_allowed(tmp_path, capsys):
    nb = notebook()
    number, cell = next((n, c) for n, c in code_cells(nb, added=False) if lint.TODO_START in c["source"])
    set_source(cell, "# " + "h" * (LONG - 2) + "\n" + cell["source"])
    assert lint_copy(nb, tmp_path, capsys)[0] == 0


def test_a_long_line_in_a_todo_body_fails_and_is_named(tmp_path, capsys):
    nb = notebook()
    number, cell = next((n, c) for n, c in code_cells(nb, added=False) if lint.TODO_START in c["source"])
    lines = cell["source"].splitlines()
    body = next(i for i, line in enumerate(lines) if lint.TODO_START in line) + 1
    indent = lines[body][:len(lines[body]) - len(lines[body].lstrip())]
    code_line = indent + "total = " + " + ".join(["value"] * 20)
    assert len(code_line) > lint.MAX_LINE
    set_source(cell, "\n".join(lines[:body] + [code_line] + lines[body:]))
    code, out = lint_copy(nb, tmp_path, capsys)
    assert code == 1 and f"cell {number} (" in out and f"line {body + 1} is {len(code_line)} characters" in out
