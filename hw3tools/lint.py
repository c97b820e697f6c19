"""python -m hw3tools.lint [NOTEBOOK]: our lines of homework3.ipynb stay within 88 characters (`make lint` runs it
after ruff, which holds the rest of the code to 120).

Ours are every line of a cell tagged `added`, and in a handed-out cell the lines between its TODO markers; the rest of
a handed-out cell is the assignment's and stays as given, however long.

Standard library only, and hw3_helpers for the markers and the tag: it reads the notebook as JSON.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hw3_helpers import ADDED_TAG, TODO_END, TODO_START, as_notebook, is_added, strip_todo_bodies  # noqa: E402

NOTEBOOK = ROOT / "homework3.ipynb"
MAX_LINE = 88


def our_lines(cell) -> list[tuple[int, str]]:
    """(line number from 1, line) for each line of a code cell that is ours (a cell as `as_notebook` gives it)."""
    source = cell["source"]
    lines = source.splitlines()
    if is_added(cell):
        return list(enumerate(lines, start=1))
    if strip_todo_bodies(source).splitlines() == lines:  # nothing between markers: all of it is the handout's
        return []
    ours, inside = [], False
    for number, line in enumerate(lines, start=1):
        if TODO_START in line:
            inside = True
        elif TODO_END in line:
            inside = False
        elif inside:
            ours.append((number, line))
    return ours


def too_long(nb: dict, name: str = NOTEBOOK.name) -> list[str]:
    """One message per line of ours over MAX_LINE characters."""
    messages = []
    for number, cell in enumerate(as_notebook(nb)["cells"], start=1):
        if cell.get("cell_type") != "code":
            continue
        long = [(line_number, line) for line_number, line in our_lines(cell) if len(line) > MAX_LINE]
        if not long:
            continue
        first = (cell["source"].splitlines() or [""])[0]
        first = first if len(first) <= 40 else first[:40] + "..."
        messages += [f"{name}: cell {number} ({first}): line {line_number} is {len(line)} characters"
                     for line_number, line in long]
    return messages


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else NOTEBOOK
    messages = too_long(json.loads(path.read_text(encoding="utf-8")), path.name)
    for message in messages:
        print(message)
    if messages:
        print(f"{len(messages)} of our lines in {path.name} are over {MAX_LINE} characters (cells tagged "
              f"{ADDED_TAG!r}, and the TODO bodies of the handed-out cells): break them inside brackets")
        return 1
    print(f"{path.name}: our lines (cells tagged {ADDED_TAG!r}, TODO bodies) are within {MAX_LINE} characters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
