"""The notebook as a file: its definitions as a module, the handed-out text, the headless run and the exports."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import time
import types
from pathlib import Path

import nbformat
import torch

from hw3_helpers import (
    OUTPUT_ENV,
    REPORT_TAG,
    RUN_KEY,
    cell_title,
    edited_after_run,
    notebook_html,
    report_text,
    run_stamp_metadata,
    write_atomically,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "homework3.ipynb"
APPENDIX = ROOT / "appendix" / "appendix.ipynb"  # reads the homework's run: run it after NOTEBOOK

_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)


_CONSTANT_PARTS = (ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop, ast.Tuple,
                   ast.List)


def _is_constant(node: ast.stmt) -> bool:
    """`SEQ_LEN = 64`, `NEXT_PROB = .1`, `A, B = 16, 2 * SEQ_LEN`: an assignment of literals and earlier constants,
    which runs nothing (no call, no attribute, no subscript)."""
    return isinstance(node, ast.Assign) and all(isinstance(sub, _CONSTANT_PARTS) for sub in ast.walk(node.value))


def module_of(sources: list[str], device: str = "cpu", name: str = "homework3") -> types.ModuleType:
    """The notebook's code cells `sources` (from the file, or a kernel's `In`) as a module: their imports,
    definitions and constants, in order, with nothing else run (no data generation, training, test calls or
    plots); `DEVICE`, a global the given code reads, is set. The one way our tooling executes the notebook's code
    outside a kernel: the tests, the study's settings and training, the benchmark."""
    module = types.ModuleType(name)
    module.DEVICE = torch.device(device)
    for source in sources:
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.parse(code).body:
            if isinstance(node, _DEFINITIONS):
                exec(compile(ast.Module([node], type_ignores=[]), f"<{name}>", "exec"), module.__dict__)
            elif _is_constant(node):
                try:
                    exec(compile(ast.Module([node], type_ignores=[]), f"<{name}>", "exec"), module.__dict__)
                except NameError:  # it names something a skipped statement would have made
                    continue
    return module


def load_definitions(notebook: Path = NOTEBOOK, device: str = "cpu") -> types.ModuleType:
    """The notebook's imports, functions, classes and constants as a module, without running anything else, so
    loading takes well under a second (`module_of` on every code cell of the file)."""
    nb = nbformat.read(notebook, as_version=4)
    return module_of([cell.source for cell in nb.cells if cell.cell_type == "code"], device, "homework3")


# A code cell whose source is folded away: JupyterLab, Notebook 7 and VS Code read `jupyter.source_hidden`, Colab
# reads `cellView: form` (with a `#@title` first line).
HIDDEN_SOURCE = {"jupyter": {"source_hidden": True}, "cellView": "form"}


def describe_kernel(client, nb) -> None:
    """Write into the notebook's metadata what its kernel reports about itself, as Jupyter does when it opens one:
    otherwise JupyterLab rewrites language_info and the kernel's display name on opening, and the notebook opens
    with unsaved changes."""
    reply = client.wait_for_reply(client.kc.kernel_info())
    if reply is not None and "language_info" in reply["content"]:
        nb.metadata["language_info"] = reply["content"]["language_info"]
    spec = client.km.kernel_spec
    nb.metadata["kernelspec"] = {"name": client.kernel_name, "display_name": spec.display_name,
                                 "language": spec.language}


def link_figures(build: Path) -> None:
    """build/figures -> ../figures, so the images that the executed notebook's report links (figures/...) show when
    build/homework3.ipynb is opened in Jupyter; where links cannot be made (Windows without the right), a copy."""
    target, figures = build / "figures", build.parent / "figures"
    if target.is_symlink() or not figures.is_dir():
        return
    if target.exists():
        shutil.rmtree(target)
    try:
        target.symlink_to(Path("..") / "figures", target_is_directory=True)
    except OSError:
        shutil.copytree(figures, target)


_OVERWRITTEN_BY_CR = re.compile(r"[^\n]*\r(?=[^\n])")


def terminal_streams(outputs: list) -> list:
    """Outputs as a terminal shows them: consecutive stream outputs of one name merged, and every line that a
    carriage return redraws (tqdm's progress bar) reduced to its last state. Order between stdout and stderr is
    kept, so each epoch's final bar stays next to the accuracy printed after it."""
    merged = []
    for output in outputs:
        if (output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1]["name"] == output["name"]):
            merged[-1]["text"] += output["text"]
        else:
            merged.append(output)
    for output in merged:
        if output.get("output_type") == "stream" and "\r" in output["text"]:
            output["text"] = _OVERWRITTEN_BY_CR.sub("", output["text"].replace("\r\n", "\n"))
    return merged


class EditedNotebook(RuntimeError):
    """An executed notebook was edited after its run; overwriting it would lose those edits."""


def edited_since_run(executed: Path) -> bool:
    """Whether someone changed a cell of an executed notebook after the run that wrote it (its link cell aside)."""
    return edited_after_run(nbformat.read(executed, as_version=4))


