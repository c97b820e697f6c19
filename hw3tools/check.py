"""`make check` and `make zip` (`python -m hw3tools check|zip`): the rubric and the Moodle zip for the last run on
disk, `make run`'s or one saved from Jupyter. The rules and the builder themselves live in hw3_helpers, which the
notebook's last cell calls in Colab: one rubric, one zip, whichever route a student takes. Standard library and
hw3_helpers only: no .venv, no torch."""
from __future__ import annotations

from pathlib import Path

from hw3_helpers import (  # noqa: F401 - the rubric's parts, under the names the tests use
    COLAB_TAG,
    FAIL,
    PASS,
    TODO,
    build_submission,
    check_submission,
    colab_link,
    edited_after_run,
    handed_out_intact,
    plot_description,
    print_verdicts,
    prompts_in,
    read_notebook,
    report_text,
    submission_files,
    with_link_of,
    words,
    write_atomically,
    write_zip,
)


def _bytes(path: Path) -> bytes | None:
    return Path(path).read_bytes() if Path(path).is_file() else None


def check(executed: Path, metrics_path: Path, report_path: Path, min_accuracy: float = 0.80,
          source: Path | None = None) -> list[tuple[str, str, str]]:
    """The rubric for a `make run` notebook beside its metrics, figures and report.md; with `source`, the run must
    be of that notebook as it is now (its link cell aside), and the link is read from it."""
    nb = read_notebook(executed)
    if source is not None:
        source_nb = read_notebook(source)
        nb = with_link_of(nb, source_nb)
    report = Path(report_path).read_text(encoding="utf-8") if Path(report_path).exists() else ""
    return check_submission(nb, _bytes(metrics_path), Path(report_path).parent, report,
                            source_nb if source is not None else None, min_accuracy)


def make_zip(executed: Path, out_root: Path, target: Path, source: Path | None = None) -> list[str]:
    """The Moodle archive of a run (no check: see `check`); with `source`, its notebook carries the link of
    `source`. Returns the names of its files."""
    nb = read_notebook(executed)
    if source is not None:
        nb = with_link_of(nb, read_notebook(source))
    files = submission_files(nb, _bytes(Path(out_root) / "build" / "metrics.json"), Path(out_root))
    write_zip(files, target)
    return list(files)


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


def main(argv: list[str], root: Path = ROOT) -> int:
    """`make check` (the rubric, rule by rule) and `make zip` (the same, then build/hw3_submission.zip)."""
    command = argv[0]
    chosen = choose_run(root)
    if chosen is None:
        return 1
    how, path = chosen
    nb, source, report_md = read_notebook(path), None, None
    if path != root / NOTEBOOK_NAME:  # `make run`'s copy: a run of homework3.ipynb, beside the report.md it wrote
        if edited_after_run(nb):
            print(f"error: {path} was edited after its run, so it is not what the run produced. Edits belong in "
                  f"{NOTEBOOK_NAME}: copy yours there, rename {path}, and run again.")
            return 1
        source = read_notebook(root / NOTEBOOK_NAME)
        nb = with_link_of(nb, source)  # the link is pasted into homework3.ipynb after the run
        report = root / "report.md"
        report_md = report.read_text(encoding="utf-8") if report.is_file() else ""
    metrics = _bytes(root / "build" / "metrics.json")
    if command == "check":
        results = check_submission(nb, metrics, root, report_md, source)
        print_verdicts(results)
        failed = [name for name, status, _ in results if status == FAIL]
        todo = [name for name, status, _ in results if status == TODO]
        if failed:
            print(f"check failed: {len(failed)} of {len(results)} rules")
            return 1
        print(f"check: {len(results) - len(todo)} rules pass" + (f", {len(todo)} to do: {', '.join(todo)}"
                                                                 if todo else ""))
        return 1 if todo else 0
    _, target = build_submission(nb, metrics, root, root / "build" / "hw3_submission.zip", report_md, source)
    if target is None:
        return 1
    if report_md is None:  # a run saved from Jupyter: report.md, like the zip's, is its report
        write_atomically(root / "report.md", report_text(nb))
        print(f"wrote {root / 'report.md'} from {path.name}'s report")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:2] or ["check"]))
