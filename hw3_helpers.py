"""Companion module of homework3.ipynb: what the notebook's last two cells call, and what `make check` and
`make zip` share with them. The graded path (everything up to the end of the report) never imports it, so the
homework runs without it; it ships in the submission zip beside the notebook. What only `make` and the tests use
lives in the package hw3tools, which does not ship; the appendix's analysis lives in appendix/hw3_appendix.py.

Its sections, each using only what stands above it (the generated table at the end aside):

1. **The report's claims**: `REPORT_CLAIMS`, the report's sentences whose truth depends on the run, and
   `report_verdicts`, which the rubric calls on the run's numbers (`report_numbers`).
2. **The run's record** (the cell under *Saving the run, and the Moodle zip*): `save_run` (the trained weights as
   build/model.pt, for the appendix), `write_metrics` (build/metrics.json with `kernel_record`, what the kernel ran,
   and the figures' fingerprints), `sampling_table`, `output_dir`, `write_atomically`, `file_digest`.
3. **The notebook as JSON**, as Jupyter, Colab and nbformat write it: `read_notebook`, `as_notebook`, the handed-out
   cells (`handed_out_form`, `handed_out_intact`), `report_cells`, `report_text`, `linked_pictures`, `cell_title`.
4. **One run**, the one place that decides it: `code_not_as_ran` (each code cell against the kernel's record),
   `one_run_problem` (the notebook, its metrics and its figures), `make run`'s stamp (`run_stamp_metadata`,
   `edited_after_run`, `with_outputs_of`), `recorded_run_problem` (for `record`), and `first_change`.
5. **The rubric**: `check_submission`, with `unsupported_numbers`; `print_verdicts`.
6. **The reading copy**: `notebook_html`, the notebook as one HTML page that prints cleanly.
7. **The Moodle zip**: `submission_files`, `write_zip`, `build_submission`, and `submit_from_colab` (the notebook's
   last cell).
8. **Generated**: `HANDED_OUT_CELLS`, the handed-out cells' fingerprints, written by `python -m hw3tools handout`.

Sections 3 to 7 need only the standard library, so `make check` and `make zip` run where torch is not installed.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import os
import re
import tempfile
import types
import zipfile
from datetime import UTC, datetime
from itertools import zip_longest
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

# --------------------------------------------------------------------------------------------------------------
# 1. The report's claims: its sentences whose truth depends on the run, checked on the run's numbers
#    (standard library only: `make check` runs without numpy)
# --------------------------------------------------------------------------------------------------------------


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _plateau(n) -> tuple[float, float]:
    """The model's and the best possible predictor's mean accuracy from where the curve levels off."""
    return _mean(n.per_token_acc[n.levels_off:]), _mean(n.best_per_token[n.levels_off:])


def _sampled_at_or_above_t1(n) -> list[float]:
    return [n.rule_consistent[t, p] for t in (1.0, 1.5, 2.0) for p in (0.9, 1.0)]


def _climbs_steeply_then_levels_off(n) -> bool:
    """The first three positions lie well below the plateau (20 points), and the plateau starts after them."""
    model, _ = _plateau(n)
    return n.levels_off >= 3 and max(n.per_token_acc[:3]) < model - 0.2


def _below_the_best_possible(n) -> bool:
    model, best = _plateau(n)
    return model < best


def _the_rest_lies_in_the_first_positions(n) -> bool:
    """Before the curve levels off the model is further below the best possible than after, per position: so the
    difference over all positions, beyond the plateau's, comes from the first positions (none where it is level
    from position 0)."""
    if n.levels_off == 0:
        return False
    early = _mean(b - m for b, m in zip(n.best_per_token[:n.levels_off], n.per_token_acc[:n.levels_off], strict=True))
    model, best = _plateau(n)
    return early > best - model


# A fragment of a report sentence -> its test on the run's numbers: rule_consistent and distinct by setting
# ("greedy" or (t, top_p)), per_token_acc and best_per_token by position, and levels_off; `report_numbers` reads
# them from the run's metrics.json.
REPORT_CLAIMS = {
    "the 8 continuations of a prompt are always the same": lambda n: n.distinct["greedy"] == 1,
    "at a price": lambda n: n.rule_consistent[1.0, 0.9] < n.rule_consistent["greedy"],
    "when sampling from the whole distribution (`top_p=1`)":
        lambda n: n.rule_consistent[1.0, 1.0] < n.rule_consistent[1.0, 0.9],
    "Greedy keeps to the rule more often":
        lambda n: n.rule_consistent["greedy"] > max(_sampled_at_or_above_t1(n)),
    "sampling behaves almost like greedy decoding": lambda n: abs(
        n.rule_consistent[0.5, 0.9] - n.rule_consistent["greedy"]) < 0.02 and n.distinct[0.5, 0.9] < 2,
    "nearly every sample differs": lambda n: n.distinct[2.0, 1.0] > 7.5,
    "rule-consistency falls at every step up in temperature": lambda n: all(
        n.rule_consistent[a, p] > n.rule_consistent[b, p]
        for p in (0.9, 1.0) for a, b in ((0.5, 1.0), (1.0, 1.5), (1.5, 2.0))),
    "A small nucleus protects against high temperature":
        lambda n: all(n.rule_consistent[t, 0.5] > n.rule_consistent[t, 1.0] + 0.1 for t in (1.5, 2.0)),
    "levels off at about position": _climbs_steeply_then_levels_off,
    "below the best possible there": _below_the_best_possible,
    "the rest of the difference lies in the first positions": _the_rest_lies_in_the_first_positions,
}


def _verdict(holds, n) -> str:
    try:
        return "holds" if holds(n) else "does not hold"
    except AttributeError as missing:  # the run's numbers lack one this claim is checked on
        return f"not checked: the run's numbers have no {missing.name}"
    except (KeyError, IndexError) as missing:
        return f"not checked: the run's numbers have no entry {missing}"
    except ZeroDivisionError:  # levels_off past the end of the curve: no plateau to compare
        return "not checked: the run's numbers have no position from where the curve levels off on"


def report_verdicts(report_text: str, **numbers) -> dict[str, str]:
    """For each claim of REPORT_CLAIMS: "holds", "does not hold", "no longer in the report" (a student rewrote
    it), or "not checked: ..." (the numbers it is checked on were not given). Sentences are compared with white
    space folded, so line breaks inside them do not matter."""
    flat, n = " ".join(report_text.split()), types.SimpleNamespace(**numbers)
    return {claim: "no longer in the report" if claim not in flat else _verdict(holds, n)
            for claim, holds in REPORT_CLAIMS.items()}


def setting_name(setting) -> str:
    """A sampling setting as tables name it: "greedy", or (t, top_p) as "t=1.0, top_p=0.9"."""
    return setting if setting == "greedy" else f"t={setting[0]}, top_p={setting[1]}"


def report_numbers(metrics: dict) -> dict:
    """The numbers REPORT_CLAIMS are checked on, from a run's metrics.json; those it lacks are left out (their
    claims are then "not checked")."""
    numbers = {}
    if "sampling_study" in metrics:
        keys = {"greedy" if row["temperature"] is None else (row["temperature"], row["top_p"]): row
                for row in metrics["sampling_study"]}
        numbers["rule_consistent"] = {key: row["rule_consistent"] for key, row in keys.items()}
        numbers["distinct"] = {key: row["distinct_continuations"] for key, row in keys.items()}
    for name, key in (("per_token_acc", "per_position_accuracy"), ("best_per_token", "best_possible_per_position"),
                      ("levels_off", "levels_off_at")):
        if key in metrics:
            numbers[name] = metrics[key]
    return numbers


# --------------------------------------------------------------------------------------------------------------
# 2. The run's record: its numbers (build/metrics.json) and its trained weights (build/model.pt)
# --------------------------------------------------------------------------------------------------------------


OUTPUT_ENV = "HW3_OUTPUT_DIR"  # set by the runner so a test run can write somewhere else
KERNEL_RAN = "kernel_ran"  # in metrics.json: what the kernel executed, by execution count (kernel_record)
WEIGHTS = "build/model.pt"  # the trained model and the data the appendix analyses it on, beside metrics.json


def output_dir() -> Path:
    """Where a run writes figures/, build/ and report.md: the notebook's folder unless the runner says else."""
    return Path(os.environ.get(OUTPUT_ENV, "."))


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write through a temporary file in the same folder, so readers never see half a file (text as UTF-8). The
    file gets the mode a plain open() would give it (the umask applies), not the owner-only mode of a temporary
    file."""
    umask = os.umask(0)
    os.umask(umask)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.chmod(tmp.name, 0o666 & ~umask)
    os.replace(tmp.name, path)


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def kernel_record() -> dict[str, str] | None:
    """What this kernel has executed since it started, as IPython keeps it: each cell's source as it ran, by its
    execution count ("1", "2", ...). None outside IPython, where there are no cells."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    history = getattr(getattr(get_ipython(), "history_manager", None), "input_hist_raw", None)
    if history is None:
        return None
    return {str(count): source for count, source in enumerate(history) if count > 0}