def refuse_to_overwrite_edits(executed: Path) -> None:
    if executed.exists() and edited_since_run(executed):
        raise EditedNotebook(
            f"{executed} was edited after it was run; a new run would overwrite it. Edits belong in "
            f"{NOTEBOOK.name} (build/ is rewritten by every run): copy yours there, then delete or rename "
            f"{executed} and run again.")


def export_html(notebook: Path, target: Path, images_from: Path) -> None:
    """The grader's reading copy (hw3_helpers.notebook_html): figures embedded, the report as prose, long code lines
    wrapped when printed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, notebook_html(nbformat.read(notebook, as_version=4), images_from))


def export_report(notebook: Path, target: Path) -> None:

    write_atomically(target, report_text(nbformat.read(notebook, as_version=4)))


class RunFailed(RuntimeError):
    """A cell of the notebook failed or timed out; the message names it."""


def run_notebook(source: Path = NOTEBOOK, out_root: Path = ROOT, cell_timeout: int = 900, log=print,
                 env: dict[str, str] | None = None, on_cell_execute=None, then=None) -> Path:
    """Execute `source` top to bottom in a fresh kernel (its folder the kernel's working folder); write
    out_root/build/<name>.ipynb and <name>.html, <name> the source's (homework3, appendix), and for a notebook with a
    report (the homework) out_root/report.md.

    The source notebook is only read. `env` adds environment variables for the kernel, such as HW3_DEVICE or
    HW3_NUM_THREADS (the kernel also inherits this process's). The report is the kernel's own: its cells format the
    run's variables, and report.md is exported from what they displayed. A previous executed notebook that someone
    edited is never overwritten (EditedNotebook names it). On a failing or hung cell the partly executed notebook
    is kept as build/<name>.failed.ipynb and RunFailed names the cell. `on_cell_execute(nb, index)`, if given,
    is called right before each cell goes to the kernel, with the notebook as it stands then (tests use it to play
    Colab's frontend, which hands the running notebook to the kernel). `then(client, nb)`, if given, is called after
    the last cell while the kernel still runs (tests use it to run a cell again alone, as a person would).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    source, out_root = Path(source).resolve(), Path(out_root).resolve()
    build, stem = out_root / "build", source.stem
    refuse_to_overwrite_edits(build / f"{stem}.ipynb")
    build.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                            shutdown_kernel="immediate",  # its work is done and saved: no wait for its exit
                            resources={"metadata": {"path": str(source.parent)}},
                            # the kernel's start-up warnings (TCP without encryption on a local socket) are noise
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            on_cell_execute=None if on_cell_execute is None else
                            lambda cell, cell_index: on_cell_execute(nb, cell_index))
    code_cells = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    cell_seconds = []
    run_started = time.perf_counter()
    kernel_env = {**(env or {}), OUTPUT_ENV: str(out_root)}
    previous = {name: os.environ.get(name) for name in kernel_env}
    os.environ.update(kernel_env)  # the kernel inherits them
    try:
        with client.setup_kernel():
            describe_kernel(client, nb)
            for number, (index, cell) in enumerate(code_cells, start=1):
                log(f"[{number}/{len(code_cells)}] {cell_title(cell)} ...", end=" ", flush=True)
                started = time.perf_counter()
                try:
                    client.execute_cell(cell, index)  # the count the kernel gives: what its record says
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
                    log("FAILED")
                    write_atomically(build / f"{stem}.failed.ipynb", nbformat.writes(nb))
                    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()  # drop ANSI colours
                    reason = lines[-1] if lines else type(error).__name__
                    raise RunFailed(f"cell {number} ({cell_title(cell)!r}) failed: {reason}\n"
                                    f"The partly executed notebook is in {build / f'{stem}.failed.ipynb'}") from None
                finally:
                    cell.outputs = terminal_streams(cell.outputs)
                cell_seconds.append(time.perf_counter() - started)
                log(f"{cell_seconds[-1]:.1f} s")
            if then is not None:
                then(client, nb)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    for cell in nb.cells:
        if REPORT_TAG in cell.metadata.get("tags", []):  # the executed report reads as prose; its code is a click away
            cell.metadata.update(HIDDEN_SOURCE)
    nb.metadata[RUN_KEY] = run_stamp_metadata(nb)
    executed = build / f"{stem}.ipynb"
    write_atomically(executed, nbformat.writes(nb))
    link_figures(build)
    (build / f"{stem}.failed.ipynb").unlink(missing_ok=True)
    export_html(executed, build / f"{stem}.html", images_from=source.parent)
    if report_text(nb).strip():
        export_report(executed, out_root / "report.md")
    write_atomically(build / f"{stem}_timings.json", json.dumps(
        {"total_seconds": time.perf_counter() - run_started, "cell_seconds": cell_seconds}, indent=2) + "\n")
    return executed


