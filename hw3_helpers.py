"""Companion module of homework3.ipynb: reproducibility, analysis and notebook tooling.

The graded notebook cells never import this module; its extension sections, the tests, the benchmark and the
Makefile do.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import re
import tempfile
import time
import types
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
NOTEBOOK = ROOT / "homework3.ipynb"


# --------------------------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators, as the notebook's setup cell does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------------------
# Notebook tooling
# --------------------------------------------------------------------------------------------------------------

_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)


def load_definitions(notebook: Path = NOTEBOOK, device: str = "cpu") -> types.ModuleType:
    """The notebook's imports, functions and classes as a module, without running anything else.

    Top-level statements other than definitions (data generation, training, embedded test calls, plots) are
    skipped, so loading takes well under a second. `DEVICE`, a global that the given code reads, is set.
    """
    nb = nbformat.read(notebook, as_version=4)
    module = types.ModuleType("homework3")
    module.DEVICE = torch.device(device)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(source)
        tree.body = [node for node in tree.body if isinstance(node, _DEFINITIONS)]
        exec(compile(tree, f"{notebook.name}", "exec"), module.__dict__)
    return module


TODO_START = "### TODO: Your code starts here ###"
TODO_END = "### TODO: Your code ends here ###"
ADDED_TAG = "added"  # cell tag of everything that is ours rather than the assignment's
EMBEDDED_TESTS = ("test_rope", "test_calculate_attention", "test_calculate_sliding_attention", "test_transformer",
                  "test_nucleus")  # the test functions handed out inside the notebook


def is_added(cell) -> bool:
    return ADDED_TAG in cell.get("metadata", {}).get("tags", [])


def strip_todo_bodies(source: str) -> str:
    """The handed-out form of a code cell: whatever stands between the TODO markers removed."""
    kept, inside = [], False
    for line in source.splitlines():
        if TODO_START in line:
            inside = True
        elif TODO_END in line:
            inside = False
        elif inside:
            continue
        kept.append(line)
    return "\n".join(kept)


def significant_lines(text: str) -> list[str]:
    """Lines compared 'white space aside': stripped, blank ones dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def handed_out_lines(nb) -> list[str]:
    """The assignment as the notebook carries it: every cell that is not ours, TODO bodies removed."""
    lines = []
    for cell in nb.cells:
        if is_added(cell):
            continue
        source = strip_todo_bodies(cell.source) if cell.cell_type == "code" else cell.source
        lines += significant_lines(source)
    return lines


def fingerprint(lines: list[str]) -> str:

    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Analysis: the Bayes-optimal predictor of the assignment's data
# --------------------------------------------------------------------------------------------------------------

def bayes_predictive(sequences: np.ndarray, vocab_size: int = 7, next_prob: float = 0.1,
                     n_first: int = 2) -> np.ndarray:
    """P(token t | tokens before t) under the exact generating process, for every token of every sequence.

    The process (`generate_recursive` + `SeqGen`): hidden initial values and coefficients, each uniform on
    0..vocab_size-1; each new token is last + 1 with probability `next_prob`, else the dot product of the last
    `n_first` values with the coefficients, mod vocab_size; the initial values are never emitted. The posterior
    over all vocab_size^(2 n_first) hypotheses is updated token by token.

    Args:
        sequences: int array [num_sequences, length], the emitted tokens (a data set's x and last y together).

    Returns:
        float array [num_sequences, length, vocab_size]; row t is the prediction of token t from tokens < t.
    """
    sequences = np.asarray(sequences)
    num_sequences, length = sequences.shape
    grid = np.stack(np.meshgrid(*[np.arange(vocab_size)] * (2 * n_first), indexing="ij"), -1).reshape(-1, 2 * n_first)
    initial, coeffs = grid[:, :n_first], grid[:, n_first:]  # (H, n_first) each
    num_hypotheses = len(grid)

    posterior = np.full((num_sequences, num_hypotheses), 1.0 / num_hypotheses)
    state = np.broadcast_to(initial, (num_sequences, num_hypotheses, n_first))  # last n_first values, per hypothesis
    predictive = np.empty((num_sequences, length, vocab_size))
    for t in range(length):
        if t == n_first:
            # The hidden initial values have left the state, so from here on only the coefficients matter:
            # marginalise them out and carry on with vocab_size^n_first hypotheses instead of the square of it.
            posterior = posterior.reshape(num_sequences, -1, vocab_size ** n_first).sum(1)
            coeffs = coeffs[: vocab_size ** n_first]
            state = state[:, : vocab_size ** n_first]
        recurrence = np.einsum("nhk,hk->nh", state, coeffs) % vocab_size  # (N, H)
        plus_one = (state[..., -1] + 1) % vocab_size  # (N, H)
        for v in range(vocab_size):  # P(next = v) = sum over hypotheses of posterior * P(v | hypothesis)
            predictive[:, t, v] = (posterior * (next_prob * (plus_one == v)
                                                + (1 - next_prob) * (recurrence == v))).sum(-1)
        observed = sequences[:, t, None]  # (N, 1)
        posterior = posterior * (next_prob * (plus_one == observed) + (1 - next_prob) * (recurrence == observed))
        posterior /= posterior.sum(-1, keepdims=True)
        state = np.concatenate([state[..., 1:], np.broadcast_to(observed[..., None], state[..., :1].shape)], -1)
    return predictive



