"""A run against the record: report/record.json holds the metrics of one run here, report/tolerances.json how far
another run may fall from it, each tolerance with the differences measured on other thread counts that justify it.

A seeded run gives the same numbers every time on the same machine, but not bit for bit on another one (CPU model,
thread count, torch version and device change the last bits, and the training steps carry that into the third
decimal). So a fresh run is held to the record within measured tolerances, never exactly.
`python -m hw3tools tolerances` measures them; `python -m hw3tools record` makes the last run the record.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from hw3_helpers import file_digest, read_notebook, recorded_run_problem
from hw3tools.notebook import ROOT

REPORT_DIR = ROOT / "report"
RECORD = REPORT_DIR / "record.json"
TOLERANCES = REPORT_DIR / "tolerances.json"


def flatten(value, path: str = "") -> dict[str, float]:
    """Numeric leaves by path: `sampling_study[t=1.0, top_p=0.9].bayes_agreement`, `per_position_accuracy[3]`."""
    if isinstance(value, bool):
        return {path: float(value)}
    if isinstance(value, (int, float)):
        return {path: float(value)}
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            label = item.get("setting") or (f"{item['group']}: {item['name']}" if "group" in item else index) \
                if isinstance(item, dict) else index
            out.update(flatten(item, f"{path}[{label}]"))
        return out
    return {}


# Timings are not results; the report's numbers and claims repeat metrics that are compared already.
IGNORED = re.compile(r"seconds|speedup|torch_version|^device$|^kv_cache\.lengths|^report_")


def family_of(path: str, families: dict) -> str | None:
    return next((name for name, spec in families.items() if re.search(spec["paths"], path)), None)


def deviations(metrics: dict, record: dict, families: dict) -> dict[str, tuple[float, str]]:
    """Per family, the largest absolute difference between a run and the record, and where it is."""
    run, recorded = flatten(metrics), flatten(record)
    paths = {p for p in recorded | run if not IGNORED.search(p)}
    largest: dict[str, tuple[float, str]] = {}
    for path in sorted(paths):
        family = family_of(path, families)
        if family is None:
            raise KeyError(f"no tolerance family covers the metric {path}; add one in report/tolerances.json")
        if path not in run or path not in recorded:
            difference = math.inf
        else:
            difference = abs(run[path] - recorded[path])
        if difference > largest.get(family, (-1.0, ""))[0]:
            largest[family] = (difference, path)
    return largest


def tolerance(family: dict, margin: float) -> float:
    """max(floor, margin x every difference measured or reported), rounded up to two significant digits."""
    seen = [m["difference"] for m in family.get("measured", {}).values()] + list(family.get("reported", {}).values())
    value = max([family["floor"]] + [margin * difference for difference in seen])
    if value <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - 1)
    return float(f"{math.ceil(value / step - 1e-9) * step:.2g}")


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_metrics(out: Path) -> dict:
    """A run's numbers as the record holds them: the homework's build/metrics.json, with the appendix's
    build/appendix_metrics.json merged in where the appendix analysed that same run (their keys are distinct)."""
    metrics_path = Path(out) / "build" / "metrics.json"
    metrics = load_json(metrics_path)
    appendix = Path(out) / "build" / "appendix_metrics.json"
    if appendix.is_file():
        numbers = load_json(appendix)
        if numbers.get("homework_run_id") == file_digest(metrics_path.read_bytes())[:12]:
            metrics.update(numbers)
    return metrics


def run_problem(executed: Path, report: Path, source: Path) -> str | None:
    """Why an executed notebook and a report.md are not one run of `source` as it is now, or None if they are
    (hw3_helpers.recorded_run_problem decides)."""
    problem = recorded_run_problem(read_notebook(executed), read_notebook(source), report.read_text(encoding="utf-8"))
    return None if problem is None else f"{executed}: {problem}"
