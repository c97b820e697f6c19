"""The notebook carries the assignment verbatim: every handed-out cell, in order, TODO markers kept."""
import ast
import json
from pathlib import Path

import nbformat
import pytest
from support import handed_out_lines

import hw3_helpers as hw3
from hw3_helpers import HANDED_OUT_CELLS
from hw3tools import handout
from hw3tools import notebook as runner

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = ROOT.parent / "shared" / "assignment" / "000_900078325203ea3f.txt"


@pytest.fixture(scope="module")
def nb():
    return nbformat.read(runner.NOTEBOOK, as_version=4)


def test_the_handed_out_cells_are_the_tables_in_order(nb):
    """The one fingerprint of the handout (HANDED_OUT_CELLS, which the rubric carries): each handed-out cell's type
    and significant lines, TODO bodies removed, in order."""
    assert [form for form, _ in hw3.handed_out_cells(hw3.as_notebook(nb))] == [
        expected for expected, _ in HANDED_OUT_CELLS], "a handed-out cell was changed, moved or dropped"


@pytest.mark.skipif(not ASSIGNMENT.exists(), reason="the assignment text lives outside this clone")
def test_the_table_is_the_assignments(nb):
    """Made from the assignment's text export, as `make handout` reads it: the same cells, nothing in between, and
    the notebook's handed-out text is the assignment's, line for line."""
    cells, between = handout.read_handout(ASSIGNMENT, handout.notebook_cells(runner.NOTEBOOK))
    assert between == []
    assert [hw3.fingerprint([kind, *lines]) for kind, lines in cells] == [e for e, _ in HANDED_OUT_CELLS]
    assert handed_out_lines(nb) == hw3.significant_lines(ASSIGNMENT.read_text(encoding="utf-8"))


def test_do_not_modify_cells_are_whole_code_cells(nb):
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("#[do not modify]")]
    given = [first for _, first in HANDED_OUT_CELLS if first == "#[do not modify]"]
    assert len(cells) == len(given) == 4
    assert not any(hw3.is_added(c) or hw3.TODO_START in c.source for c in cells)


def test_embedded_tests_are_present_and_called(nb):
    assert len(hw3.EMBEDDED_TESTS) == 5
    for name in hw3.EMBEDDED_TESTS:
        cells = [c for c in nb.cells if c.cell_type == "code" and f"def {name}()" in c.source]
        assert len(cells) == 1 and f"\n{name}()" in cells[0].source, name


def test_todo_markers_are_kept_and_filled(nb):
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    starts = sum(s.count(hw3.TODO_START) for s in sources)
    ends = sum(s.count(hw3.TODO_END) for s in sources)
    assert starts == ends == 23  # the handout's; the table's fingerprints hold each marker in place
    for source in sources:
        if hw3.TODO_START in source:
            bodies = source.split(hw3.TODO_START)[1:]
            assert all(body.split(hw3.TODO_END)[0].strip() for body in bodies), "an empty TODO block"


def test_graded_code_does_not_call_torch_attention(nb):
    graded = [c.source for c in nb.cells if c.cell_type == "code" and not hw3.is_added(c)]
    assert not any("scaled_dot_product_attention" in s for s in graded)


def committed_notebook():
    """homework3.ipynb as committed: from git where this is a clone (a student may have saved a run from Jupyter
    into the working copy, which is how that route works), else the file itself, unless it holds such a run."""
    import subprocess

    shown = subprocess.run(["git", "show", f"HEAD:{runner.NOTEBOOK.name}"], cwd=ROOT, capture_output=True, text=True,
                           encoding="utf-8")
    if shown.returncode == 0:
        return nbformat.reads(shown.stdout, as_version=4)
    nb = nbformat.read(runner.NOTEBOOK, as_version=4)
    if any(c.get("execution_count") for c in nb.cells if c.cell_type == "code"):
        pytest.skip("homework3.ipynb holds a run saved from Jupyter, and there is no git history to read")
    return nb


def test_committed_notebook_is_clean():
    nb = committed_notebook()
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
        hidden = set(runner.HIDDEN_SOURCE) if hw3.REPORT_TAG in cell.metadata.get("tags", []) else set()
        assert set(cell.metadata) <= {"tags"} | hidden
    assert set(nb.metadata) <= {"kernelspec", "language_info"}


def added_code_lines(cell) -> int:
    return len(cell.source.splitlines())


def report_heading(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.source.startswith(hw3.REPORT_HEADING))


def report_end(nb) -> int:
    """The index of the first cell after the report: the next heading of the report heading's level."""
    heading = report_heading(nb)
    return next(i for i, c in enumerate(nb.cells) if i > heading and c.cell_type == "markdown"
                and c.source.startswith("## "))


