"""make's entry point: python -m hw3tools run | check | zip | study."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from hw3tools.check import check, make_zip
from hw3tools.notebook import NOTEBOOK, ROOT, RunFailed, run_notebook


def study_command(jobs: int | None) -> int:
    import torch

    from hw3tools.study import STUDY_DIR, plan, run_study

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if jobs is None:
        jobs = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    if jobs < 1:
        print(f"error: --jobs must be >= 1, got {jobs}")
        return 1
    summary = run_study(plan(), STUDY_DIR, jobs=jobs, device=device)
    print(f"wrote {STUDY_DIR / 'summary.json'} ({len(summary['configs'])} configurations)")
    return 0


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="python -m hw3tools", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "check", "zip", "study"])
    parser.add_argument("--out", type=Path, default=ROOT, help="folder for build/, figures/ and report.md")
    parser.add_argument("--jobs", type=int, default=None, help="study: runs in parallel (default: 2 on a CPU "
                        "with at least 2 cores, else 1; 1 on a GPU)")
    args = parser.parse_args(argv)
    build = args.out / "build"
    if args.command == "study":
        return study_command(args.jobs)
    if args.command == "run":
        try:
            executed = run_notebook(NOTEBOOK, args.out)
        except RunFailed as failure:
            print(f"error: {failure}")
            return 1
        print(f"wrote {executed}, {build / 'homework3.html'}, {args.out / 'report.md'}, {build / 'metrics.json'}")
        return 0
    executed = build / "homework3.ipynb"
    if not executed.exists():
        print(f"error: {executed} does not exist; run `make run` first")
        return 1
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
