"""`make run`'s copy of the notebook (build/homework3.ipynb) as `make check`, `make zip`, `make clean` and `record`
read it: its stamp of the sources it ran, whether someone edited it since, and the student's notebook laid over its
outputs. Nothing in Colab or in the notebook needs these, so they live here rather than in hw3_helpers; standard
library only, like `make check`."""
from __future__ import annotations

import json

from hw3_helpers import fingerprint, is_link_cell

RUN_KEY = "hw3_run"  # notebook metadata of a `make run` notebook: the sources it ran


def sources_fingerprint(nb, link_cell_aside: bool = True) -> str:
    """The cells' types and sources: what a person edits (outputs, counts and metadata aside). The Colab link cell
    is left out, so that pasting the link after a run does not make the run stale."""
    return fingerprint([f"{cell['cell_type']}:{cell['source']}" for cell in nb["cells"]
                        if not (link_cell_aside and is_link_cell(cell))])


def run_stamp_metadata(nb) -> dict:
    """What `make run` writes into the notebook it executed: the fingerprint of the sources it ran."""
    return {"sources_sha256_except_link": sources_fingerprint(nb)}


def edited_after_run(nb) -> bool:
    """Whether someone changed a cell of a `make run` notebook after the run that wrote it (the link cell aside;
    a notebook stamped before the link was set aside compares every cell)."""
    stamp = nb.get("metadata", {}).get(RUN_KEY, {})
    if "sources_sha256_except_link" in stamp:
        return stamp["sources_sha256_except_link"] != sources_fingerprint(nb)
    return "sources_sha256" in stamp and stamp["sources_sha256"] != sources_fingerprint(nb, link_cell_aside=False)


def first_difference(a, b) -> int | None:
    """The first cell (from 1) whose type or source differs between two notebooks, or None; the Colab link cell,
    where both have it in the same place, is not compared."""
    pairs = list(zip(a["cells"], b["cells"], strict=False))
    for number, (x, y) in enumerate(pairs, start=1):
        if is_link_cell(x) and is_link_cell(y):
            continue
        if x["cell_type"] != y["cell_type"] or x["source"].strip() != y["source"].strip():
            return number
    return None if len(a["cells"]) == len(b["cells"]) else len(pairs) + 1


def with_outputs_of(source, executed) -> dict:
    """The student's notebook as it is now (`source`: homework3.ipynb, its markdown and link cells included) with
    the execution counts and outputs of `make run`'s executed copy, code cell by code cell in order. The rubric then
    holds each code cell to what the kernel ran, so an edit to a markdown cell or the link needs no new run, and an
    edit to code is caught."""
    result = json.loads(json.dumps(executed))
    result.get("metadata", {}).pop(RUN_KEY, None)  # the stamp is of build/'s copy, not of this merge
    ran = iter([cell for cell in result["cells"] if cell["cell_type"] == "code"])
    cells = []
    for cell in json.loads(json.dumps(source["cells"])):
        if cell["cell_type"] == "code":
            done = next(ran, None)
            cell["execution_count"] = done.get("execution_count") if done else None
            cell["outputs"] = done.get("outputs", []) if done else []
            cell["metadata"] = done.get("metadata", {}) if done else cell.get("metadata", {})
        cells.append(cell)
    result["cells"] = cells
    return result