def rule_consistent(tokens: np.ndarray, coeffs: np.ndarray, vocab_size: int) -> np.ndarray:
    """Which tokens the true generator could have emitted: its recurrence or the last token + 1.

    Args:
        tokens: int array [num_sequences, length] of consecutive tokens, at least n_first long.
        coeffs: int array [num_sequences, n_first], each sequence's true coefficients.

    Returns:
        bool array [num_sequences, length - n_first]: token t (t >= n_first) is consistent.
    """
    n_first = coeffs.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:, :-1], n_first, axis=1)  # (N, L - n, n)
    recurrence = (windows * coeffs[:, None, :]).sum(-1) % vocab_size
    plus_one = (tokens[:, n_first - 1:-1] + 1) % vocab_size
    following = tokens[:, n_first:]
    return (following == recurrence) | (following == plus_one)


def continuation_diversity(samples: np.ndarray) -> tuple[float, float]:
    """Mean number of distinct continuations per prompt, and mean per-position entropy (bits) across samples.

    Args:
        samples: int array [num_prompts, num_samples, gen_length].
    """
    distinct = np.mean([len({row.tobytes() for row in prompt}) for prompt in samples])
    entropies = []
    for prompt in samples:
        for column in prompt.T:
            freq = np.bincount(column) / len(column)
            freq = freq[freq > 0]
            entropies.append(-(freq * np.log2(freq)).sum())
    return float(distinct), float(np.mean(entropies))


# --------------------------------------------------------------------------------------------------------------
# Outputs of a run: where they go, figures, metrics
# --------------------------------------------------------------------------------------------------------------

OUTPUT_ENV = "HW3_OUTPUT_DIR"  # set by the runner so a test run can write somewhere else


def output_dir() -> Path:
    """Where a run writes figures/, build/ and report.md: the notebook's folder unless the runner says else."""

    return Path(os.environ.get(OUTPUT_ENV, "."))