def figures_written(ran: dict[str, str] | None) -> set[str]:
    """The figures this run wrote: every .png name in the code the kernel ran (the notebook's cells save theirs
    with savefig). Any other picture is the student's own."""
    return set(re.findall(r"[\w.-]+\.png", "\n".join((ran or {}).values())))


def sampling_table(rule_consistent: dict, distinct: dict) -> list[dict]:
    """The sampling comparison as rows: setting ("greedy" or "t=..., top_p=..."), temperature and top_p (None for
    greedy), the share of rule-consistent tokens and the mean number of different continuations."""
    return [{"setting": setting_name(setting),
             "temperature": None if setting == "greedy" else setting[0],
             "top_p": None if setting == "greedy" else setting[1],
             "rule_consistent": float(rule_consistent[setting]),
             "distinct_continuations": float(distinct[setting])} for setting in rule_consistent]


def write_metrics(metrics: dict) -> str:
    """The run's numbers as build/metrics.json, for the rubric, the appendix and the tests, with the fingerprint of
    every figure this run wrote into figures/, the record of what the kernel ran (`kernel_ran`, the proof the rubric
    holds the notebook's code to) and the time it was written (the zip's entries carry it). Returns the run id (the
    start of the file's sha256): printed in the notebook, it ties the notebook, these numbers and those figures to
    one run."""
    root = output_dir()
    ran = kernel_record()
    written = figures_written(ran)
    figures = sorted(path for path in (root / "figures").glob("*.png") if path.name in written)
    metrics = {**metrics, "figures": {f"figures/{path.name}": file_digest(path.read_bytes()) for path in figures},
               KERNEL_RAN: ran, "written_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    path = root / "build" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return file_digest(path.read_bytes())[:12]  # of the bytes on disk (Windows writes its own line ends)


def save_run(model, metrics: dict, *, test_tokens, generators, prompt_tokens, samples: dict,
             train_sequences: int) -> str:
    """Save the trained model as build/model.pt, with what the appendix analyses it on: its training log, the test
    tokens (N, SEQ_LEN + 1), the test set's generators as rows of (initial values, coefficients), the sampling
    comparison's prompts and samples by setting, and the training set's size. Then write the run's numbers with
    the weights' sha256 (`write_metrics`); returns the run id."""
    import io

    import torch

    rows = sorted((tuple(int(v) for v in g.initial), tuple(int(c) for c in g.coeffs)) for g in generators)
    saved = {"state_dict": {name: value.detach().cpu() for name, value in model.state_dict().items()},
             "training_log": getattr(model, "training_log", {}),
             "test_tokens": test_tokens.detach().cpu(),
             "generators": torch.tensor([initial + coeffs for initial, coeffs in rows]),
             "prompt_tokens": prompt_tokens.detach().cpu(),
             "samples": {setting_name(s): torch.as_tensor(tokens) for s, tokens in samples.items()},
             "train_sequences": int(train_sequences)}
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    path = output_dir() / WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, buffer.getvalue())
    return write_metrics({**metrics, "weights": {"path": WEIGHTS, "sha256": file_digest(buffer.getvalue())}})


# --------------------------------------------------------------------------------------------------------------
# 3. The notebook as JSON, as Jupyter, Colab and nbformat write it: its cells, the handed-out ones, the
#    report and the pictures it links. From here on, standard library only: the rubric and the zip run
#    where torch and nbformat are not.
# --------------------------------------------------------------------------------------------------------------


TODO_START = "### TODO: Your code starts here ###"
TODO_END = "### TODO: Your code ends here ###"
ADDED_TAG = "added"  # cell tag of everything that is ours rather than the assignment's
REPORT_TAG = "report"  # our report cells: code that displays one part of the report as markdown
REPORT_HEADING = "## Your report"
COLAB_TAG = "colab-link"
COLAB_LEAD = "**Colab version of this notebook:**"  # how the link cell starts, for where a frontend drops tags
COLAB_URL = re.compile(r"https://colab\.research\.google\.com/\S+")
EXPORT_CALL = "submit_from_colab("  # what the notebook's last cell calls: the cell is found by it
EMBEDDED_TESTS = ("test_rope", "test_calculate_attention", "test_calculate_sliding_attention", "test_transformer",
                  "test_nucleus")  # the test functions handed out inside the notebook
PROMPTS = {"input", "getpass", "upload", "breakpoint", "set_trace"}  # calls that wait for a person
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def as_notebook(data: dict) -> dict:
    """A notebook as the rubric reads it: a plain copy of nbformat's JSON or of what Colab's frontend hands over
    (sources, stream texts and text outputs as lists of lines), with each of those joined into one string."""
    nb = json.loads(json.dumps(data))
    for cell in nb.get("cells", []):
        cell["source"] = _text(cell.get("source"))
        cell["metadata"] = cell.get("metadata") or {}
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _text(output["text"])
            if "data" in output:  # only where nbformat has it: a stream output with "data" is invalid
                output["data"] = {mime: _text(value) if isinstance(value, (list, str)) else value
                                  for mime, value in output["data"].items()}
    return nb


def read_notebook(path: Path) -> dict:

    return as_notebook(json.loads(Path(path).read_text(encoding="utf-8")))


def notebook_json(nb: dict) -> str:
    """A notebook as Jupyter writes it (one space of indent, key order kept)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def is_added(cell) -> bool:
    return ADDED_TAG in _tags(cell)


def is_link_cell(cell) -> bool:
    """The markdown cell under the title that holds the Colab link: by its tag, or by its first words where a
    frontend dropped the tags (Colab's editor has none)."""
    return cell["cell_type"] == "markdown" and (COLAB_TAG in _tags(cell)
                                                or cell["source"].lstrip().startswith(COLAB_LEAD))


def is_export_cell(cell) -> bool:

    return cell["cell_type"] == "code" and EXPORT_CALL in cell["source"]


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


def fingerprint(lines: list[str]) -> str:

    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def handed_out_form(cell: dict) -> tuple[str, list[str]]:
    """A cell as the handout gives it: its type and its significant lines, TODO bodies removed."""
    source = strip_todo_bodies(cell["source"]) if cell["cell_type"] == "code" else cell["source"]
    return cell["cell_type"], significant_lines(source)


def handed_out_cells(nb) -> list[tuple[str, str]]:
    """(fingerprint, first line) of every cell not tagged `added`, in the handout's form: what a grader compares."""
    forms = [handed_out_form(cell) for cell in nb["cells"] if not is_added(cell)]
    return [(fingerprint([kind, *lines]), lines[0] if lines else "") for kind, lines in forms]


def handed_out_intact(nb) -> tuple[bool, str]:
    """Every handed-out cell is there, unchanged (white space aside) and in order. Cells a student adds, tagged or
    not (Colab keeps no tags), are allowed anywhere: only a changed, moved or missing handed-out cell fails."""
    present = iter(handed_out_cells(nb))
    for expected, first_line in HANDED_OUT_CELLS:
        if not any(found == expected for found, _ in present):
            return False, f"the handed-out cell starting {first_line!r} was changed, moved or removed"
    return True, f"{len(HANDED_OUT_CELLS)} handed-out cells compared"


def colab_link(nb) -> str | None:
    cell = next((c for c in nb["cells"] if is_link_cell(c)), None)
    match = COLAB_URL.search(cell["source"]) if cell is not None else None
    return match.group(0).rstrip(").,>*") if match else None


def report_cells(nb) -> list:
    """The cells after the assignment's `Your report` heading that make up the report: every one of them (a
    student's own markdown cells included) up to the next heading of the same level (*Saving the run*). No
    heading, no report."""
    start = next((i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
                  and c["source"].lstrip().startswith(REPORT_HEADING)), None)
    if start is None:
        return []
    cells = []
    for cell in nb["cells"][start + 1:]:
        if cell["cell_type"] == "markdown" and re.match(r"##\s", cell["source"].lstrip()):
            break
        cells.append(cell)
    return cells


def _shown_text(output) -> str | None:
    """What a report cell's output says in Markdown: its text, or a figure's link (the figure is displayed as the
    image itself, with the link as its plain-text form), or None."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return None
    data = output.get("data", {})
    if "text/markdown" in data:
        return str(data["text/markdown"]).strip()
    plain = str(data.get("text/plain", "")).strip()
    return plain if "image/png" in data and IMAGE_LINK.fullmatch(plain) else None


def report_text(nb) -> str:
    """The report as it reads in the executed notebook: markdown cells as written, code cells by the markdown
    and figures they displayed (nothing for a cell that has not run). This is what report.md holds."""
    parts = []
    for cell in report_cells(nb):
        if cell["cell_type"] == "markdown":
            parts.append(cell["source"].strip())
        elif cell["cell_type"] == "code":
            parts += [text for text in map(_shown_text, cell.get("outputs", [])) if text]
    return "\n\n".join(part for part in parts if part) + "\n"


IMAGE_TAG = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']""", re.IGNORECASE)  # HTML in markdown
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]+:", re.IGNORECASE)  # http:, https:, data:, attachment: (not C:)


