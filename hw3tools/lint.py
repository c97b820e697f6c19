"""python -m hw3tools.lint [NOTEBOOK ...]: our lines of the notebooks stay within 88 characters (`make lint` runs it
after ruff, which holds the rest of the code to 120). Without arguments: homework3.ipynb and appendix/appendix.ipynb.

In homework3.ipynb ours are every line of a cell tagged `added`, and in a handed-out cell the lines between its TODO
markers; the rest of a handed-out cell is the assignment's and stays as given, however long. In the appendix every
code cell is ours (it has no handed-out cell).

Standard library only, and hw3_helpers for the markers and the tag: it reads the notebooks as JSON.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hw3_helpers import ADDED_TAG, TODO_END, TODO_START, as_notebook, is_added, strip_todo_bodies  # noqa: E402

NOTEBOOK = ROOT / "homework3.ipynb"
APPENDIX = ROOT / "appendix" / "appendix.ipynb"
NOTEBOOKS = (NOTEBOOK, APPENDIX)
WHOLLY_OURS = {APPENDIX.name}  # notebooks without a handed-out cell, by name: all of their code is ours
MAX_LINE = 88


def our_lines(cell, wholly_ours: bool = False) -> list[tuple[int, str]]:
    """(line number from 1, line) for each line of a code cell that is ours (a cell as `as_notebook` gives it)."""
    source = cell["source"]
    lines = source.splitlines()
    if wholly_ours or is_added(cell):
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


def too_long(nb: dict, name: str = NOTEBOOK.name, wholly_ours: bool | None = None) -> list[str]:
    """One message per line of ours over MAX_LINE characters. `wholly_ours`: every code line is ours (by default,
    for a notebook named as one of WHOLLY_OURS)."""
    if wholly_ours is None:
        wholly_ours = Path(name).name in WHOLLY_OURS
    messages = []
    for number, cell in enumerate(as_notebook(nb)["cells"], start=1):
        if cell.get("cell_type") != "code":
            continue
        long = [(line_number, line) for line_number, line in our_lines(cell, wholly_ours) if len(line) > MAX_LINE]
        if not long:
            continue
        first = (cell["source"].splitlines() or [""])[0]
        first = first if len(first) <= 40 else first[:40] + "..."
        messages += [f"{name}: cell {number} ({first}): line {line_number} is {len(line)} characters"
                     for line_number, line in long]
    return messages


def shown_name(path: Path) -> str:
    """A notebook as messages name it: by its path in the project, or by its file name elsewhere."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    failed = False
    for path in [Path(arg) for arg in argv] or NOTEBOOKS:
        name = shown_name(path)
        messages = too_long(json.loads(path.read_text(encoding="utf-8")), name)
        ours = "all its code" if path.name in WHOLLY_OURS else f"cells tagged {ADDED_TAG!r}, TODO bodies"
        for message in messages:
            print(message)
        if messages:
            failed = True
            print(f"{len(messages)} of our lines in {name} are over {MAX_LINE} characters ({ours}): break them "
                  f"inside brackets")
        else:
            print(f"{name}: our lines ({ours}) are within {MAX_LINE} characters")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