def save_figure(fig, name: str) -> Path:
    """Save a figure as figures/<name> with the same bytes every run (no software or date stamp)."""
    path = output_dir() / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def write_metrics(metrics: dict) -> Path:

    path = output_dir() / "build" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so readers never see half a file."""

    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


# --------------------------------------------------------------------------------------------------------------
# Notebook tooling: run, export, check, zip
# --------------------------------------------------------------------------------------------------------------

class RunFailed(RuntimeError):
    """A cell of the notebook failed or timed out; the message names it."""


def cell_title(cell) -> str:
    """The first line that says what a cell does: markers, decorators and blank lines skipped."""
    lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("#####", "#[do not modify]", "@"))),
                 lines[0] if lines else "(empty)")
    return first if len(first) <= 60 else first[:57] + "..."


def run_notebook(source: Path = NOTEBOOK, out_root: Path = ROOT, cell_timeout: int = 900, log=print) -> Path:
    """Execute `source` top to bottom in a fresh kernel; write out_root/build/homework3.ipynb, HTML and report.

    The source notebook is only read. On a failing or hung cell the partly executed notebook is kept as
    build/homework3.failed.ipynb and RunFailed names the cell.
    """
    # Imported here, not at the top: the notebook imports this module, and only the runner needs nbclient.
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    source, out_root = Path(source).resolve(), Path(out_root).resolve()
    build = out_root / "build"
    build.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(source.parent)}})
    code_cells = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    cell_seconds = []
    run_started = time.perf_counter()
    previous = os.environ.get(OUTPUT_ENV)
    os.environ[OUTPUT_ENV] = str(out_root)  # the kernel inherits it
    try:
        with client.setup_kernel():
            for number, (index, cell) in enumerate(code_cells, start=1):
                log(f"[{number}/{len(code_cells)}] {cell_title(cell)} ...", end=" ", flush=True)
                started = time.perf_counter()
                try:
                    client.execute_cell(cell, index, execution_count=number)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
                    log("FAILED")
                    _write_atomically(build / "homework3.failed.ipynb", nbformat.writes(nb))
                    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()  # drop ANSI colours
                    reason = lines[-1] if lines else type(error).__name__
                    raise RunFailed(f"cell {number} ({cell_title(cell)!r}) failed: {reason}\n"
                                    f"The partly executed notebook is in {build / 'homework3.failed.ipynb'}") from None
                cell_seconds.append(time.perf_counter() - started)
                log(f"{cell_seconds[-1]:.1f} s")
    finally:
        if previous is None:
            os.environ.pop(OUTPUT_ENV, None)
        else:
            os.environ[OUTPUT_ENV] = previous
    executed = build / "homework3.ipynb"
    _write_atomically(executed, nbformat.writes(nb))
    (build / "homework3.failed.ipynb").unlink(missing_ok=True)
    export_html(executed, build / "homework3.html", images_from=source.parent)
    export_report(executed, out_root / "report.md")
    _write_atomically(build / "run_timings.json", json.dumps(
        {"total_seconds": time.perf_counter() - run_started, "cell_seconds": cell_seconds}, indent=2) + "\n")
    return executed


def export_html(notebook: Path, target: Path, images_from: Path) -> None:
    """nbconvert's HTML export with the figures the markdown links embedded, so it reads anywhere."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(embed_images=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                          resources={"metadata": {"path": str(images_from)}})
    _write_atomically(target, body)


REPORT_HEADING = "## Your report"


def report_cells(nb) -> list:
    """Our markdown cells after the assignment's `Your report` heading: the report itself."""
    start = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                  and c.source.lstrip().startswith(REPORT_HEADING)), None)
    if start is None:
        raise ValueError(f"no markdown cell starts with {REPORT_HEADING!r}")
    return [c for c in nb.cells[start + 1:] if c.cell_type == "markdown" and is_added(c)]


def report_text(nb) -> str:
    return "\n\n".join(cell.source.strip() for cell in report_cells(nb)) + "\n"


def export_report(notebook: Path, target: Path) -> None:

    _write_atomically(target, report_text(nbformat.read(notebook, as_version=4)))


def linked_images(markdown: str) -> list[str]:

    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)", markdown)


def report_words(markdown: str) -> int:
    """Words a reader reads: image links, markup and table rules left out."""

    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", markdown)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return len(re.findall(r"[A-Za-z0-9][A-Za-z0-9.,%'’\-]*", text))


REPORT_ELEMENTS = {  # required element -> words that show it is there
    "cross-entropy sentence": ("cross-entropy", "cross entropy", "cross_entropy"),
    "generation sentence": ("greedy", "argmax"),
    "nucleus sampling vs greedy": ("nucleus", "top-p", "top_p"),
    "temperature paragraph": ("temperature",),
    "per-position accuracy paragraph": ("per-position", "per position"),
}


def check(executed: Path, metrics_path: Path, report_path: Path, min_accuracy: float = 0.80) -> list[tuple]:
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
    exported = Path(report_path).read_text() if Path(report_path).exists() else None
    rule("report.md is the exported report", exported == report)
    images = linked_images("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))
    absent = [image for image in images if not (Path(report_path).parent / image).exists()]
    rule("every image the notebook links exists", not absent, f"missing: {absent}" if absent else
         f"{len(images)} images")
    return results


def make_zip(executed: Path, out_root: Path, target: Path) -> list[str]:
    """The Moodle archive: executed notebook, companion module, report and the figures the notebook links."""


    nb = nbformat.read(executed, as_version=4)
    images = sorted(set(linked_images("\n".join(c.source for c in nb.cells if c.cell_type == "markdown"))))
    members = {"homework3.ipynb": Path(executed), "hw3_helpers.py": ROOT / "hw3_helpers.py",
               "report.md": out_root / "report.md"}
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


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="python -m hw3_helpers", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "check", "zip"])
    parser.add_argument("--out", type=Path, default=ROOT, help="folder for build/, figures/ and report.md")
    args = parser.parse_args(argv)
    build = args.out / "build"
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