def linked_images(markdown: str) -> list[str]:
    """Every image a markdown text links, as written: `![...](target)` and `<img src="target">`."""
    return IMAGE_LINK.findall(markdown) + IMAGE_TAG.findall(markdown)


def image_path(link: str) -> tuple[str | None, str | None]:
    """Where a linked image lies: (its path inside the notebook's folder, None); (None, None) for a web image or
    one stored in the notebook (http:, data:, attachment:), which stays a link; or (None, why it is refused) for a
    path that leaves the folder (absolute, or through ..), which is never read."""
    target = unquote(link.strip().strip("<>"))
    absolute = target.startswith(("/", "\\")) or re.match(r"^[a-zA-Z]:[\\/]", target)
    if not absolute and SCHEME.match(target):
        return None, None
    parts = [part for part in target.replace("\\", "/").split("/") if part not in ("", ".")]
    if absolute or ".." in parts:
        name = parts[-1] if parts else "picture.png"
        return None, (f"{link} lies outside the notebook's folder: copy the picture beside the notebook (into "
                      f"figures/, say) and link it by a relative path, such as figures/{name}")
    return "/".join(parts), None


def _linked_in(nb) -> list[str]:
    markdown = "\n".join(c["source"] for c in nb["cells"] if c["cell_type"] == "markdown") + report_text(nb)
    return linked_images(markdown)


class Pictures(NamedTuple):
    """The pictures a notebook links (in its markdown cells and in the report its cells display), worked out once
    per check: those in its folder as relative paths (what the zip carries beside it), why each one linked from
    outside the folder is refused, and which of those in the folder the run wrote (metrics.json fingerprints them;
    the others are the student's own)."""

    inside: list[str]
    refused: list[str]
    by_the_run: list[str]

    @property
    def own(self) -> list[str]:
        return [image for image in self.inside if image not in self.by_the_run]


def linked_pictures(nb, metrics_bytes: bytes | None) -> Pictures:
    """The notebook's pictures, against the run whose metrics.json is `metrics_bytes` (None: no run)."""
    places = [image_path(link) for link in _linked_in(nb)]
    inside = sorted({path for path, _ in places if path})
    recorded = json.loads(metrics_bytes).get("figures", {}) if metrics_bytes else {}
    return Pictures(inside, sorted({problem for _, problem in places if problem}),
                    [image for image in inside if image in recorded])


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
    cells = nb["cells"]
    index = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"
                  and "per_token_acc = calc_per_token_acc(" in c["source"]), None)
    below = cells[index + 1] if index is not None and index + 1 < len(cells) else None
    if below is None or below["cell_type"] != "markdown" or below["source"].lstrip().startswith("#"):
        return None
    return below["source"]


def cell_title(cell) -> str:
    """What a cell is called in a message: its `#@title`, or else its first line that says what it does (markers,
    decorators, guards and blank lines skipped), cut to 60 characters."""
    lines = [line.strip() for line in cell["source"].splitlines() if line.strip()]
    if lines and lines[0].startswith("#@title"):
        return lines[0][len("#@title"):].strip()
    first = next((line for line in lines if not line.startswith(("#####", "#[do not modify]", "@", "try:"))),
                 lines[0] if lines else "(empty)")
    return first if len(first) <= 60 else first[:57] + "..."


# --------------------------------------------------------------------------------------------------------------
# 4. One run: whether a notebook's code is what its kernel ran, and whether the notebook, its numbers and
#    its figures come from one run (the rubric, `make run`'s copy, `record`). The one place that decides.
# --------------------------------------------------------------------------------------------------------------


RUN_ID = re.compile(r"run id ([0-9a-f]{12})")  # printed under *Saving the run*, from metrics.json
RERUN = "Restart and Run All, save, zip again"  # the fix for a run that is not the notebook's; each route says its own
COLAB_RERUN = "Runtime > Restart session and run all (this cell runs last and zips)"


def run_id(nb) -> str | None:
    """The id of metrics.json that the cell that saves the run printed, or None."""
    text = "".join(str(output.get("text", "")) for cell in nb["cells"] for output in cell.get("outputs", []))
    found = RUN_ID.findall(text)
    return found[-1] if found else None


def judged_code_cells(nb) -> list:
    """The code cells a run is judged by: all of them up to the export cell, which is still running when it reads
    the notebook in Colab (its count and output are not there yet), and so is never judged."""
    code = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            if is_export_cell(cell):
                break
            code.append(cell)
    return code


def _code_lines(source: str) -> list[str]:
    return [line.rstrip() for line in source.replace("\r\n", "\n").rstrip().splitlines()]


def first_change(now: list, then: list, same=None) -> int | None:
    """The index of the first item where two sequences differ (`same(a, b)` false, or one has run out), or None
    where they are alike: the one "what changed first" of the rubric's messages (lines) and of `record` (cells)."""
    same = same or (lambda a, b: a == b)
    for index, (a, b) in enumerate(zip_longest(now, then)):
        if a is None or b is None or not same(a, b):
            return index
    return None


def first_changed_line(now: str, ran: str) -> str:
    """The first line of a cell's source as it reads now that is not the line the kernel ran there."""
    for line_now, line_ran in zip_longest(_code_lines(now), _code_lines(ran)):
        if line_now != line_ran:
            line = line_now if line_now is not None else line_ran
            shown = repr(line.strip() if len(line.strip()) <= 100 else line.strip()[:97] + "...")
            return shown if line_now is not None else f"{shown} was removed"
    return "none"


NO_RECORD = ("there is no record of what the kernel ran (build/metrics.json is missing or was written by an older "
             "hw3_helpers.py); fix: with hw3_helpers.py beside the notebook, {rerun}")


