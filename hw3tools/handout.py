"""`python -m hw3tools handout PATH` (`make handout HANDOUT=PATH`): next year's handout in one command.

It reads a handout, the `.ipynb` a course hands out or its text export (as in `../shared/assignment/`), and
regenerates what derives from it: the handed-out cells' fingerprints (`HANDED_OUT_CELLS`, generated at the end of
hw3_helpers.py: the one fingerprint of the handout, which the rubric and the integrity tests read). Then it compares
homework3.ipynb with the handout, cell by cell, and lists what to port by hand: each handed-out cell that differs (a
short diff), each cell that is new in the handout, each that is gone. On the handout the notebook was made from it
changes nothing. Standard library only, like `make check`.

A text export has no cell boundaries: its lines are laid on homework3.ipynb's handed-out cells in order (difflib), so a
line changed or added inside a cell stays in that cell; lines added between cells are reported as new, to be ported
as cells of their own (then run the command again).
"""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

import hw3_helpers
from hw3_helpers import (
    TODO_END,
    TODO_START,
    as_notebook,
    fingerprint,
    handed_out_form,
    is_added,
    significant_lines,
)

ROOT = Path(__file__).resolve().parents[1]
TABLE_START = "HANDED_OUT_CELLS = (\n"
TABLE_END = "\n)\n"


def notebook_cells(notebook: Path) -> list[tuple[str, list[str]]]:
    """homework3.ipynb's handed-out cells (not tagged `added`), in the handout's form."""
    nb = as_notebook(json.loads(Path(notebook).read_text(encoding="utf-8")))
    return [handed_out_form(cell) for cell in nb["cells"] if not is_added(cell)]


def read_handout(path: Path, template: list[tuple[str, list[str]]]) -> tuple[list[tuple[str, list[str]]], list]:
    """The handout's cells in the handout's form, and the runs of lines a text export adds between the template's
    cells (for an .ipynb, none). A text export's lines are laid on `template` (the notebook's handed-out cells)."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".ipynb":
        nb = as_notebook(json.loads(text))
        return [handed_out_form(cell) for cell in nb["cells"]], []
    lines = significant_lines(text)
    owner = [index for index, (_, cell_lines) in enumerate(template) for _ in cell_lines]
    flat = [line for _, cell_lines in template for line in cell_lines]
    cells: list[list[str]] = [[] for _ in template]
    between = []
    matcher = difflib.SequenceMatcher(None, flat, lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            for k, line in enumerate(lines[j1:j2]):
                cells[owner[min(i1 + k, i2 - 1)]].append(line)
        elif tag == "insert":
            inside = 0 < i1 < len(flat) and owner[i1 - 1] == owner[i1]
            if inside:  # within one cell: that cell's lines
                cells[owner[i1]].extend(lines[j1:j2])
            else:  # at a boundary: new content, which the notebook must get as cells of its own
                between.append((owner[i1 - 1] if i1 > 0 else None, lines[j1:j2]))
    return [(template[i][0], cell_lines) for i, cell_lines in enumerate(cells) if cell_lines], between


def table_text(cells: list[tuple[str, list[str]]]) -> str:
    """HANDED_OUT_CELLS as hw3_helpers.py writes it: (fingerprint, first line) per cell, in order."""
    rows = [f'    ("{fingerprint([kind, *lines])}",\n     {json.dumps(lines[0] if lines else "", ensure_ascii=False)}),'
            for kind, lines in cells]
    return TABLE_START + "\n".join(rows) + TABLE_END


def write_if_changed(path: Path, text: str) -> bool:
    if path.read_text(encoding="utf-8") == text:
        return False
    hw3_helpers.write_atomically(path, text)
    return True


def regenerate(cells: list[tuple[str, list[str]]], root: Path = ROOT) -> list[str]:
    """Rewrite the table in hw3_helpers.py from the handout's cells; the files changed."""
    helpers = root / "hw3_helpers.py"
    text = helpers.read_text(encoding="utf-8")
    start = text.index(TABLE_START)
    end = text.index(TABLE_END, start) + len(TABLE_END)
    return ["hw3_helpers.py (HANDED_OUT_CELLS)"] if write_if_changed(
        helpers, text[:start] + table_text(cells) + text[end:]) else []


def differences(handout: list[tuple[str, list[str]]], notebook: list[tuple[str, list[str]]]) -> list[str]:
    """What to port into homework3.ipynb: per handed-out cell that differs, a short diff; new and gone cells."""
    found = []
    keys = [fingerprint([kind, *lines]) for kind, lines in handout]
    matcher = difflib.SequenceMatcher(None, [fingerprint([kind, *lines]) for kind, lines in notebook], keys,
                                      autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        pairs = list(zip(notebook[i1:i2], handout[j1:j2], strict=False)) if tag == "replace" else []
        for (kind, old), (_, new) in pairs:
            diff = [line for line in difflib.unified_diff(old, new, lineterm="", n=1)][2:]
            found.append(f"changed, the {kind} cell starting {old[0]!r}:\n    " + "\n    ".join(diff[:12])
                         + ("\n    ..." if len(diff) > 12 else ""))
        for kind, lines in handout[j1 + len(pairs):j2]:
            found.append(f"new in the handout, a {kind} cell starting {lines[0]!r}: port it")
        for kind, lines in notebook[i1 + len(pairs):i2]:
            found.append(f"gone from the handout, the {kind} cell starting {lines[0]!r}: remove it")
    return found


def main(argv: list[str], root: Path = ROOT) -> int:
    if len(argv) != 1:
        print("usage: python -m hw3tools handout PATH  (the handout's .ipynb, or its text export)")
        return 2
    path = Path(argv[0]).resolve()
    if not path.is_file():
        print(f"error: no handout at {path}")
        return 1
    template = notebook_cells(root / "homework3.ipynb")
    cells, between = read_handout(path, template)
    changed = regenerate(cells, root)
    print("rewrote " + ", ".join(changed) if changed else "the handed-out table is as it was")
    to_port = differences(cells, template)
    for after, lines in between:
        where = f"after the cell starting {template[after][1][0]!r}" if after is not None else "at the start"
        to_port.append(f"new lines {where}: port them as cells of their own, then run this again:\n    "
                       + "\n    ".join(lines[:8]))
    if not to_port:
        print(f"homework3.ipynb carries all {len(cells)} handed-out cells unchanged: nothing to port")
        return 0
    print(f"to port into homework3.ipynb ({len(to_port)}); TODO bodies are yours and not compared "
          f"({TODO_START} ... {TODO_END}):")
    for item in to_port:
        print(f"- {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

