"""`make lint` holds our lines of the notebooks to 88 characters: in homework3.ipynb the added cells and the TODO
bodies, not the handout's own lines; in the appendix every code cell, all of it ours."""
import json

import hw3_helpers as hw3
from hw3tools import lint

LONG = 100


def notebook(path=lint.NOTEBOOK) -> dict:
    return hw3.read_notebook(path)  # sources joined, as everything that reads a cell's source has them


def code_cells(nb, added):
    return [(number, cell) for number, cell in enumerate(nb["cells"], start=1)
            if cell["cell_type"] == "code" and lint.is_added(cell) == added]


def set_source(cell, text):
    cell["source"] = text


def lint_copy(nb, tmp_path, capsys, name="homework3.ipynb"):
    path = tmp_path / name
    path.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    code = lint.main([str(path)])
    return code, capsys.readouterr().out


def planted_line() -> str:
    planted = "planted = " + repr("x" * (LONG - len("planted = ") - 2))
    assert len(planted) == LONG
    return planted


def test_the_repository_notebooks_pass(capsys):
    assert lint.NOTEBOOKS == (lint.NOTEBOOK, lint.APPENDIX)
    assert lint.too_long(notebook()) == []
    assert lint.too_long(notebook(lint.APPENDIX), lint.APPENDIX.name) == []
    assert lint.main([]) == 0
    said = capsys.readouterr().out
    assert "homework3.ipynb: our lines" in said and "appendix/appendix.ipynb: our lines (all its code)" in said
    assert said.count("within 88 characters") == 2


def test_a_long_line_in_an_added_cell_fails_and_is_named(tmp_path, capsys):
    nb = notebook()
    number, cell = code_cells(nb, added=True)[0]
    set_source(cell, cell["source"] + "\n" + planted_line())
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


def test_a_long_line_in_any_code_cell_of_the_appendix_fails_and_is_named(tmp_path, capsys):
    nb = notebook(lint.APPENDIX)
    untagged = [(n, c) for n, c in enumerate(nb["cells"], start=1)
                if c["cell_type"] == "code" and not lint.is_added(c)]
    assert len(untagged) == len([c for c in nb["cells"] if c["cell_type"] == "code"]), "no cell is tagged there"
    number, cell = untagged[-1]
    set_source(cell, planted_line() + "\n" + cell["source"])
    code, out = lint_copy(nb, tmp_path, capsys, name=lint.APPENDIX.name)
    assert code == 1 and f"appendix.ipynb: cell {number} (planted = " in out and f"line 1 is {LONG} characters" in out
    assert "(all its code)" in out


def test_make_lint_checks_the_appendix_too(tmp_path, capsys, monkeypatch):
    nb = notebook(lint.APPENDIX)
    number, cell = next((n, c) for n, c in enumerate(nb["cells"], start=1) if c["cell_type"] == "code")
    set_source(cell, cell["source"] + "\n" + planted_line())
    (tmp_path / "appendix").mkdir()
    (tmp_path / "appendix" / "appendix.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    monkeypatch.setattr(lint, "NOTEBOOKS", (lint.NOTEBOOK, tmp_path / "appendix" / "appendix.ipynb"))
    assert lint.main([]) == 1
    said = capsys.readouterr().out
    assert "homework3.ipynb: our lines" in said and f"appendix.ipynb: cell {number} (" in said