def code_not_as_ran(nb, ran: dict[str, str] | None, rerun: str = RERUN) -> str | None:
    """Why the notebook's code is not what its kernel ran in one pass from a fresh kernel, or None. `ran` is the
    kernel's record (kernel_record, or the copy in metrics.json). Each code cell up to the export cell, empty ones
    aside (a frontend does not send them), must show execution count 1, 2, 3... in notebook order, and at that count
    the kernel must have run exactly the source the cell shows now (white space at line ends aside). Markdown cells,
    the Colab link among them, are not code: editing them needs no new run."""
    if ran is None:
        return NO_RECORD.format(rerun=rerun)
    position = 0
    for number, cell in enumerate(nb["cells"], start=1):
        if cell["cell_type"] != "code" or not cell["source"].strip():
            continue
        if is_export_cell(cell):
            break
        position += 1
        where, count = f'cell {number} "{cell_title(cell)}"', cell.get("execution_count")
        if count is None:
            return f"{where} never ran; fix: {rerun}"
        if count != position:
            return (f"{where} has execution count {count}, where one pass from a fresh kernel gives {position}: "
                    f"it ran again or out of order; fix: {rerun}")
        if str(count) not in ran:
            return (f"{where} ran after the cell that records the run (*Saving the run*); fix: move it above "
                    f"that cell, then {rerun}")
        if _code_lines(ran[str(count)]) != _code_lines(cell["source"]):
            return (f"{where} was changed after it ran (first changed line: "
                    f"{first_changed_line(cell['source'], ran[str(count)])}); fix: {rerun}")
    return None


def one_run_problem(nb, metrics_bytes: bytes | None, root: Path, pictures: Pictures | None = None) -> str | None:
    """Why the notebook, the metrics and the figures are not one run's, or None: metrics.json must be the file
    whose stamp the notebook printed, and each figure the run wrote that the notebook links must be the file that
    metrics.json fingerprinted (a picture the run never writes is the student's own, and may change)."""
    printed = run_id(nb)
    if metrics_bytes is None:
        return ("no build/metrics.json: the cell that saves the run (under *Saving the run, and the Moodle zip*) "
                "writes it (it needs "
                "hw3_helpers.py beside the notebook)")
    if printed is None:
        return ("the notebook shows no run id: the cell that saves the run (under *Saving the run, and the Moodle "
                "zip*) did not run")
    if file_digest(metrics_bytes)[:12] != printed:
        return (f"build/metrics.json is another run's (run id {file_digest(metrics_bytes)[:12]}; the notebook "
                f"printed {printed})")
    if pictures is None:
        pictures = linked_pictures(nb, metrics_bytes)
    recorded = json.loads(metrics_bytes)["figures"]
    changed = [image for image in pictures.by_the_run if (root / image).is_file()
               and recorded[image] != file_digest((root / image).read_bytes())]
    if changed:
        return f"written by another run than this notebook's: {', '.join(changed)}"
    return None


RUN_KEY = "hw3_run"  # notebook metadata of a `make run` notebook: the sources it ran


def sources_fingerprint(nb, link_cell_aside: bool = True) -> str:
    """The cells' types and sources: what a person edits (outputs, counts and metadata aside). The Colab link cell
    is left out, so that pasting the link after a run does not make the run stale."""
    return fingerprint([f"{cell['cell_type']}:{cell['source']}" for cell in nb["cells"]
                        if not (link_cell_aside and is_link_cell(cell))])


def run_stamp_metadata(nb) -> dict:
    """What `make run` writes into the notebook it executed: the fingerprint of the sources it ran."""
    return {"sources_sha256_except_link": sources_fingerprint(nb)}


def edited_after_run(nb) -> bool:
    """Whether someone changed a cell of a `make run` notebook after the run that wrote it (the link cell aside;
    a notebook stamped before the link was set aside compares every cell)."""
    stamp = nb.get("metadata", {}).get(RUN_KEY, {})
    if "sources_sha256_except_link" in stamp:
        return stamp["sources_sha256_except_link"] != sources_fingerprint(nb)
    return "sources_sha256" in stamp and stamp["sources_sha256"] != sources_fingerprint(nb, link_cell_aside=False)


def first_changed_cell(a, b) -> int | None:
    """The first cell (from 1) whose type or source differs between two notebooks, or None; the Colab link cell,
    where both have it in the same place, is not compared."""
    def same(x, y):
        return (is_link_cell(x) and is_link_cell(y)) or (
            x["cell_type"] == y["cell_type"] and x["source"].strip() == y["source"].strip())

    index = first_change(a["cells"], b["cells"], same)
    return None if index is None else index + 1


def with_outputs_of(source, executed) -> dict:
    """The student's notebook as it is now (`source`: homework3.ipynb, its markdown and link cells included) with
    the execution counts and outputs of `make run`'s executed copy, code cell by code cell in order. The rubric then
    holds each code cell to what the kernel ran, so an edit to a markdown cell or the link needs no new run, and an
    edit to code is caught."""
    result = json.loads(json.dumps(executed))
    result.get("metadata", {}).pop(RUN_KEY, None)  # the stamp is of build/'s copy, not of this merge
    ran = iter([cell for cell in result["cells"] if cell["cell_type"] == "code"])
    cells = []
    for cell in json.loads(json.dumps(source["cells"])):
        if cell["cell_type"] == "code":
            done = next(ran, None)
            cell["execution_count"] = done.get("execution_count") if done else None
            cell["outputs"] = done.get("outputs", []) if done else []
            cell["metadata"] = done.get("metadata", {}) if done else cell.get("metadata", {})
        cells.append(cell)
    result["cells"] = cells
    return result


def recorded_run_problem(executed, source, report_md: str) -> str | None:
    """Why `make run`'s executed notebook and a report.md are not one run of `source` as it is now, or None (what
    `record` requires before it makes a run the record)."""
    if edited_after_run(executed):
        return "it was edited after its run"
    changed = first_changed_cell(source, executed)
    if changed is not None:
        return f"it is a run of an older notebook (cell {changed} differs): run it again"
    if report_md != report_text(executed):
        return "report.md is not the report of this run (edited by hand, or written by another run)"
    return None


# --------------------------------------------------------------------------------------------------------------
# 5. The rubric: every rule of `make check`, `make zip` and the Colab cell
# --------------------------------------------------------------------------------------------------------------


PASS, FAIL, TODO, WARN = "PASS", "FAIL", "TODO", "WARN"  # TODO, WARN: told, but the zip is written
REPORT_ELEMENTS = {  # required element -> words that show it is there
    "cross-entropy sentence": ("cross-entropy", "cross entropy", "cross_entropy"),
    "generation sentence": ("greedy", "argmax"),
    "nucleus sampling vs greedy": ("nucleus", "top-p", "top_p"),
    "temperature paragraph": ("temperature",),
    "per-token accuracy paragraph": ("per-token", "per token", "per-position", "per position"),
}


# --- Every number the report states is one the run measured or was set to, or one of the handout.
STATED_NUMBER = re.compile(r"(?<![\w.])(\d*\.\d+|\d+)(\s?%)?(?!\w|\.\d)")  # 0.851, .5, 85%, 85.1 % (not 2.13.0)
VALUE_LABELS = {"final_test_accuracy": "test accuracy",
                "plateau_accuracy": "mean accuracy from where the curve levels off",
                "best_possible_accuracy": "best possible accuracy",
                "best_possible_plateau": "best possible accuracy from where the curve levels off",
                "gap_to_best_possible_plateau": "gap to the best possible from where the curve levels off"}


def run_values(metrics: dict) -> list[tuple[str, float]]:
    """The numbers a run measured or was set to, each with what it is: what a report may quote. The appendix's
    long per-position series (bits, attention, probe) and its breakdowns (bits by branch) are left out: a report
    quotes none of them, and among so many values a wrong number would too often find a match."""
    values = []

    def walk(value, label, depth=0):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            values.append((label, float(value)))
        elif isinstance(value, str):  # a version or a device: torch 2.11, cuda:0
            values.extend((label, float(number)) for number in re.findall(r"\d+(?:\.\d+)?", value))
        elif isinstance(value, dict) and depth == 0:  # a headline (bits.kl_mean), not a breakdown of one
            for key, item in value.items():
                walk(item, f"{label} {key}".replace("_", " "), depth + 1)

    series = {"per_position_accuracy": "accuracy at position {}", "best_possible_per_position":
              "best possible accuracy at position {}", "epoch_train_loss": "training loss, epoch {}"}
    for key, value in metrics.items():
        if key in (KERNEL_RAN, "figures", "written_at", "weights"):
            continue
        if key in series:
            values += [(series[key].format(i + (key == "epoch_train_loss")), float(v)) for i, v in enumerate(value)]
        elif key == "sampling_study":
            values += [(f"{name.replace('_', ' ')} at {entry['setting']}", float(entry[name]))
                       for entry in value for name in ("rule_consistent", "distinct_continuations",
                                                       "temperature", "top_p")
                       if isinstance(entry.get(name), (int, float))]
        elif not isinstance(value, list):
            walk(value, VALUE_LABELS.get(key, key.replace("_", " ")))
    return values


