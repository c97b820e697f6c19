"""`python -m hw3tools measure`: how long the suite takes on this machine, beside the targets and the figures of the
version before the one-run-per-notebook suite, printed as a table and written into MAINTAINING.md (between its
`timings` markers), so the guide quotes what this script last measured and nothing else.

    python -m hw3tools measure            # the fast suite and the whole suite (`make test`), in the working tree
    python -m hw3tools measure --ci       # also `.ci/run` on a fresh clone of HEAD (builds its own .venv)
    python -m hw3tools measure --fast     # the fast suite alone
    python -m hw3tools measure --ci-only  # `.ci/run` alone; the table's other rows stay as they were
    python -m hw3tools measure --repeat 3 # each row three times: the best and the worst

Run it on an otherwise idle machine after `make run`: with a notebook running beside it the figures mean nothing.
Even idle, a shared machine gives the same suite times that differ by a tenth from one run to the next, and hosts
differ more (the graded training alone took 88 s on one and 120-145 s on another): `--repeat` shows how far, and
only rows measured on the same host compare.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hw3_helpers import write_atomically

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "MAINTAINING.md"
START, END = "<!-- timings:start -->", "<!-- timings:end -->"
# what -> (the target, the figure of the version before: a fresh clone after `make run`, two cores)
MEASURES = {
    "the fast suite (`-m \"not e2e\"`)": ("<= 45 s", "95-139 s"),
    "`make test` (the whole suite)": ("<= 300 s", "596-708 s idle, 959 s beside a run"),
    "`.ci/run` on a fresh clone": ("<= 600 s", "851-1,020 s"),
}


def timed(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Seconds the command took, and its last line (pytest's summary)."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, encoding="utf-8",
                          env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    lines = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed (exit {done.returncode}):\n" + "\n".join(lines[-30:]))
    summaries = [line for line in lines if re.search(r"\d+ passed", line)]  # pytest's last word, not pip's
    return seconds, summaries[-1] if summaries else "exit 0"


def fresh_clone_ci() -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as folder:
        clone = Path(folder) / "hw3"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        return timed(["bash", ".ci/run"], clone, {"CI": "true"})


def repeated(measure, repeat: int) -> tuple[list[float], str]:
    """`measure()` `repeat` times: every duration, and the summary of the fastest run."""
    runs = [measure() for _ in range(repeat)]
    return [seconds for seconds, _ in runs], min(runs)[1]


def seconds_text(seconds: list[float]) -> str:
    if len(seconds) == 1:
        return f"{seconds[0]:.0f} s"
    return f"best {min(seconds):.0f} s, worst {max(seconds):.0f} s of {len(seconds)} runs"


def table(measured: dict[str, tuple[list[float], str]], earlier: dict[str, str] | None = None) -> str:
    """The table: each row this run measured, dated; a row it did not measure keeps what the guide said of it."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    rows = ["| what | target | before | now | summary (of the fastest run) |", "| --- | --- | --- | --- | --- |"]
    for what, (target, before) in MEASURES.items():
        if what in measured:
            seconds, summary = measured[what]
            rows.append(f"| {what} | {target} | {before} | {seconds_text(seconds)} ({stamp}, {os.cpu_count()} cores, "
                        f"Python {sys.version.split()[0]}) | {summary.strip('= ')} |")
        else:
            rows.append((earlier or {}).get(what) or f"| {what} | {target} | {before} | not measured yet | |")
    return "Measured by `python -m hw3tools measure`, each row when its date says.\n\n" + "\n".join(rows)


def rows_in_guide(guide: Path = GUIDE) -> dict[str, str]:
    """The table's rows as the guide has them now, by what they measure."""
    text = guide.read_text(encoding="utf-8")
    return {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in MEASURES}


def write_into_guide(text: str, guide: Path = GUIDE) -> None:
    current = guide.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(current):
        raise SystemExit(f"{guide} has no {START} ... {END} markers: add them where the table goes")
    write_atomically(guide, pattern.sub(lambda _: f"{START}\n{text}\n{END}", current))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw3tools measure", description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="also time .ci/run on a fresh clone of HEAD")
    parser.add_argument("--fast", action="store_true", help="the fast suite alone")
    parser.add_argument("--ci-only", action="store_true", help=".ci/run on a fresh clone alone; the other rows stay")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (the table shows the best and the worst)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be a whole number >= 1, got {args.repeat}")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    measured = {}
    if not args.ci_only:
        measured["the fast suite (`-m \"not e2e\"`)"] = repeated(lambda: timed(pytest + ["-m", "not e2e"], ROOT),
                                                                 args.repeat)
        if not args.fast:
            measured["`make test` (the whole suite)"] = repeated(lambda: timed(pytest, ROOT), args.repeat)
    if args.ci or args.ci_only:
        measured["`.ci/run` on a fresh clone"] = repeated(fresh_clone_ci, args.repeat)
    text = table(measured, rows_in_guide())
    print(text)
    write_into_guide(text)
    print(f"wrote the table into {GUIDE.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
