"""The rubric and the submission: check an executed run, and zip it for Moodle."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nbformat

from hw3tools.notebook import (
    EMBEDDED_TESTS,
    ROOT,
    fingerprint,
    handed_out_lines,
    linked_images,
    report_text,
    report_words,
)
from hw3tools.report import CLAIMS, FIELD, TEMPLATE, broken_claims, contradictions, quoted_sources

REPORT_ELEMENTS = {  # required element -> words that show it is there
    "cross-entropy sentence": ("cross-entropy", "cross entropy", "cross_entropy"),
    "generation sentence": ("greedy", "argmax"),
    "nucleus sampling vs greedy": ("nucleus", "top-p", "top_p"),
    "temperature paragraph": ("temperature",),
    "per-position accuracy paragraph": ("per-position", "per position"),
}


def check(executed: Path, metrics_path: Path, report_path: Path, min_accuracy: float = 0.80,
          template: Path = TEMPLATE) -> list[tuple]:
    """The rubric, rule by rule, for an executed notebook: a list of (rule, passed, detail)."""


    nb = nbformat.read(executed, as_version=4)
    manifest = json.loads((ROOT / "tests" / "handed_out.json").read_text())
    code = [c for c in nb.cells if c.cell_type == "code"]
    results = []

    def rule(name, passed, detail=""):
        results.append((name, bool(passed), detail))

    lines = handed_out_lines(nb)
    rule("[do not modify] cells, embedded tests and given code intact",
         fingerprint(lines) == manifest["sha256"], f"{len(lines)} handed-out lines compared")
    errors = [i for i, c in enumerate(code, 1) for o in c.outputs if o.output_type == "error"]
    rule("no error output in any cell", not errors, f"errors in cells {errors}" if errors else "")
    counts = [c.execution_count for c in code]
    rule("execution counts run 1..N in order", counts == list(range(1, len(code) + 1)),
         f"{len(code)} code cells")
    test_calls = [f"{name}()" for name in EMBEDDED_TESTS]
    ran = [call for call in test_calls
           if any(f"\n{call}" in c.source and c.execution_count and not any(o.output_type == "error" for o in c.outputs)
                  for c in code)]
    rule("all five embedded tests ran and passed", len(ran) == 5, f"{len(ran)}/5")
    metrics = json.loads(Path(metrics_path).read_text()) if Path(metrics_path).exists() else {}
    accuracy = metrics.get("final_test_accuracy", 0.0)
    rule("test accuracy >= 0.65 (assignment)", accuracy >= 0.65, f"{accuracy:.4f}")
    rule(f"test accuracy >= {min_accuracy:.2f} (ours)", accuracy >= min_accuracy, f"{accuracy:.4f}")
    report = report_text(nb)
    words = report_words(report)
    rule("report has 300-600 words", 300 <= words <= 600, f"{words} words")
    missing = [name for name, keys in REPORT_ELEMENTS.items() if not any(k in report.lower() for k in keys)]
    rule("report has its five required elements", not missing, f"missing: {missing}" if missing else "")
    quoted = quoted_sources(metrics)
    problems = contradictions(report, Path(template).read_text(), quoted) if metrics else ["no metrics"]
    rule("every number in the report is this run's", not problems,
         "\n      ".join(problems + ["`make report` renders the report from this run's metrics"]) if problems else
         f"{len(FIELD.findall(Path(template).read_text()))} numbers")
    broken = broken_claims(quoted) if metrics else ["no metrics"]
    rule("every claim of the report holds for this run", not broken, "\n      ".join(broken) if broken else
         f"{len(CLAIMS)} claims")
    exported = Path(report_path).read_text() if Path(report_path).exists() else None
    rule("report.md is the exported report", exported == report)
    images = linked_images("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    absent = [image for image in images if not (Path(report_path).parent / image).exists()]
    rule("every image the notebook links exists", not absent, f"missing: {absent}" if absent else
         f"{len(images)} images")
    return results


def make_zip(executed: Path, out_root: Path, target: Path) -> list[str]:
    """The Moodle archive: executed notebook, companion module, report, the committed study the notebook draws,
    and the figures the notebook links."""


    nb = nbformat.read(executed, as_version=4)
    images = sorted(set(linked_images("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))))
    members = {"homework3.ipynb": Path(executed), "hw3_helpers.py": ROOT / "hw3_helpers.py",
               "report.md": out_root / "report.md", "study/summary.json": ROOT / "study" / "summary.json"}
    members.update({image: out_root / image for image in images})
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # fixed stamp: same files, same zip
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    tmp.replace(target)
    return list(members)