def handout_numbers(nb) -> list[float]:
    """The numbers of the handout that a report may repeat: every number in the notebook's handed-out cells (found
    by their fingerprints, as Colab keeps no tags), a percentage also as a fraction (65% and 0.65), TODO bodies and
    the embedded tests left out (their hundreds of expected values would let almost any number pass)."""
    handed_out = {expected for expected, _ in HANDED_OUT_CELLS}
    numbers = []
    for cell in nb["cells"]:
        kind, lines = handed_out_form(cell)
        source = "\n".join(lines)
        if fingerprint([kind, *lines]) in handed_out and not source.startswith("##### TESTS START"):
            for number, percent in re.findall(r"(?<![\w.])(\d*\.\d+|\d+)(\s?%)?", source):
                numbers += [float(number)] + ([float(number) / 100] if percent else [])
    return numbers


def stated_numbers(text: str) -> list[str]:
    """The decimals and percentages a text states, as written ("0.851", "85%"), links and addresses left out."""
    text = re.sub(r"\]\([^)]*\)|<[^>]*>|https?://\S+", " ", text)
    return [number + ("%" if percent else "") for number, percent in STATED_NUMBER.findall(text)
            if "." in number or percent]


def _as_written(value: float, written: str) -> bool:
    digits = written.rstrip("%").strip()
    places = len(digits.split(".")[1]) if "." in digits else 0
    candidates = (value * 100, value) if written.endswith("%") else (value,)
    return any(f"{abs(c):.{places}f}" == f"{float(digits):.{places}f}" for c in candidates)


def unsupported_numbers(text: str, metrics: dict, handout: list[float]) -> list[str]:
    """Each number the text states that is neither one of this run's values nor one of the handout's at the
    precision written, with the closest of the run's values: a typo, or a number from an older run."""
    values = run_values(metrics)
    problems = []
    for written in dict.fromkeys(stated_numbers(text)):
        if any(_as_written(value, written) for value in [v for _, v in values] + handout):
            continue
        target = float(written.rstrip("%")) / (100 if written.endswith("%") else 1)
        label, closest = min(values, key=lambda item: abs(item[1] - target), default=("none", math.nan))
        accuracy = metrics.get("final_test_accuracy")
        also = f"; its test accuracy is {accuracy:.3f}" if label != "test accuracy" and accuracy is not None else ""
        problems.append(f'"{written}": not a number of this run or of the handout (closest: {label}, '
                        f'{closest:.4g}{also})')
    return problems


