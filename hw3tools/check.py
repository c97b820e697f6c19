"""`make check` and `make zip` (`python -m hw3tools check|zip`): the rubric and the Moodle zip for the last run on
disk, `make run`'s or one saved from Jupyter. The rules and the builder themselves live in hw3_helpers, which the
notebook's last cell calls in Colab: one rubric, one zip, whichever route a student takes. Standard library and
hw3_helpers only: no .venv, no torch."""
from __future__ import annotations

from pathlib import Path

from hw3_helpers import (
    FAIL,
    RERUN,
    TODO,
    WARN,
    build_submission,
    check_submission,
    edited_after_run,
    print_verdicts,
    read_notebook,
    report_text,
    with_outputs_of,
    write_atomically,
)


def _bytes(path: Path) -> bytes | None:
    return Path(path).read_bytes() if Path(path).is_file() else None


ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_NAME = "homework3.ipynb"


def holds_a_run(nb) -> bool:
    """Whether a notebook was saved with outputs of a run (Jupyter's Run All, then save)."""
    return any(cell.get("execution_count") for cell in nb["cells"] if cell["cell_type"] == "code")


def choose_run(root: Path) -> tuple[str, Path] | None:
    """The run to check and zip: `make run`'s build/homework3.ipynb, or homework3.ipynb as Jupyter saved it after
    Run All; the newer of the two where both are there, said aloud, so that one run's files are never zipped with
    another's. None, with the reason printed, where there is neither."""
    executed, saved = root / "build" / NOTEBOOK_NAME, root / NOTEBOOK_NAME
    runs = [("`make run`", executed)] if executed.is_file() else []
    if saved.is_file() and holds_a_run(read_notebook(saved)):
        runs.append(("saved from Jupyter", saved))
    if not runs:
        print(f"error: no run to check: {executed} does not exist and {saved} holds no outputs. Run `make run` "
              f"(or `python -m hw3tools run`), or run all cells in Jupyter and save the notebook.")
        return None
    runs.sort(key=lambda run: run[1].stat().st_mtime, reverse=True)
    (how, path), others = runs[0], runs[1:]
    left_out = f"; newer than {others[0][1].relative_to(root)} ({others[0][0]}), which is left out" if others else ""
    print(f"the run: {path.relative_to(root)} ({how}){left_out}")
    return how, path


MAKE_RUN_AGAIN = "run `make run` again (`python -m hw3tools run`), then zip again"


def submission(root: Path) -> dict | None:
    """The run to check and zip, as the rubric takes it: the notebook, its metrics, the report.md that must be its
    report (None where the zip writes it), and the route's way to run again. A `make run` notebook is taken as
    homework3.ipynb is now (markdown and link included) with the run's outputs: its code is then held to what the
    kernel ran. None, with the reason printed, where there is no run or `make run`'s copy was edited."""
    chosen = choose_run(root)
    if chosen is None:
        return None
    how, path = chosen
    nb = read_notebook(path)
    if path == root / NOTEBOOK_NAME:  # saved from Jupyter: the notebook holds its own run
        return {"nb": nb, "metrics": _bytes(root / "build" / "metrics.json"), "report_md": None, "rerun": None}
    if edited_after_run(nb):
        print(f"error: {path} was edited after its run, so it is not what the run produced. Edits belong in "
              f"{NOTEBOOK_NAME}: copy yours there, rename {path}, and run again.")
        return None
    merged = with_outputs_of(read_notebook(root / NOTEBOOK_NAME), nb)
    report = root / "report.md"
    report_md = report.read_text(encoding="utf-8") if report.is_file() else ""
    if report_md != report_text(merged) and report_md == report_text(nb):  # a markdown edit in the report since:
        report_md = None  # the zip writes it from the merged notebook
    return {"nb": merged, "metrics": _bytes(root / "build" / "metrics.json"), "report_md": report_md,
            "rerun": MAKE_RUN_AGAIN}


def verdicts(root: Path) -> list[tuple[str, str, str]] | None:
    """`make check`'s verdicts on the run on disk, rule by rule (None where there is no run to check)."""
    run = submission(root)
    if run is None:
        return None
    return check_submission(run["nb"], run["metrics"], root, run["report_md"], rerun=run["rerun"] or RERUN)


def main(argv: list[str], root: Path = ROOT) -> int:
    """`make check` (the rubric, rule by rule) and `make zip` (the same, then build/hw3_submission.zip)."""
    command = argv[0]
    if command == "check":
        results = verdicts(root)
        if results is None:
            return 1
        print_verdicts(results)
        failed = [name for name, status, _ in results if status == FAIL]
        todo = [name for name, status, _ in results if status == TODO]
        warned = [name for name, status, _ in results if status == WARN]
        if failed:
            print(f"check failed: {len(failed)} of {len(results)} rules")
            return 1
        print(f"check: {len(results) - len(todo) - len(warned)} rules pass"
              + (f", {len(warned)} warned: {', '.join(warned)}" if warned else "")
              + (f", {len(todo)} to do: {', '.join(todo)}" if todo else ""))
        return 1 if todo else 0
    run = submission(root)
    if run is None:
        return 1
    _, target = build_submission(run["nb"], run["metrics"], root, root / "build" / "hw3_submission.zip",
                                 run["report_md"], rerun=run["rerun"] or RERUN)
    if target is None:
        return 1
    report = root / "report.md"
    if not report.is_file() or report.read_text(encoding="utf-8") != report_text(run["nb"]):
        write_atomically(report, report_text(run["nb"]))  # the zip's report.md, beside the notebook
        print(f"wrote {report} from the zipped notebook's report")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:2] or ["check"]))
