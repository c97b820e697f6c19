"""The rubric and the submission: check an executed run, and zip it for Moodle."""
from __future__ import annotations

import ast
import json
import re
import zipfile
from pathlib import Path

import nbformat

from hw3tools.notebook import (
    EMBEDDED_TESTS,
    ROOT,
    first_difference,
    handed_out_cells,
    linked_images,
    report_text,
)

PASS, FAIL, TODO = "PASS", "FAIL", "TODO"  # TODO: a deliverable still open that does not block the zip
MANIFEST = ROOT / "tests" / "handed_out.json"
REPORT_ELEMENTS = {  # required element -> words that show it is there
    "cross-entropy sentence": ("cross-entropy", "cross entropy", "cross_entropy"),
    "generation sentence": ("greedy", "argmax"),
    "nucleus sampling vs greedy": ("nucleus", "top-p", "top_p"),
    "temperature paragraph": ("temperature",),
    "per-token accuracy paragraph": ("per-token", "per token", "per-position", "per position"),
}
COLAB_TAG = "colab-link"
COLAB_URL = re.compile(r"https://colab\.research\.google\.com/\S+")
PROMPTS = {"input", "getpass", "upload", "breakpoint", "set_trace"}  # calls that wait for a person


def words(text: str) -> int:
    """Words as `wc -w` counts them (and a grader's counter): runs of non-space, captions and links included."""
    return len(text.split())


def prompts_in(source: str) -> list[str]:
    """Calls in a code cell that would stop Run All to wait for a person: input(), getpass(), files.upload()..."""
    source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in PROMPTS:
                names.append(f"{name}() on line {node.lineno}")
    return names


def plot_description(nb) -> str | None:
    """The markdown cell right below the given per-token accuracy plot, or None if the next cell is not one (a
    heading there starts the next section: it is not a description of the plot)."""
    index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                  and "per_token_acc = calc_per_token_acc(" in c.source), None)
    below = nb.cells[index + 1] if index is not None and index + 1 < len(nb.cells) else None
    if below is None or below.cell_type != "markdown" or below.source.lstrip().startswith("#"):
        return None
    return below.source


def colab_link(nb) -> str | None:
    cell = next((c for c in nb.cells if COLAB_TAG in c.get("metadata", {}).get("tags", [])), None)
    match = COLAB_URL.search(cell.source) if cell is not None else None
    return match.group(0).rstrip(").,>") if match else None


def handed_out_intact(nb) -> tuple[bool, str]:
    """Every handed-out cell is there, unchanged (white space aside) and in order. Cells a student adds, tagged or
    not, are allowed anywhere: only a changed, moved or missing handed-out cell fails, and it is named."""
    expected = json.loads(MANIFEST.read_text(encoding="utf-8"))["cells"]
    present = iter(handed_out_cells(nb))
    for given in expected:
        if not any(fingerprint == given["sha256"] for fingerprint, _ in present):
            return False, f"the handed-out cell starting {given['first_line']!r} was changed, moved or removed"
    return True, f"{len(expected)} handed-out cells compared"


def check(executed: Path, metrics_path: Path, report_path: Path, min_accuracy: float = 0.80,
          source: Path | None = None) -> list[tuple[str, str, str]]:
    """The rubric, rule by rule, for an executed notebook: a list of (rule, PASS | FAIL | TODO, detail).

    With `source`, the executed notebook must also be a run of that notebook as it is now."""
    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    results = []

    def rule(name, passed, detail="", status_if_not=FAIL):
        results.append((name, PASS if passed else status_if_not, detail))

    if source is not None:
        differs = first_difference(nbformat.read(source, as_version=4), nb)
        rule(f"the run is of {Path(source).name} as it is now", differs is None,
             f"cell {differs} changed since the run: run it again (`make run`)" if differs else "")
    intact, detail = handed_out_intact(nb)
    rule("[do not modify] cells, embedded tests and given code intact", intact, detail)
    errors = [i for i, c in enumerate(code, 1) for o in c.outputs if o.output_type == "error"]
    rule("no error output in any cell", not errors, f"errors in cells {errors}" if errors else "")
    counts = [c.execution_count for c in code]
    rule("execution counts run 1..N in order", counts == list(range(1, len(code) + 1)), f"{len(code)} code cells")
    test_calls = [f"{name}()" for name in EMBEDDED_TESTS]
    ran = [call for call in test_calls
           if any(f"\n{call}" in c.source and c.execution_count and not any(o.output_type == "error" for o in c.outputs)
                  for c in code)]
    rule("all five embedded tests ran and passed", len(ran) == 5, f"{len(ran)}/5")
    prompts = [f"code cell {i}: {', '.join(found)}" for i, c in enumerate(code, 1) if (found := prompts_in(c.source))]
    rule("no cell waits for input (Run All goes start to end)", not prompts, "; ".join(prompts))
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8")) if Path(metrics_path).exists() else {}
    accuracy = metrics.get("final_test_accuracy", 0.0)
    rule("test accuracy >= 0.65 (assignment)", accuracy >= 0.65, f"{accuracy:.4f}")
    rule(f"test accuracy >= {min_accuracy:.2f} (ours)", accuracy >= min_accuracy, f"{accuracy:.4f}")
    description = plot_description(nb)
    rule("a markdown cell right below the per-token plot describes it",
         description is not None and words(description) >= 40,
         "none" if description is None else f"{words(description)} words")
    report = report_text(nb)
    count = words(report)
    rule("report has 300-600 words (as wc -w counts)", 300 <= count <= 600, f"{count} words")
    missing = [name for name, keys in REPORT_ELEMENTS.items() if not any(k in report.lower() for k in keys)]
    rule("report has its five required elements", not missing, f"missing: {missing}" if missing else "")
    claims = metrics.get("report_claims")
    broken = [f"{sentence!r}: {verdict}" for sentence, verdict in (claims or {}).items()
              if verdict not in ("holds", "no longer in the report")]
    rule("every claim of the report holds for this run (as the notebook shows under the report)",
         claims is not None and not broken,
         "no report_claims in the metrics" if claims is None else "\n      ".join(broken) or f"{len(claims)} claims")
    exported = Path(report_path).read_text(encoding="utf-8") if Path(report_path).exists() else None
    rule("report.md is the executed notebook's report", exported == report)
    images = linked_images("\n".join(c.source for c in nb.cells if c.cell_type == "markdown") + report)
    absent = [image for image in images if not (Path(report_path).parent / image).exists()]
    rule("every image the notebook links exists", not absent, f"missing: {absent}" if absent else
         f"{len(images)} images")
    link = colab_link(nb)
    rule("a link to the Colab version near the top (deliverable)", link is not None,
         link or "empty: share the notebook from Colab and paste the link into the cell under the title",
         status_if_not=TODO)
    return results


def make_zip(executed: Path, out_root: Path, target: Path) -> list[str]:
    """The Moodle archive: executed notebook, companion module, report, the committed study the notebook draws,
    and the figures the notebook and its report link."""
    nb = nbformat.read(executed, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown") + report_text(nb)
    images = sorted(set(linked_images(markdown)))
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