def check_submission(nb, metrics_bytes: bytes | None, root: Path, report_md: str | None = None,
                     ran: dict[str, str] | None = None, rerun: str = RERUN,
                     min_accuracy: float = 0.80, pictures: Pictures | None = None) -> list[tuple[str, str, str]]:
    """The rubric, rule by rule, for an executed notebook: a list of (rule, PASS | FAIL | TODO | WARN, detail).
    Only a FAIL refuses the zip, and its detail says what is wrong and how to fix it.

    `metrics_bytes` is the run's build/metrics.json, `root` the folder of the notebook and its figures/. `report_md`
    is a report.md written apart from the notebook that must be its report (`make run` writes one), None when the
    zip writes it from the notebook. `ran` is the kernel's own record of what it executed, where the kernel is still
    there (the Colab cell); otherwise the record in metrics.json is used. `rerun` is the route's way to run again."""
    root = Path(root)
    results = []

    def rule(name, passed, detail="", status_if_not=FAIL, fix=""):
        detail = detail if passed or not fix else f"{detail}; fix: {fix}" if detail else f"fix: {fix}"
        results.append((name, PASS if passed else status_if_not, detail))

    metrics = json.loads(metrics_bytes) if metrics_bytes else {}
    code = judged_code_cells(nb)
    not_as_ran = code_not_as_ran(nb, ran if ran is not None else metrics.get(KERNEL_RAN), rerun)
    rule("the code is what the kernel ran: every code cell once, in order, from a fresh kernel", not_as_ran is None,
         not_as_ran or f"{len([c for c in code if c['source'].strip()])} code cells")
    intact, detail = handed_out_intact(nb)
    rule("[do not modify] cells, embedded tests and given code intact", intact, detail,
         fix="put the handed-out text back as the handout has it (your code goes between the TODO markers)")
    errors = [i for i, c in enumerate(code, 1) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    rule("no error output in any cell", not errors, f"errors in code cells {errors}" if errors else "",
         fix=f"mend the error, then {rerun}")
    passed = [f"{name}()" for name in EMBEDDED_TESTS
              if any(f"\n{name}()" in c["source"] and c.get("execution_count")
                     and not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code)]
    missed = [f"{name}()" for name in EMBEDDED_TESTS if f"{name}()" not in passed]
    rule("all five embedded tests ran and passed", len(passed) == 5,
         f"{len(passed)}/5" + (f", not passed: {', '.join(missed)}" if missed else ""),
         fix=f"mend the code each names until it passes, then {rerun}")
    prompts = [f"code cell {i}: {', '.join(found)}" for i, c in enumerate(code, 1)
               if (found := prompts_in(c["source"]))]
    rule("no cell waits for input (Run All goes start to end)", not prompts, "; ".join(prompts),
         fix="remove those calls: Run All must need no person")
    if pictures is None:
        pictures = linked_pictures(nb, metrics_bytes)
    problem = one_run_problem(nb, metrics_bytes, root, pictures)
    rule("the notebook, its metrics and its figures come from one run", problem is None, problem or "", fix=rerun)
    accuracy = metrics.get("final_test_accuracy", 0.0)
    rule("test accuracy >= 0.65 (assignment)", accuracy >= 0.65, f"{accuracy:.4f}",
         fix=f"the model or its training falls short: check the TODO code against its tests, then {rerun}")
    rule(f"test accuracy >= {min_accuracy:.2f} (ours: a warning, the handout's 0.65 decides)",
         accuracy >= min_accuracy, f"{accuracy:.4f}", status_if_not=WARN)
    description = plot_description(nb)
    rule("a markdown cell right below the per-token plot describes it",
         description is not None and words(description) >= 40,
         "none" if description is None else f"{words(description)} words",
         fix="right below the cell that draws the plot, a markdown cell of at least 40 words on what it shows "
             "and why")
    report = report_text(nb)
    count = words(report)
    rule("report has 300-600 words (as wc -w counts)", 300 <= count <= 600, f"{count} words",
         fix=f"{'shorten' if count > 600 else 'lengthen'} the report cells, then {rerun}")
    missing = [name for name, keys in REPORT_ELEMENTS.items() if not any(k in report.lower() for k in keys)]
    rule("report has its five required elements", not missing, f"missing: {', '.join(missing)}" if missing else "",
         fix="add each, as the handout's list under *Your report* asks")
    claims = report_verdicts(report, **report_numbers(metrics)) if metrics else None
    broken = [f"{sentence!r}: {verdict}" for sentence, verdict in (claims or {}).items()
              if verdict not in ("holds", "no longer in the report")]
    rule("every claim of the report holds for this run", claims is not None and not broken,
         "no metrics to check them on" if claims is None else "\n      ".join(broken) or
         f"{sum(verdict == 'holds' for verdict in claims.values())} claims",
         fix=rerun if claims is None else "reword each sentence named so that this run's numbers bear it out")
    unsupported = unsupported_numbers(report, metrics, handout_numbers(nb)) if metrics else None
    rule("every number in the report is one of this run's or of the handout", unsupported == [],
         "no metrics to compare with" if unsupported is None else
         "\n      ".join(unsupported) or f"{len(stated_numbers(report))} numbers",
         fix=rerun if unsupported is None else
         f"state each number named as this run has it (the report cells' f-strings quote the run's), then {rerun}")
    rule("report.md is the executed notebook's report", report_md is None or report_md == report,
         "written from the notebook" if report_md is None else
         "" if report_md == report else "report.md differs from the report the notebook shows: it was edited by "
         "hand or written by another run", fix=f"make edits in the notebook's report cells, then {rerun}")
    absent = [image for image in pictures.inside if not (root / image).is_file()]
    rule("every image the notebook links lies in its folder and exists", not absent and not pictures.refused,
         "; ".join(pictures.refused + ([f"missing: {', '.join(absent)}"] if absent else [])) or
         f"{len(pictures.inside)} images" + (f", yours: {', '.join(pictures.own)}" if pictures.own else ""),
         fix="keep each picture the notebook links in its folder (figures/, say), linked by a relative path")
    link = colab_link(nb)
    rule("a link to the Colab version near the top (deliverable)", link is not None,
         link or "empty: share the notebook from Colab and paste the link into the cell under the title",
         status_if_not=TODO)
    return results


def print_verdicts(results) -> None:
    for name, status, detail in results:
        print(f"{status}  {name}" + (f"  ({detail})" if detail else ""))


# --------------------------------------------------------------------------------------------------------------
# 6. The reading copy: the notebook as one HTML page that prints cleanly
# --------------------------------------------------------------------------------------------------------------


# Printed (Letter) or on a narrow screen, long lines of code and text output wrap at spaces, never inside a word (as
# nbconvert's lab styles let them), instead of being cut at the page edge or scrolling sideways; the cells' source is
# unchanged. Printed, code and text output are small enough that 88 characters, our code's limit, fit a Letter page's
# width with room to spare (about 110 characters, the widest table the notebook prints); tables size their columns by
# their content, padded, and wrap at spaces. Everywhere: fonts with the symbols and emoji the text uses, a math font
# for the formulas as MathML, and their columns aligned. Appended to the head, after nbconvert's lab styles.
WRAP_CODE_STYLE = """<style>
:root {
  --jp-content-font-family: system-ui, -apple-system, blinkmacsystemfont, 'Segoe UI', helvetica, arial, sans-serif,
    'DejaVu Sans', 'Segoe UI Symbol', 'Noto Sans Symbols', 'Noto Sans Symbols 2', 'Apple Color Emoji',
    'Segoe UI Emoji', 'Noto Color Emoji';
  --jp-ui-font-family: var(--jp-content-font-family);
  --jp-code-font-family: menlo, consolas, 'DejaVu Sans Mono', monospace, 'DejaVu Sans', 'Segoe UI Symbol',
    'Noto Sans Symbols', 'Noto Sans Symbols 2', 'Apple Color Emoji', 'Segoe UI Emoji', 'Noto Color Emoji';
}
math { font-family: 'STIX Two Math', 'Cambria Math', 'Latin Modern Math', 'DejaVu Math TeX Gyre', math; }
mtd[columnalign="left"] { text-align: -webkit-left; }  /* Chromium ignores columnalign: align*, cases */
mtd[columnalign="right"] { text-align: -webkit-right; padding-right: 0; }
mtd[columnalign="right"] + mtd[columnalign="left"] { padding-left: 0; }
@media print, screen and (max-width: 760px) {
  .jp-InputArea-editor .highlight pre, .jp-OutputArea-output pre {
    white-space: pre-wrap; overflow-wrap: normal; word-break: normal; overflow: visible;
  }
  .jp-OutputArea-output { display: block; overflow: visible; }  /* tables: no scroll bar, cut off on paper */
  /* as a block it no longer shares the row with the prompt: width 100% would run past the page by the prompt's */
  .jp-OutputArea-output { width: auto; }
  .jp-RenderedHTMLCommon table { table-layout: auto; max-width: 100%; font-size: 75%; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th {
    white-space: normal; overflow-wrap: normal; word-break: normal; padding: 2px 5px;
  }
}
@media print {
  .jp-InputArea-editor .cm-editor.cm-s-jupyter .highlight pre, .jp-OutputArea-output pre { font-size: 80%; }
  /* stderr (training's progress bars) on paper as plain text, not in an alarm-coloured box */
  .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] { background: none; }
}
</style>
"""


def _mathml(convert, latex: str, display: str, failed: list[str]) -> str | None:
    """One formula as MathML by latex2mathml's `convert`; None (and the formula added to `failed`) where it cannot
    convert it: an error, or a command it does not know, which it would print as its name."""
    try:
        mathml = convert(latex.strip(), display=display)
    except Exception:  # noqa: BLE001 - latex2mathml's parse errors share no base class
        failed.append(latex)
        return None
    # In \text{...}, latex2mathml keeps LaTeX's escapes as typed: \text{head\_dim} would print its backslash
    mathml = re.sub(r"<mtext>([^<]*)</mtext>",
                    lambda m: "<mtext>" + re.sub(r"\\([_%&$#{}])", r"\1", m.group(1)) + "</mtext>", mathml)
    # \mathit{softmax}: one italic word, not letters spaced as a product; \infty: a symbol, not an operator
    mathml = re.sub(r'(?:<mi mathvariant="italic">\w</mi>){2,}',
                    lambda m: '<mi style="font-style: italic">' + "".join(re.findall(r">(\w)<", m.group(0))) + "</mi>",
                    mathml)
    mathml = mathml.replace("<mo>&#x0221E;</mo>", "<mi>&#x0221E;</mi>")
    # A': the prime beside the letter, as the font draws it, not shrunk and raised again as a superscript
    mathml = re.sub(r"<msup>(<mi>[^<]*</mi>)<mi>&#x02032;</mi></msup>", r"<mrow>\1<mi>&#x02032;</mi></mrow>", mathml)
    if "\\" in mathml:
        failed.append(latex)
        return None
    return mathml


def _mathml_exporter(html_exporter):
    """nbconvert's HTML exporter (class) with the markdown's formulas turned into MathML as the markdown is parsed
    (so that its _, * and \\ inside $...$ stay math), which browsers draw with no script and no network. A formula
    it cannot convert stays LaTeX and is added to the exporter's `failed`. None where latex2mathml, an optional
    package, is not installed (Colab, a student's Python): then MathJax from its CDN draws the formulas, as
    nbconvert has it."""
    try:
        from jinja2 import pass_context
        from latex2mathml.converter import convert
        from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    except ImportError:
        return None

    class MathMLRenderer(IPythonRenderer):
        def __init__(self, failed: list[str], **options):
            super().__init__(**options)
            self.failed = failed

        def block_math(self, body):
            return _mathml(convert, body, "block", self.failed) or super().block_math(body)

        def inline_math(self, body):
            return _mathml(convert, body, "inline", self.failed) or super().inline_math(body)

        def latex_environment(self, name, body):
            return (_mathml(convert, f"\\begin{{{name}}}{body}\\end{{{name}}}", "block", self.failed)
                    or super().latex_environment(name, body))

    class MathMLExporter(html_exporter):
        def __init__(self, **options):
            super().__init__(**options)
            self.failed: list[str] = []  # the formulas of the last export that stayed LaTeX

        @pass_context
        def markdown2html(self, context, source):  # nbconvert's, with the renderer above
            renderer = MathMLRenderer(
                self.failed, escape=False, attachments=context.get("cell", {}).get("attachments", {}),
                embed_images=self.embed_images, path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
                **getattr(self, "lexer_options", {}))
            return MarkdownWithMath(renderer=renderer).render(source)

    return MathMLExporter


MATHJAX_SCRIPT = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.DOTALL)


@functools.cache
def _reading_copy_exporter():
    """One exporter per process (nbconvert compiles its page templates per exporter, a quarter of a second each):
    embedded images, the report cells' code left out (tagged REPORT_TAG in the copy it is given), formulas as
    MathML where latex2mathml is installed. None where nbconvert is missing."""
    try:
        from nbconvert import HTMLExporter
        from nbconvert.filters.strings import clean_html
        from nbconvert.preprocessors import TagRemovePreprocessor
    except ImportError:
        return None
    exporter = (_mathml_exporter(HTMLExporter) or HTMLExporter)(embed_images=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=[REPORT_TAG], enabled=True), enabled=True)
    # nbconvert sanitizes each code cell's highlighted source (most of an export's time); a cell unchanged since
    # the last export of this process gives the same text, sanitized once
    exporter.register_filter("clean_html", functools.lru_cache(maxsize=1024)(clean_html))
    return exporter