def test_the_grader_reaches_the_report_through_the_handout_and_little_else(nb):
    """Up to the end of the report: a setup cell of at most 15 lines, no added code cell over 25 lines, and between
    the per-token plot's description and the report heading at most 60 lines of code in all (the best possible
    accuracy, where the curve levels off, the report's figure, and report())."""
    heading, end = report_heading(nb), report_end(nb)
    added = [c for c in nb.cells[:end] if c.cell_type == "code" and hw3.is_added(c)]
    setup = next(c for c in added if "set_num_threads" in c.source)
    assert added_code_lines(setup) <= 15
    assert max(added_code_lines(c) for c in added) <= 25
    plot = next(i for i, c in enumerate(nb.cells) if "per_token_acc = calc_per_token_acc(" in c.source)
    between = [c for c in nb.cells[plot + 2:heading] if c.cell_type == "code"]
    assert nb.cells[plot + 1].cell_type == "markdown" and sum(map(added_code_lines, between)) <= 60


def test_the_report_is_followed_only_by_the_runs_numbers_and_the_moodle_zip(nb):
    after = nb.cells[report_end(nb):]
    assert [(c.cell_type, c.source.splitlines()[0] if c.cell_type == "markdown" else hw3.is_export_cell(c))
            for c in after] == [("markdown", "## Saving the run, and the Moodle zip (added)"), ("code", False),
                                ("markdown", "In Colab, the cell below reads this notebook as the browser shows it and "
                                             "checks it by the rules of `make check` (the"), ("code", True)]
    assert "hw3.save_run(" in after[1].source
    assert hw3.RUN_ID.search(after[1].source.replace("{run_id}", "0123456789ab")), "the run id the rubric reads"
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    assert not any("beyond the assignment" in line.lower() or "appendix" in line.lower() for line in headings)


def test_the_training_todo_holds_the_loop_and_a_short_log_only(nb):
    cell = next(c for c in nb.cells if c.cell_type == "code" and "def train(" in c.source)
    body = cell.source.split(hw3.TODO_START)[1].split(hw3.TODO_END)[0].strip().splitlines()
    assert len(body) <= 25
    assert "F.cross_entropy" in cell.source and "clip_grad_norm_" in cell.source and "training_log" in cell.source
    assert "state_dict" not in cell.source and "setdefault" not in cell.source  # no weight snapshots, no tricks


def test_no_cell_rewrites_other_cells(nb):
    for cell in nb.cells:
        assert "input_transformers" not in cell.source and "register_magic" not in cell.source


def test_the_graded_path_never_imports_the_module_and_the_cells_after_it_run_without_it(nb):
    """The homework needs the handout's packages only: up to the end of the report no cell names hw3_helpers; each
    cell after it that uses the module imports it itself and, where it is absent, says in one line what is missing
    and does nothing else (no `hw3 = None` carried into later cells to guard them)."""
    end = report_end(nb)
    graded = "\n".join(c.source for c in nb.cells[:end] if c.cell_type == "code")
    assert "hw3_helpers" not in graded and "hw3." not in graded and "hw3tools" not in graded
    using = [c for c in nb.cells[end:] if c.cell_type == "code" and "hw3." in c.source]
    assert len(using) == 2, "the cell that saves the run, and the Moodle zip's"
    for cell in using:
        tree = ast.parse(cell.source)
        [guard] = [node for node in tree.body if isinstance(node, ast.Try)]
        assert ast.unparse(guard.body[0]) == "import hw3_helpers as hw3"
        [handler] = guard.handlers
        assert handler.type.id == "ModuleNotFoundError" and "hw3_helpers.py" in ast.unparse(handler)
        assert [ast.unparse(node) for node in handler.body if not isinstance(node, ast.Expr)] == []  # prints only
        assert all("hw3" not in ast.unparse(node) for node in tree.body if node is not guard)
    for cell in nb.cells:
        assert "if hw3 is not None" not in cell.source and "hw3 = None" not in cell.source


def test_the_manifest_fingerprints_each_handed_out_cell_of_the_notebook(nb):
    """The rubric's copy (in hw3, which ships beside the notebook and runs in Colab) is the notebook's."""
    assert [expected for expected, _ in HANDED_OUT_CELLS] == [found for found, _ in hw3.handed_out_cells(nb)]


def test_cells_a_student_adds_are_allowed_and_a_changed_given_cell_is_named(nb):
    from hw3_helpers import handed_out_intact

    student = nbformat.v4.new_markdown_cell("My own note between two given cells, not tagged.")
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    nb.cells.insert(30, student)
    assert handed_out_intact(nb)[0]
    router = next(c for c in nb.cells if c.source.startswith("class Router"))
    router.source = router.source.replace("def forward", "def forward_renamed", 1)
    intact, detail = handed_out_intact(nb)
    assert not intact and "class Router" in detail
