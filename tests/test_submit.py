"""The Moodle zip on every route: the notebook's last cell in Colab (with a stand-in for Colab's frontend), `make
check` and `make zip` on a `make run` notebook or on one saved from Jupyter, and the Colab link pasted after a run.
Small notebooks made for the purpose; tests/test_e2e.py and tests/test_jupyter.py do the same on whole runs."""
import json
import shutil
import sys
import types
from pathlib import Path

import colab_standin
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import hw3_helpers as hw3
from hw3tools import check, runs
from hw3tools import notebook as runner

EXPORT_CELL = next(c.source for c in nbformat.read(runner.NOTEBOOK, as_version=4).cells
                   if hw3.is_export_cell(c))
LINK = "https://colab.research.google.com/drive/1AbC-xyz"


def small_notebook(folder: Path, *cells) -> Path:
    """A notebook whose last cell is the real export cell, with hw3_helpers.py beside it."""
    shutil.copy(runner.ROOT / "hw3_helpers.py", folder / "hw3_helpers.py")
    nb = new_notebook(cells=[*cells, new_code_cell(EXPORT_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "homework3.ipynb")
    return folder / "homework3.ipynb"


def printed(executed: Path) -> str:
    last = nbformat.read(executed, as_version=4).cells[-1]
    return "".join(o.get("text", "") for o in last.outputs)


def test_outside_colab_the_export_cell_writes_nothing_and_says_how_to_zip_there(tmp_path):
    executed = runner.run_notebook(small_notebook(tmp_path, new_code_cell("x = 1")), tmp_path / "out",
                                   log=lambda *a, **k: None)
    said = printed(executed)
    assert len(said.strip().splitlines()) == 1 and "make zip" in said and "not Colab" in said
    assert not list(tmp_path.rglob("*.zip"))


def test_the_notebook_alone_says_in_one_line_what_to_drop_beside_it(tmp_path):
    source = small_notebook(tmp_path, new_code_cell("x = 1"))
    (tmp_path / "hw3_helpers.py").unlink()
    said = printed(runner.run_notebook(source, tmp_path / "out", log=lambda *a, **k: None))
    assert len(said.strip().splitlines()) == 1 and "hw3_helpers.py" in said and "by hand" in said


def test_when_colabs_frontend_does_not_answer_the_run_ends_without_error_and_says_what_to_do(tmp_path):
    env = colab_standin.install(tmp_path, answer="none")
    executed = runner.run_notebook(small_notebook(tmp_path, new_code_cell("x = 1")), tmp_path / "out", env=env,
                                   on_cell_execute=colab_standin.frontend_hook(tmp_path), log=lambda *a, **k: None)
    said = printed(executed)
    assert "did not hand over the notebook" in said and "run this cell again" in said
    assert colab_standin.downloads(tmp_path) == [] and not list(tmp_path.rglob("*.zip"))


def test_in_colab_a_notebook_that_breaks_a_rule_is_not_zipped_and_the_rule_is_named(tmp_path):
    env = colab_standin.install(tmp_path)
    executed = runner.run_notebook(small_notebook(tmp_path, new_code_cell("x = 1")), tmp_path / "out", env=env,
                                   on_cell_execute=colab_standin.frontend_hook(tmp_path), log=lambda *a, **k: None)
    said = printed(executed)
    assert "FAIL  [do not modify] cells, embedded tests and given code intact" in said
    assert "no zip written" in said and colab_standin.downloads(tmp_path) == []
    frontend = json.loads((tmp_path / "frontend.ipynb").read_text(encoding="utf-8"))
    nbformat.validate(nbformat.from_dict(json.loads(hw3.notebook_json(hw3.as_notebook(frontend)))))
    assert isinstance(frontend["cells"][0]["source"], list) and "colab" in frontend["metadata"]
    assert frontend["cells"][-1]["outputs"] == [], "the stand-in must hand over the notebook as the cell starts"


def test_make_zip_and_the_export_cell_call_the_same_builder_and_rubric(tmp_path, monkeypatch):
    assert check.build_submission is hw3.build_submission  # one builder, imported, not a copy
    assert check.check_submission is hw3.check_submission  # one rubric: `make check` prints its verdicts
    calls = []

    def spy(nb, metrics, root, target, report_md=None, ran=None, rerun=None):
        calls.append(target)
        return [], None

    monkeypatch.setattr(hw3, "build_submission", spy)
    monkeypatch.setattr(check, "build_submission", spy, raising=False)
    nb = new_notebook(cells=[new_code_cell("x = 1", execution_count=1)])
    nbformat.write(nb, tmp_path / "homework3.ipynb")
    check.main(["zip"], tmp_path)
    colab = types.ModuleType("google.colab")
    colab._message = types.SimpleNamespace(blocking_request=lambda *a, **k: {"ipynb": colab_standin.colab_form(nb)})
    colab.files = types.SimpleNamespace(download=lambda path: None)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv(hw3.OUTPUT_ENV, str(tmp_path))
    hw3.submit_from_colab()
    assert len(calls) == 2, "make zip and the notebook's last cell must both go through hw3_helpers' builder"


def link_notebook(link_text="*(not shared yet)*"):
    link = new_markdown_cell(f"{hw3.COLAB_LEAD} {link_text}")
    link.metadata["tags"] = [hw3.ADDED_TAG, hw3.COLAB_TAG]
    return new_notebook(cells=[new_markdown_cell("# Title"), link, new_markdown_cell("How to read (added)."),
                               new_code_cell("x = 1")])


def test_after_make_run_the_link_and_any_markdown_need_no_new_run_and_code_does():
    ran = hw3.as_notebook(link_notebook())
    ran["cells"][3]["execution_count"] = 1
    record = {"1": "x = 1"}
    source = hw3.as_notebook(link_notebook(f"[open in Colab]({LINK})"))
    source["cells"][2]["source"] = "How to read (added), one word more."
    zipped = runs.with_outputs_of(source, ran)
    assert hw3.colab_link(zipped) == LINK and zipped["cells"][2]["source"].endswith("one word more.")
    assert hw3.code_not_as_ran(zipped, record) is None
    source["cells"][3]["source"] = "x = 2"
    assert "was changed after it ran" in hw3.code_not_as_ran(runs.with_outputs_of(source, ran), record)


def test_the_link_cell_is_found_by_its_first_words_where_tags_are_gone():
    nb = hw3.as_notebook(colab_standin.colab_form(link_notebook(LINK)))
    assert not any(cell["metadata"].get("tags") for cell in nb["cells"])
    assert hw3.colab_link(nb) == LINK


def test_a_run_stamped_before_the_link_was_set_aside_is_still_read_as_it_was():
    nb = hw3.as_notebook(link_notebook())
    nb["metadata"][runs.RUN_KEY] = {"sources_sha256": runs.sources_fingerprint(nb, link_cell_aside=False)}
    assert not runs.edited_after_run(nb)
    nb["cells"][1]["source"] += " " + LINK
    assert runs.edited_after_run(nb)


def test_a_report_figure_is_shown_as_the_image_and_reaches_report_md_as_its_link():
    heading = new_markdown_cell(hw3.REPORT_HEADING + " (min 300 words - max 600 words)")
    cell = new_code_cell("report(...)")
    cell.outputs = [new_output("display_data", data={"text/markdown": "**Part.** Text."}),
                    new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                                     "text/plain": "![A figure](figures/a.png)"})]
    check_cell = new_code_cell("report_check = hw3.check_report(report_parts.values())")
    check_cell.outputs = [new_output("display_data", data={"text/markdown": "All claims hold."})]
    nb = new_notebook(cells=[heading, cell, check_cell])
    assert hw3.report_text(nb) == "**Part.** Text.\n\n![A figure](figures/a.png)\n"
    colab = hw3.as_notebook(colab_standin.colab_form(nb))  # no tags: the check is found by its call
    assert hw3.report_text(colab) == hw3.report_text(nb)
    assert hw3.linked_pictures(colab, None).inside == ["figures/a.png"]