def notebook_html(nb, images_from: Path) -> str | None:
    """The notebook as one HTML page for a grader without Jupyter: nbconvert's export with the figures the
    markdown links embedded, the report cells showing their text and not the code that formats it (found by
    content, as Colab keeps no tags), long lines wrapped at spaces when printed, the markdown's formulas as MathML
    where latex2mathml is installed (and then no MathJax from the network, unless some LaTeX is left for it). None
    where nbconvert is missing."""
    exporter = _reading_copy_exporter()
    if exporter is None:
        return None
    import nbformat

    copy = as_notebook(nb)
    for cell in report_cells(copy):
        if cell["cell_type"] == "code":
            cell["metadata"]["tags"] = sorted({*_tags(cell), REPORT_TAG})
    as_mathml = hasattr(exporter, "failed")  # the MathML exporter has the list from its start; nbconvert's has none
    if as_mathml:
        exporter.failed.clear()
    body, _ = exporter.from_notebook_node(nbformat.from_dict(copy), resources={"metadata": {"path": str(images_from)}})
    latex_outputs = any("text/latex" in output.get("data", {}) for cell in copy["cells"]
                        for output in cell.get("outputs", []))  # MathJax draws those
    if as_mathml and not exporter.failed and not latex_outputs:
        body = MATHJAX_SCRIPT.sub("", body, count=1)
    return body.replace("</head>", WRAP_CODE_STYLE + "</head>", 1)


# --------------------------------------------------------------------------------------------------------------
# 7. The Moodle zip: its files, the archive, the builder, and the notebook's last cell in Colab
# --------------------------------------------------------------------------------------------------------------


def submission_files(nb, metrics_bytes: bytes | None, root: Path, pictures: Pictures | None = None) -> dict[str, bytes]:
    """The Moodle archive's files by name: the notebook as checked and its HTML reading copy (where nbconvert is
    installed), its report (what report.md holds), the run's metrics, this module, and every picture the notebook
    links from its folder: the run's figures and the student's own. Nothing of the appendix: the homework is whole
    without it."""
    root = Path(root)
    html = notebook_html(nb, root)
    files = {"homework3.ipynb": notebook_json(nb).encode("utf-8"),
             **({"homework3.html": html.encode("utf-8")} if html is not None else {}),
             "report.md": report_text(nb).encode("utf-8"),
             "metrics.json": metrics_bytes or b"",
             "hw3_helpers.py": Path(__file__).read_bytes()}
    if pictures is None:
        pictures = linked_pictures(nb, metrics_bytes)
    files.update({image: (root / image).read_bytes() for image in pictures.inside if (root / image).is_file()})
    return files


