"""The commands behind `python -m hw3tools` (and make) that need .venv's Python: run, homework, appendix, study,
clean, record, tolerances (their one list, with what each does, is COMMANDS in hw3tools/__main__.py, which builds
.venv first). `check` and `zip` read JSON only and run without .venv: hw3tools/check.py."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from hw3_helpers import write_atomically
from hw3tools import check, record
from hw3tools.notebook import (
    APPENDIX,
    NOTEBOOK,
    ROOT,
    EditedNotebook,
    RunFailed,
    edited_since_run,
    refuse_to_overwrite_edits,
    run_notebook,
)
from hw3tools.study import STUDY_DIR, describe_plan, plan, plan_status, run_study


def study_figures(summary: dict) -> list[Path]:
    """The study's figures, as the appendix draws them, into appendix/figures/."""
    import matplotlib

    matplotlib.use("Agg")
    import hw3_appendix

    return [hw3_appendix.save_figure(fig, name) for name, fig in hw3_appendix.study_figures(summary).items()]


def study_command(jobs: int | None, plan_only: bool = False) -> int:
    if plan_only:
        print(describe_plan(plan_status(plan())))
        return 0
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if jobs is None:
        jobs = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    if jobs < 1:
        print(f"error: --jobs must be >= 1, got {jobs}")
        return 1
    summary = run_study(plan(), STUDY_DIR, jobs=jobs, device=device)
    print(f"wrote {STUDY_DIR / 'summary.json'} ({len(summary['configs'])} configurations) and "
          f"{', '.join(str(p) for p in study_figures(summary))}")
    return 0


def tolerances_command(out: Path, thread_counts: list[int]) -> int:
    """Run both notebooks once per thread count and write each family's largest difference from the record."""
    spec = record.load_json(record.TOLERANCES)
    recorded = record.load_json(record.RECORD)
    for threads in thread_counts:
        target = out / "build" / "tolerance-runs" / f"threads-{threads}"
        print(f"--- run with {threads} threads into {target}")
        for notebook in (NOTEBOOK, APPENDIX):
            run_notebook(notebook, target, env={"HW3_NUM_THREADS": str(threads)})
        measured = record.deviations(record.run_metrics(target), recorded, spec["families"])
        for family, (difference, path) in measured.items():
            spec["families"][family].setdefault("measured", {})[f"threads={threads}"] = {"difference": difference,
                                                                                        "largest_at": path}
    for family in spec["families"].values():
        family["tolerance"] = record.tolerance(family, spec["margin"])
    write_atomically(record.TOLERANCES, json.dumps(spec, indent=1) + "\n")
    print(f"wrote {record.TOLERANCES}")
    return 0


def record_command(out: Path, source: Path = NOTEBOOK, target: Path | None = None) -> int:
    """Developers: make the last run the record. The record and the committed report.md must come from one run of
    the notebook as it is now, so this refuses a report.md that is not that run's report (edited by hand, or left
    by another run) and a run of an older notebook; the tests then hold fresh runs to the record."""
    target = target or record.RECORD
    executed, metrics, report = out / "build" / "homework3.ipynb", out / "build" / "metrics.json", out / "report.md"
    missing = [str(path) for path in (executed, metrics, report) if not path.exists()]
    if missing:
        print(f"error: {', '.join(missing)} missing: run `make run` first")
        return 1
    problem = record.run_problem(executed, report, source)
    if problem:
        print(f"error: {problem}; nothing was recorded")
        return 1
    words = len(report.read_text(encoding="utf-8").split())  # as `wc -w report.md` counts: the README quotes it
    write_atomically(target, json.dumps({**record.run_metrics(out), "report_words": words}, indent=2,
                                        sort_keys=True) + "\n")
    print(f"recorded {metrics} (with the appendix's numbers, where they are that run's) as {target}, beside "
          f"{report}, the same run's report: commit both")
    return 0


def clean_command(out: Path) -> int:
    for executed in (out / "build" / "homework3.ipynb", out / "build" / "appendix.ipynb"):
        if executed.exists() and edited_since_run(executed):
            print(f"error: {executed} was edited after its run; `clean` would delete those edits. Copy them into "
                  f"the notebook it ran, or rename the file, then clean again. Nothing was removed.")
            return 1
    for path in ("build", ".pytest_cache", ".ruff_cache", "__pycache__", "tests/__pycache__", "bench/__pycache__",
                 "hw3tools/__pycache__"):
        shutil.rmtree(out / path, ignore_errors=True)
    print("removed build/ and the caches (.venv kept)")
    return 0


def run_command(out: Path, notebooks: tuple[Path, ...]) -> int:
    """Run each notebook in turn (the appendix reads the homework's run, so it comes second)."""
    build = out / "build"
    try:
        for notebook in notebooks:
            refuse_to_overwrite_edits(build / f"{notebook.stem}.ipynb")
        for notebook in notebooks:
            print(f"--- {notebook.relative_to(ROOT)}")
            executed = run_notebook(notebook, out)
            written = [executed, build / f"{notebook.stem}.html"]
            if notebook == NOTEBOOK:
                written += [out / "report.md", build / "metrics.json", build / "model.pt"]
            print(f"wrote {', '.join(str(path) for path in written)}")
    except (RunFailed, EditedNotebook) as failure:
        print(f"error: {failure}")
        return 1
    return 0


def main(argv=None) -> int:
    from hw3tools.__main__ import COMMANDS

    handled = ("run", "homework", "appendix", "check", "zip", "study", "clean", "record", "tolerances")
    parser = argparse.ArgumentParser(prog="python -m hw3tools", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=[command for command in COMMANDS if command in handled])
    parser.add_argument("--out", type=Path, default=ROOT, help="folder for build/, figures/ and report.md")
    parser.add_argument("--jobs", type=int, default=None, help="study: runs in parallel (default: 2 on a CPU "
                        "with at least 2 cores, else 1; 1 on a GPU)")
    parser.add_argument("--plan", action="store_true", help="study: print which runs it reuses and which it runs "
                        "(again), without training")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="tolerances: thread counts to run")
    args = parser.parse_args(argv)
    if args.command == "study":
        return study_command(args.jobs, args.plan)
    if args.command == "tolerances":
        return tolerances_command(args.out, args.threads)
    if args.command == "clean":
        return clean_command(args.out)
    if args.command in ("run", "homework", "appendix"):
        return run_command(args.out, {"run": (NOTEBOOK, APPENDIX), "homework": (NOTEBOOK,),
                                      "appendix": (APPENDIX,)}[args.command])
    if args.command == "record":
        return record_command(args.out)
    return check.main([args.command], args.out)


if __name__ == "__main__":
    raise SystemExit(main())