def stamped_run(folder: Path) -> dict:
    """A notebook that printed the stamp of the metrics and figures written beside it."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = new_markdown_cell("![A](figures/a.png)")
    code = new_code_cell("print(...)", execution_count=1)
    os.environ[hw3.OUTPUT_ENV] = str(folder)
    try:
        fig, _ = plt.subplots()
        hw3.save_figure(fig, "a.png")  # a figure this run writes
        plt.close(fig)
        stamp = hw3.write_metrics({"final_test_accuracy": 0.85})
    finally:
        del os.environ[hw3.OUTPUT_ENV]
    code.outputs = [new_output("stream", name="stdout", text=f"wrote build/metrics.json, run stamp {stamp}\n")]
    return hw3.as_notebook(new_notebook(cells=[cell, code]))


def test_the_notebook_its_metrics_and_its_figures_must_come_from_one_run(tmp_path):
    nb = stamped_run(tmp_path)
    metrics = tmp_path / "build" / "metrics.json"
    assert hw3.one_run_problem(nb, metrics.read_bytes(), tmp_path) is None
    drawn = (tmp_path / "figures" / "a.png").read_bytes()
    (tmp_path / "figures" / "a.png").write_bytes(b"another run's figure")
    assert "figures/a.png" in hw3.one_run_problem(nb, metrics.read_bytes(), tmp_path)
    (tmp_path / "figures" / "a.png").write_bytes(drawn)
    assert "another run's" in hw3.one_run_problem(nb, metrics.read_bytes() + b" ", tmp_path)
    assert "no run stamp" in hw3.one_run_problem(
        hw3.as_notebook(new_notebook(cells=[new_code_cell("x")])), metrics.read_bytes(), tmp_path)


def test_with_a_saved_run_and_a_make_run_notebook_the_newer_is_taken_and_named(tmp_path, capsys):
    import os

    saved = new_notebook(cells=[new_code_cell("x = 1", execution_count=1)])
    nbformat.write(saved, tmp_path / "homework3.ipynb")
    (tmp_path / "build").mkdir()
    made = new_notebook(cells=[new_code_cell("x = 1", execution_count=1)])
    nbformat.write(made, tmp_path / "build" / "homework3.ipynb")
    os.utime(tmp_path / "homework3.ipynb", (1e9, 1e9))
    assert check.choose_run(tmp_path)[1] == tmp_path / "build" / "homework3.ipynb"
    assert "newer than homework3.ipynb (saved from Jupyter), which is left out" in capsys.readouterr().out
    os.utime(tmp_path / "build" / "homework3.ipynb", (1e8, 1e8))
    assert check.choose_run(tmp_path)[1] == tmp_path / "homework3.ipynb"
    assert "left out" in capsys.readouterr().out


def test_zip_without_any_run_names_both_ways_to_make_one(tmp_path, capsys):
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), tmp_path / "homework3.ipynb")  # never run
    assert check.main(["zip"], tmp_path) == 1
    said = capsys.readouterr().out
    assert "make run" in said and "save the notebook" in said and not (tmp_path / "build").exists()