def run_date(metrics_bytes: bytes | None) -> tuple[int, int, int, int, int, int]:
    """When the run wrote its metrics (UTC), as a zip entry's date; 1980-01-01 where a run did not say."""
    try:
        written = datetime.strptime(json.loads(metrics_bytes)["written_at"], "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, KeyError):
        return (1980, 1, 1, 0, 0, 0)
    return max(written.timetuple()[:6], (1980, 1, 1, 0, 0, 0))


def write_zip(files: dict[str, bytes], target: Path, date_time=(1980, 1, 1, 0, 0, 0)) -> Path:
    """The archive, written whole or not at all. Every entry a plain file that unpacks readable by all (0644) and
    dated `date_time` (the run's), so that the same run's files give the same zip; names relative, inside it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            if name.startswith("/") or ".." in name.split("/") or "\\" in name or ":" in name:
                raise ValueError(f"zip entry {name!r} would unpack outside the archive's folder")
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            info.create_system = 3  # Unix, so that unzip reads those permissions
            archive.writestr(info, data)
    tmp.replace(target)
    return target


def build_submission(nb, metrics_bytes: bytes | None, root: Path, target: Path, report_md: str | None = None,
                     ran: dict[str, str] | None = None, rerun: str = RERUN) -> tuple[list, Path | None]:
    """Check a run by every rule and, unless a rule other than the link's fails, write its zip: the one builder of
    `make zip` and of the notebook's last cell. Prints each verdict; returns them and the zip (None if refused,
    and then nothing is written: an older zip stays as it was)."""
    pictures = linked_pictures(nb, metrics_bytes)  # once, for the check and the zip
    results = check_submission(nb, metrics_bytes, root, report_md, ran, rerun, pictures=pictures)
    print_verdicts(results)
    failed = [name for name, status, _ in results if status == FAIL]
    if failed:
        print(f"check failed: {len(failed)} of {len(results)} rules ({'; '.join(failed)}); no zip written")
        return results, None
    files = submission_files(nb, metrics_bytes, root, pictures)
    write_zip(files, target, run_date(metrics_bytes))
    print(f"wrote {target}: {', '.join(files)}")
    if pictures.own:
        print(f"your own pictures in it (the run did not write them): {', '.join(pictures.own)}")
    if "homework3.html" not in files:
        print("(no HTML reading copy in it: this Python has no nbconvert; `pip install nbconvert` adds it)")
    for name, status, _ in results:
        if status == TODO:  # does not block the zip: the link can only exist once the notebook is in Colab
            print(f"still to do before you submit: {name}")
        elif status == WARN:
            print(f"a warning, which does not block the zip: {name}")
    return results, Path(target)


def submit_from_colab(timeout: float = 60.0) -> Path | None:
    """The notebook's last cell. In Colab: read this notebook as the browser shows it (outputs included), check it
    by `make check`'s rules, write hw3_submission.zip and hand it to the browser to download. Anywhere else:
    write nothing, and say how to make the zip there. It never waits for a person and never raises."""
    try:
        from google.colab import _message, files
    except ImportError:
        print("Moodle zip: this is not Colab, so this cell writes nothing; in a terminal, `make zip` (or "
              "`python -m hw3tools zip`) checks and zips the last run, a run saved from Jupyter included.")
        return None
    try:
        reply = _message.blocking_request("get_ipynb", timeout_sec=timeout)
    except Exception as error:  # noqa: BLE001 - Colab's MessageError or a broken channel: say so, end the run
        print(f"Moodle zip: Colab refused to hand over the notebook ({type(error).__name__}: {error}); run this "
              "cell again, or download it by hand (File > Download > Download .ipynb) with the figures it links.")
        return None
    if not reply or "ipynb" not in reply:
        print(f"Moodle zip: Colab did not hand over the notebook within {timeout:.0f} s; run this cell again, or "
              "download it by hand (File > Download > Download .ipynb) with the figures it links.")
        return None
    root = output_dir()
    metrics = root / "build" / "metrics.json"
    _, target = build_submission(as_notebook(reply["ipynb"]), metrics.read_bytes() if metrics.is_file() else None,
                                 root, root / "hw3_submission.zip", ran=kernel_record(), rerun=COLAB_RERUN)
    if target is not None:
        files.download(str(target))
    return target


# --------------------------------------------------------------------------------------------------------------
# 8. Generated by `python -m hw3tools handout PATH` from the handout: do not edit by hand
# --------------------------------------------------------------------------------------------------------------


# Every handed-out cell in order, as (fingerprint, first line): the sha256 of the cell's type and its significant
# lines with the TODO bodies removed (`handed_out_cells`). Made from the assignment's text; the tests hold it there.
HANDED_OUT_CELLS = (
    ("07047be3e1d95b539f5aebb2fad94772b59b2a53d7610d0daa35fd85ec994154",
     "# Homework 3: GPT-OSS-20B Transformer Architecture"),
    ("0eb24a739dcfdd295160096d970c17a707a0851e8622329bff17bd88ae38fd7f",
     "### Deliverables"),
    ("374f2db448c0840426807992742c41623a5fece474dbdc8ace92678e80ce0eda",
     "## Part 1: Description of the Architecture"),
    ("715f8f9c10c8b635137ccbcd4168e07fe5ed4b0f3ee9df84cd1d8dc6e19bdba0",
     "### Brief Description of the Transformer Pipeline"),
    ("f5d42fbb479f860f057500149e74ede59e18af0a6fc753a80680edec77564461",
     "#### The Input"),
    ("60eebb77d9dceb2affff9daf48f6763b2c2d3b54cb365e70f3fbef111dbdb15b",
     "#### The Output"),
    ("41ca61787de97bb00b47692d6a37193726fca6af477f213b9a10ede7de1c7608",
     "#### Transformer Processing Pipeline - Overview"),
    ("0dbc1a8667a391fc4104c54cd280063c18190c9d5107fd361025da0a950659b3",
     "### Architecture of GPT-OSS-20B"),
    ("4b4684081c4d3d13455b8dda33382d7910792f7b8e640819540d955960617f26",
     "### Grouped Query Attention"),
    ("2ee6d339b05f88b80a2c04007624957456854f4226fdd134ea80508240c702f6",
     "### Mixture of Experts"),
    ("7f0a37521a94c902dcfd38e39460fc56068efc66746dff88884d84fec01b2555",
     "### Rotary Positional Embedding (RoPE)"),
    ("a08decba7af2acaded56128d87160d3852836e84e948f0e7f450e943607911a9",
     "### Sliding Window Attention"),
    ("910575a4ae93d883f884a0eec1c3e5d6f987e2633082e6f1fe5bcde9daed4edc",
     "### SwiGLUFeedForward"),
    ("71eba04c7b3d67c02d687fe046d7c525a86615e5d50ae0a0a63717b24364d03e",
     "## Part 2: Implementation of the Architecture (total 9 points)"),
    ("ab34cd1216d8431e329ce61026c48c12c85a5e9473ccb2ddb6c4fc1f0ab4d66b",
     "#[do not modify]"),
    ("6542d61842b18e7480d287f6a1d30fee4e62d6f137944509abdfa5ebbc1d5c87",
     "### SwiGluFeedForward (1 point)"),
    ("afe5071d82263020d9f7357d0ad98bcfeb21f6c82e69a9ac014275cf929e0f51",
     "class SwiGLUFeedForward(torch.nn.Module):"),
    ("e7a65a5a401807a4e37a90ef1d884ba35f9dc27d2d771177fa4c783e3e2b4f3b",
     "### Rotary Positional Embedding (RoPE, 1 point)"),
    ("5154ec5ae0012f0b739798d27ab744a3e554ef0be4fbec4c4421bea154c21051",
     "class RotaryPositionalEmbedding(torch.nn.Module):"),
    ("881525b99c7b45f821f90717d70362193c3ef35bcca1917c17f898ffa1637855",
     "##### TESTS START #####"),
    ("eb77fa13f3a465f4dc7782f8838f07376b5b4f2be3f3d5d8217a54319c74b9ba",
     "### Attention Mechanism: Detailed Computation"),
    ("db25470d010d3a24b58c3d9ed623be8d6300b00e65a399139692f5f7124f2614",
     "#### Notation"),
    ("acacbdc917bd1f722d4a31a09d9ce260956011641cf03b63fec15b7c8b260656",
     "#### Forward Pass"),
    ("b4f8bbe7370051ec5fa8ce64ebf5397e087574bedd9636c3b00c0b942b053525",
     "### Grouped Query Attention (2 points)"),
    ("ab88519fc91eea2c8e5c1566f257d937ce2156bbdbea752b71b83e1909dfe560",
     "def calculate_attention("),
    ("54a185150340eba5b889138d731ffd3285b91930b7fe17819e5eac04837f60b8",
     "##### TESTS START #####"),
    ("a5bad2f1c2e403d75300a585fb9c47c70aa1e9184b9cc8e4e6ee708523122f20",
     "### Sliding Window Attention (1 point)"),
    ("0fd7ab904fcd5b4df3ffa1f6c1f23b564aed78971bc2da82e80f0ab1f52df9f2",
     "#### Implementation Details"),
    ("82f48f389a54dad27bdac80dfb5df40cf0553f1fb7dde3a01c7fc076635bd6d0",
     "#### Forward Pass"),
    ("d0d565a34ada693d711ae4bae6f9aa3edca63b63b2674bb39ecfcabb58b5f159",
     "def calculate_sliding_attention("),
    ("ab2fbd6fdcaf95528954936e9009516b049f8f92b5d68d17cd0d32502180587d",
     "##### TESTS START #####"),
    ("76a59f110e59db34985076f9a64983781530c1924fd7ab3b523e5e355d659923",
     "### Mixture of Experts (2 points)"),
    ("6fcef8e1e0bb222f9f3c109c945701383da0afc516e00d9997b31ace1c7c2384",
     "class Router(torch.nn.Module):"),
    ("5266df608fb3fc359acb8b5ecb7d18ad3028ac6f2dfd14c7d412dca7f4a910fe",
     "### Implement Transformer Block (1 point)"),
    ("104a4d8b74153b64265d47b697a37dbe44b5fd31d76db79121a75ed9b71a442e",
     "class TransformerBlock(torch.nn.Module):"),
    ("df055e30ff363e43eb789e7129c572e7553252bcc79ccffd6c0fe9b0930efb4e",
     "### The Model Processing Pipeline (1 point)"),
    ("996255129817d0b49475de69e0526b646ca9cb1273c56814f26fd4569ddb8668",
     "class Transformer(torch.nn.Module):"),
    ("591d74bb23d4cebc23474b504ea53d5c8ff3023c781d48c58e49b7b639a6a792",
     "##### TESTS START #####"),
    ("1672b1ee36065b60193f6829ef0d4f6a9e150fde9132c4db5a630ac29f547599",
     "## Part 3: Data Preparation, Training, Evaluation and Report (6 points)"),
    ("912a01c197d2d20c7736f8cf7fcaf0b661cbb318eae40e2067f20ddefb884218",
     "#[do not modify]"),
    ("9bfdd890951cce25b552ee47198ef0f3aacf5812c7b4673ef613911eb855ef3a",
     "#[do not modify]"),
    ("de2c58bef59348f272bf6af860cdea4dc010409f3141328d06e4103a4da1edbb",
     "#[do not modify]"),
    ("fa0dedc85f423ef19c26e8468fac5a675a73edaf9793c5033d43568b3d445ce4",
     "### Training and Evaluation (1 point)"),
    ("edb9e995ea853ec6ecf91a6ebf544c2d7fb1787a63a5a68ebe61a0c271fbce76",
     "from tqdm import tqdm"),
    ("aa7c76da6deabf171dc73eae7cf7121b700b8aabfe47e982203a1ba2b1c91717",
     "model = Transformer("),
    ("bfed9b02ffb4f1af2cdb79a485d8a634f80f25646b9e8c2872664345ef967de1",
     "### Using the Model"),
    ("0a22ef3fda7f0cb754e4c47b03e89856fcc9f778f872b113b02605a01a35cb19",
     "#### Implement Generation (1 point)"),
    ("97929a73292a8914437181e002205cea4e6f5ab541c9fba1086271f959f346fe",
     "@torch.no_grad()"),
    ("33b65c95184cdec6c282c14eef91eeb6be697a5178090dc267b08b3540f33966",
     "#### Implement Nucleus Sampling and Temperature (1 point)"),
    ("b29cfec88c7b5757616cc37a7deb625092504d5747c7815068b1f7b964ad37aa",
     "@torch.no_grad()"),
    ("a3c2fcd95a757cf1d9bbe9d630e1396e4e47af26143c068cb46d96b2d1302b59",
     "##### TESTS START #####"),
    ("b66fdbc62c852610f2e7ff79a33d48669f810a84edc6ea8829f5e93ec4a3f64c",
     "You can check responses of your model using the code below"),
    ("4e70bb46aaa1fbbbe4b58613e5f224c6871b96738d21a51579196cf6170dec78",
     "### Additional Evaluation"),
    ("e33846918683163b89085a51ccdb6ce1075cbcf157e71c1e018fbc8455097a7f",
     "#### Per Token Accuracy (1 point)"),
    ("b03f08d172dbe424a7c1d90f05b28abcc153291d9000f8d3e28ca8099b67c520",
     "import matplotlib.pyplot as plt"),
    ("6e32ad76167f149f74edf228add1fc43e3c5f6942ce4310ac9307c657e086a32",
     "## Your report (min 300 words - max 600 words) (2 points)"),
)
