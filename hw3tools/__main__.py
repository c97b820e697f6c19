"""make's entry point: python -m hw3tools run | check | zip | report | record | tolerances | study."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import nbformat

from hw3_helpers import write_atomically
from hw3tools import report
from hw3tools.check import check, make_zip
from hw3tools.notebook import NOTEBOOK, ROOT, RunFailed, export_html, export_report, run_notebook
from hw3tools.study import STUDY_DIR, plan, run_study

COMMANDS = {
    "run": "execute the notebook headless; its report is rendered from this run's metrics",
    "check": "the grading rubric, rule by rule, for the last run",
    "zip": "check, then the Moodle archive",
    "report": "render the last run's report from its metrics again (after a run made another way, or an edit)",
    "record": "developers: make the last run the record that the committed notebook's report quotes",
    "tolerances": "developers: measure how far runs on other thread counts fall from the record",
    "study": "the multi-seed study of variants and levers (resumes where it stopped)",
}


def study_command(jobs: int | None) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if jobs is None:
        jobs = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    if jobs < 1:
        print(f"error: --jobs must be >= 1, got {jobs}")
        return 1
    summary = run_study(plan(), STUDY_DIR, jobs=jobs, device=device)
    print(f"wrote {STUDY_DIR / 'summary.json'} ({len(summary['configs'])} configurations) and "
          f"{', '.join(str(p) for p in report_study_figures(summary))}")
    if report.RECORD.exists():  # the committed report quotes the study: keep it in step
        render_committed_report()
        print(f"rendered {NOTEBOOK.name}'s report from {report.RECORD} and the new summary")
    return 0


def report_study_figures(summary: dict) -> list[Path]:
    """The study's figures, as the notebook draws them, into figures/."""
    import matplotlib

    matplotlib.use("Agg")
    import hw3_helpers

    return [hw3_helpers.save_figure(fig, name) for name, fig in hw3_helpers.study_figures(summary).items()]


def rerender(out: Path) -> Path:
    """The executed notebook's report cells rendered from its run's metrics; HTML and report.md exported again."""
    build = out / "build"
    executed = build / "homework3.ipynb"
    nb = nbformat.read(executed, as_version=4)
    report.render_into(nb, report.load_json(build / "metrics.json"))
    write_atomically(executed, nbformat.writes(nb))
    export_html(executed, build / "homework3.html", images_from=out)
    export_report(executed, out / "report.md")
    return executed


def render_committed_report() -> None:
    """The source notebook's report rendered from the record and the committed study."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    report.render_into(nb, report.load_json(report.RECORD))
    nbformat.write(nb, NOTEBOOK)


def record_command(out: Path) -> int:
    """build/metrics.json becomes report/record.json; the source notebook's report is rendered from it."""
    metrics = out / "build" / "metrics.json"
    shutil.copyfile(metrics, report.RECORD)
    render_committed_report()
    print(f"recorded {metrics} as {report.RECORD}; {NOTEBOOK.name}'s report is rendered from it and {STUDY_DIR}")
    return 0


def tolerances_command(out: Path, thread_counts: list[int]) -> int:
    """Run the notebook once per thread count and write each family's largest difference from the record."""
    spec = report.load_json(report.TOLERANCES)
    record = report.load_json(report.RECORD)
    for threads in thread_counts:
        target = out / "build" / "tolerance-runs" / f"threads-{threads}"
        print(f"--- run with {threads} threads into {target}")
        run_notebook(NOTEBOOK, target, env={"HW3_NUM_THREADS": str(threads)})
        measured = report.deviations(report.load_json(target / "build" / "metrics.json"), record, spec["families"])
        for family, (difference, path) in measured.items():
            spec["families"][family].setdefault("measured", {})[f"threads={threads}"] = {"difference": difference,
                                                                                        "largest_at": path}
    for family in spec["families"].values():
        family["tolerance"] = report.tolerance(family, spec["margin"])
    write_atomically(report.TOLERANCES, json.dumps(spec, indent=1) + "\n")
    print(f"wrote {report.TOLERANCES}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw3tools", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=COMMANDS, help="; ".join(f"{k}: {v}" for k, v in COMMANDS.items()))
    parser.add_argument("--out", type=Path, default=ROOT, help="folder for build/, figures/ and report.md")
    parser.add_argument("--jobs", type=int, default=None, help="study: runs in parallel (default: 2 on a CPU "
                        "with at least 2 cores, else 1; 1 on a GPU)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="tolerances: thread counts to run")
    args = parser.parse_args(argv)
    build = args.out / "build"
    if args.command == "study":
        return study_command(args.jobs)
    if args.command == "tolerances":  # needs the record, not a last run
        return tolerances_command(args.out, args.threads)
    if args.command == "run":
        try:
            executed = run_notebook(NOTEBOOK, args.out, report_template=report.TEMPLATE)
        except RunFailed as failure:
            print(f"error: {failure}")
            return 1
        print(f"wrote {executed}, {build / 'homework3.html'}, {args.out / 'report.md'}, {build / 'metrics.json'}")
        return 0
    executed = build / "homework3.ipynb"
    if not executed.exists():
        print(f"error: {executed} does not exist; run `make run` first")
        return 1
    if args.command == "report":
        print(f"rendered the report of {rerender(args.out)} from {build / 'metrics.json'}")
        return 0
    if args.command == "record":
        return record_command(args.out)
    results = check(executed, build / "metrics.json", args.out / "report.md")
    for name, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""))
    failed = [name for name, passed, _ in results if not passed]
    if failed:
        refusal = "; no zip written" if args.command == "zip" else ""
        print(f"check failed: {len(failed)} of {len(results)} rules{refusal}")
        return 1
    print(f"check passed: {len(results)} rules")
    if args.command == "check":
        return 0
    members = make_zip(executed, args.out, build / "hw3_submission.zip")
    print(f"wrote {build / 'hw3_submission.zip'}: {', '.join(members)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
