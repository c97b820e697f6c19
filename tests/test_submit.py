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
from hw3tools import check
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
    zipped = hw3.with_outputs_of(source, ran)
    assert hw3.colab_link(zipped) == LINK and zipped["cells"][2]["source"].endswith("one word more.")
    assert hw3.code_not_as_ran(zipped, record) is None
    source["cells"][3]["source"] = "x = 2"
    assert "was changed after it ran" in hw3.code_not_as_ran(hw3.with_outputs_of(source, ran), record)


def test_the_link_cell_is_found_by_its_first_words_where_tags_are_gone():
    nb = hw3.as_notebook(colab_standin.colab_form(link_notebook(LINK)))
    assert not any(cell["metadata"].get("tags") for cell in nb["cells"])
    assert hw3.colab_link(nb) == LINK


def test_a_run_stamped_before_the_link_was_set_aside_is_still_read_as_it_was():
    nb = hw3.as_notebook(link_notebook())
    nb["metadata"][hw3.RUN_KEY] = {"sources_sha256": hw3.sources_fingerprint(nb, link_cell_aside=False)}
    assert not hw3.edited_after_run(nb)
    nb["cells"][1]["source"] += " " + LINK
    assert hw3.edited_after_run(nb)


def test_a_report_figure_is_shown_as_the_image_and_reaches_report_md_as_its_link():
    heading = new_markdown_cell(hw3.REPORT_HEADING + " (min 300 words - max 600 words)")
    cell = new_code_cell("report(...)")
    cell.outputs = [new_output("display_data", data={"text/markdown": "**Part.** Text."}),
                    new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                                     "text/plain": "![A figure](figures/a.png)"})]
    saved = new_code_cell("run_id = hw3.save_run(...)")
    saved.outputs = [new_output("stream", name="stdout", text="saved build/metrics.json (run id 0123456789ab)\n")]
    nb = new_notebook(cells=[heading, cell, new_markdown_cell("## Saving the run, and the Moodle zip (added)"),
                             saved])
    assert hw3.report_text(nb) == "**Part.** Text.\n\n![A figure](figures/a.png)\n"
    colab = hw3.as_notebook(colab_standin.colab_form(nb))  # no tags: the report ends at the next heading
    assert hw3.report_text(colab) == hw3.report_text(nb)
    assert hw3.linked_pictures(colab, None).inside == ["figures/a.png"]


def run_with_a_figure(folder: Path, monkeypatch, metrics=None) -> dict:
    """A notebook that printed the run id of the metrics written beside it, by a kernel that saved figures/a.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cell = new_markdown_cell("![A](figures/a.png)")
    code = new_code_cell("print(...)", execution_count=1)
    monkeypatch.setenv(hw3.OUTPUT_ENV, str(folder))
    monkeypatch.setattr(hw3, "kernel_record", lambda: {"1": 'fig.savefig(FIGURES / "a.png")'})
    fig, _ = plt.subplots()
    (folder / "figures").mkdir(exist_ok=True)
    fig.savefig(folder / "figures" / "a.png")  # a figure this run writes
    plt.close(fig)
    run_id = hw3.write_metrics(metrics or {"final_test_accuracy": 0.85})
    code.outputs = [new_output("stream", name="stdout", text=f"saved build/metrics.json and build/model.pt "
                                                             f"(run id {run_id})\n")]
    return hw3.as_notebook(new_notebook(cells=[cell, code]))


def test_the_notebook_its_metrics_and_its_figures_must_come_from_one_run(tmp_path, monkeypatch):
    nb = run_with_a_figure(tmp_path, monkeypatch)
    metrics = tmp_path / "build" / "metrics.json"
    assert json.loads(metrics.read_bytes())["figures"].keys() == {"figures/a.png"}
    assert hw3.run_id(nb) == hw3.file_digest(metrics.read_bytes())[:12]
    assert hw3.one_run_problem(nb, metrics.read_bytes(), tmp_path) is None
    drawn = (tmp_path / "figures" / "a.png").read_bytes()
    (tmp_path / "figures" / "a.png").write_bytes(b"another run's figure")
    assert "figures/a.png" in hw3.one_run_problem(nb, metrics.read_bytes(), tmp_path)
    (tmp_path / "figures" / "a.png").write_bytes(drawn)
    assert "another run's" in hw3.one_run_problem(nb, metrics.read_bytes() + b" ", tmp_path)
    assert "no run id" in hw3.one_run_problem(
        hw3.as_notebook(new_notebook(cells=[new_code_cell("x")])), metrics.read_bytes(), tmp_path)


def test_the_zip_holds_the_notebook_its_report_its_metrics_the_module_and_its_pictures_and_no_appendix(
        tmp_path, monkeypatch):
    nb = run_with_a_figure(tmp_path, monkeypatch)
    for appendix_file in ("study/summary.json", "appendix/study/summary.json", "appendix/figures/a.png",
                          "build/appendix_metrics.json", "build/model.pt"):
        (tmp_path / appendix_file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / appendix_file).write_bytes(b"the appendix's, or the weights")
    files = hw3.submission_files(nb, (tmp_path / "build" / "metrics.json").read_bytes(), tmp_path)
    assert set(files) == {"homework3.ipynb", "homework3.html", "report.md", "metrics.json", "hw3_helpers.py",
                          "figures/a.png"}
    assert files["hw3_helpers.py"] == (runner.ROOT / "hw3_helpers.py").read_bytes()


def a_saved_run_that_reached(accuracy, folder: Path) -> Path:
    """A notebook saved from Jupyter after a run that reached `accuracy`, with its metrics.json."""
    (folder / "build").mkdir(parents=True)
    nb = new_notebook(cells=[new_code_cell("x = 1", execution_count=1)])
    nbformat.write(nb, folder / "homework3.ipynb")
    (folder / "build" / "metrics.json").write_text(json.dumps({"final_test_accuracy": accuracy}), encoding="utf-8")
    return folder


def accuracy_rules_only(rubric):
    """The rubric with only its accuracy rules: every other rule taken as passed."""
    return lambda *args, **kwargs: [r for r in rubric(*args, **kwargs) if r[0].startswith("test accuracy")]


def test_a_run_at_075_zips_with_a_warning_and_a_run_at_060_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hw3, "check_submission", accuracy_rules_only(hw3.check_submission))
    monkeypatch.setattr(check, "check_submission", hw3.check_submission)
    warned = a_saved_run_that_reached(0.75, tmp_path / "warned")
    assert check.main(["check"], warned) == 0
    said = capsys.readouterr().out
    assert "WARN  test accuracy >= 0.80 (ours: a warning, the handout's 0.65 decides)  (0.7500)" in said
    assert "check: 1 rules pass, 1 warned" in said
    assert check.main(["zip"], warned) == 0 and (warned / "build" / "hw3_submission.zip").is_file()
    assert "a warning, which does not block the zip: test accuracy >= 0.80" in capsys.readouterr().out
    refused = a_saved_run_that_reached(0.60, tmp_path / "refused")
    assert check.main(["check"], refused) == 1 and check.main(["zip"], refused) == 1
    said = capsys.readouterr().out
    assert "FAIL  test accuracy >= 0.65 (assignment)  (0.6000; fix: " in said and "no zip written" in said
    assert not (refused / "build" / "hw3_submission.zip").exists()


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
