"""What the rubric holds a notebook to beyond its outputs: its code is what the kernel ran (the kernel's own record,
kept in metrics.json), every number its report states is one of the run's or of the handout, every picture it links
lies in its folder, and the zip unpacks as ordinary files dated by the run. Small notebooks made for the purpose; a
real kernel where the record is the point; tests/test_e2e.py and tests/test_jupyter.py do the same on whole runs."""
import json
import os
import stat
import zipfile

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import hw3_helpers as hw3
from hw3_helpers import FAIL, PASS, code_not_as_ran
from hw3tools import check, study
from hw3tools import notebook as runner

PROOF = "the code is what the kernel ran: every code cell once, in order, from a fresh kernel"
NUMBERS = "every number in the report is one of this run's or of the handout"
IMAGES = "every image the notebook links lies in its folder and exists"
ONE_RUN = "the notebook, its metrics and its figures come from one run"


def ran_notebook(*sources, markdown="# A title"):
    """A notebook whose code cells ran once, in order, from a fresh kernel, and the kernel's record of that run."""
    cells = [new_markdown_cell(markdown)]
    for count, source in enumerate(sources, start=1):
        cells.append(new_code_cell(source, execution_count=count))
    record = {str(count): source for count, source in enumerate(sources, start=1)}
    return hw3.as_notebook(new_notebook(cells=cells)), record


def code_cell(nb, number):
    return [c for c in nb["cells"] if c["cell_type"] == "code"][number - 1]


# --- The code is what ran ---------------------------------------------------------------------------------------

def test_a_notebook_that_ran_once_in_order_as_it_reads_passes():
    nb, record = ran_notebook("x = 1", "y = x + 1\nprint(y)", "#@title Report: results\nreport(f'{y}')")
    assert code_not_as_ran(nb, record) is None


def test_a_code_cell_changed_after_it_ran_is_named_with_its_first_changed_line_and_the_fix():
    nb, record = ran_notebook("x = 1", "#@title Report: results\nreport('the model reaches 0.85')\nz = 2")
    code_cell(nb, 2)["source"] = "#@title Report: results\nreport('the model reaches 0.86')\nz = 2"
    said = code_not_as_ran(nb, record)
    assert said.startswith('cell 3 "Report: results" was changed after it ran')
    assert "first changed line: \"report('the model reaches 0.86')\"" in said
    assert said.endswith("; fix: Restart and Run All, save, zip again")


def test_white_space_at_line_ends_and_the_final_newline_are_not_a_change():
    nb, record = ran_notebook("x = 1\ny = 2")
    code_cell(nb, 1)["source"] = "x = 1   \ny = 2\n\n"
    assert code_not_as_ran(nb, record) is None
    code_cell(nb, 1)["source"] = "x = 1\n    y = 2"  # indentation is code
    assert "was changed" in code_not_as_ran(nb, record)


def test_a_code_cell_that_never_ran_fails():
    nb, record = ran_notebook("x = 1", "y = 2")
    code_cell(nb, 2)["execution_count"] = None
    assert code_not_as_ran(nb, record).startswith('cell 3 "y = 2" never ran')


def test_a_cell_run_again_alone_after_the_run_fails_even_when_its_source_is_what_ran_then():
    """The decision: a report cell fixed and run again alone is refused (Restart and Run All), like any cell."""
    nb, record = ran_notebook("x = 1", "#@title Report: part\nreport('text')", "check()", "write_metrics()")
    code_cell(nb, 2)["source"] = "#@title Report: part\nreport('fixed text')"
    code_cell(nb, 2)["execution_count"] = 5
    record["5"] = code_cell(nb, 2)["source"]
    said = code_not_as_ran(nb, record)
    assert said.startswith('cell 3 "Report: part" has execution count 5, where one pass from a fresh kernel gives 2')
    assert "ran again or out of order" in said


def test_cells_run_out_of_order_fail():
    nb, record = ran_notebook("a = 1", "b = 2", "c = 3")
    code_cell(nb, 2)["execution_count"], code_cell(nb, 3)["execution_count"] = 3, 2
    record["2"], record["3"] = "c = 3", "b = 2"
    assert "has execution count 3, where one pass from a fresh kernel gives 2" in code_not_as_ran(nb, record)


def test_one_cell_executed_twice_with_different_sources_fails():
    """Run, edited, run again after a restart of only part of the notebook: the count is in order, the source
    shown is not what ran at that count."""
    nb, record = ran_notebook("a = 1", "b = 2")
    record["2"] = "b = 3"
    assert 'cell 3 "b = 2" was changed after it ran' in code_not_as_ran(nb, record)


def test_a_run_not_from_a_fresh_kernel_fails():
    nb, record = ran_notebook("a = 1", "b = 2")
    for cell in nb["cells"][1:]:
        cell["execution_count"] += 4  # four cells ran before Run All, without a restart
    assert "where one pass from a fresh kernel gives 1" in code_not_as_ran(nb, record)


def test_markdown_cells_the_link_empty_code_cells_and_the_export_cell_need_no_new_run():
    nb, record = ran_notebook("a = 1", "b = 2", markdown=f"{hw3.COLAB_LEAD} *(not shared yet)*")
    nb["cells"][0]["source"] = f"{hw3.COLAB_LEAD} https://colab.research.google.com/drive/1AbC"
    nb["cells"].insert(2, {"cell_type": "markdown", "metadata": {}, "source": "My own words, added after the run."})
    nb["cells"].insert(2, {"cell_type": "code", "metadata": {}, "source": "  \n", "outputs": [],
                           "execution_count": None})  # a frontend never sends an empty cell
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": "hw3_helpers.submit_from_colab()",
                        "outputs": [], "execution_count": 9})
    assert code_not_as_ran(nb, record) is None


def test_a_cell_after_the_one_that_records_the_run_is_told_where_to_go():
    nb, record = ran_notebook("a = 1", "b = 2")
    del record["2"]  # the record was written by cell 1
    assert "move it above that cell" in code_not_as_ran(nb, record)


def test_without_a_record_the_rule_says_so_in_one_line_and_what_to_do():
    nb, _ = ran_notebook("a = 1")
    said = code_not_as_ran(nb, None)
    assert "no record of what the kernel ran" in said and "hw3_helpers.py beside the notebook" in said
    assert len(said.splitlines()) == 1


def recording_notebook(folder):
    """A real kernel: a few cells, a magic and a form title among them, one that saves a figure, then the cell that
    writes the record."""
    nb = new_notebook(cells=[
        new_markdown_cell("# Title"),
        new_code_cell("%matplotlib inline\nimport os\nx = 1\n"),
        new_code_cell("#@title Report: a part\nprint(f'x is {x}')"),
        new_code_cell(""),
        new_code_cell("from pathlib import Path\nFIGURES = Path(os.environ['HW3_OUTPUT_DIR']) / 'figures'\n"
                      "FIGURES.mkdir(parents=True, exist_ok=True)\n(FIGURES / 'saved.png').write_bytes(b'png')"),
        new_code_cell("import hw3_helpers as hw3\nrun_id = hw3.write_metrics({'final_test_accuracy': 0.9})"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "homework3.ipynb")
    return folder / "homework3.ipynb"


def test_the_kernels_own_record_matches_the_cells_it_ran_magics_and_titles_included(tmp_path):
    """The record comes from IPython's input history, which nbclient, Jupyter and Colab all fill."""
    (tmp_path / "hw3_helpers.py").write_bytes((runner.ROOT / "hw3_helpers.py").read_bytes())
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"a picture the run did not write")
    executed = runner.run_notebook(recording_notebook(tmp_path), out, log=lambda *a, **k: None)
    nb = hw3.read_notebook(executed)
    metrics = json.loads((out / "build" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics[hw3.KERNEL_RAN]) == {"1", "2", "3", "4"}  # the empty cell was never sent
    assert code_not_as_ran(nb, metrics[hw3.KERNEL_RAN]) is None
    assert set(metrics["figures"]) == {"figures/saved.png"}  # the figures named in the code it ran
    assert hw3.figures_written({"1": "fig.savefig(FIGURES / 'a.png')", "2": "x = 'b.PNG'"}) == {"a.png"}
    assert hw3.figures_written(None) == set()
    code_cell(nb, 2)["source"] = "#@title Report: a part\nprint(f'x is {x}!')"
    assert "was changed after it ran" in code_not_as_ran(nb, metrics[hw3.KERNEL_RAN])


# --- Every number of the report is the run's ----------------------------------------------------------------------

METRICS = {"final_test_accuracy": 0.8506875, "next_prob": 0.37, "seed": 0, "levels_off_at": 12,
           "plateau_accuracy": 0.8977, "best_possible_plateau": 0.9192, "gap_to_best_possible_plateau": 0.0215384,
           "best_possible_accuracy": 0.88657,
           "per_position_accuracy": [0.143, 0.2501, 0.7632] + [0.89] * 61,
           "best_possible_per_position": [0.244, 0.28, 0.399] + [0.92] * 61,
           "sampling_study": [{"setting": "greedy", "temperature": None, "top_p": None, "rule_consistent": 0.9851,
                               "distinct_continuations": 1.0},
                              {"setting": "t=1.0, top_p=0.9", "temperature": 1.0, "top_p": 0.9,
                               "rule_consistent": 0.9407, "distinct_continuations": 4.765}],
           "torch_version": "2.11.0+cu126",
           "attention_by_offset": [[0.751] * 8]}  # the appendix's, where record.run_metrics merges its numbers in


def unsupported(text, handout=(0.65, 300.0, 600.0)):
    return hw3.unsupported_numbers(text, METRICS, list(handout))


def test_numbers_of_the_run_at_the_precision_written_pass():
    assert unsupported("The model gets 0.851 (85.1%, about 85%) of tokens right; greedy keeps 0.985, nucleus "
                       "sampling (`top_p=0.9`, `t=1.0`) 0.941 with 4.76 or 4.8 different continuations of 8. From "
                       "position 12 on 0.898, the best possible 0.919 there, a gap of 0.022; over all positions "
                       "0.887; at position 2, 0.76 (best possible 0.399); 37% of tokens jump.") == []


def test_a_number_of_no_run_is_named_with_the_closest_value_and_the_test_accuracy():
    [said] = unsupported("The model reaches 0.751 test accuracy.")
    assert said.startswith('"0.751": not a number of this run or of the handout')
    assert "closest: accuracy at position 2, 0.7632; its test accuracy is 0.851" in said


def test_a_number_from_an_older_run_or_a_rounding_slip_fails():
    assert [s.split(":")[0] for s in unsupported("It gets 0.852, or 85.2%, and greedy 0.97.")] == [
        '"0.852"', '"85.2%"', '"0.97"']


def test_the_handouts_numbers_versions_integers_and_addresses_are_not_checked_as_run_numbers():
    assert unsupported("The handout asks for 0.65 and 300–600 words; torch 2.11 and 2.11.0 here; 12 pairs, "
                       "64 positions, 5 epochs; see [the paper](https://arxiv.org/abs/2104.09864) and "
                       "![fig](figures/v1.5.png).") == []


def test_a_long_series_of_the_appendixs_does_not_count_as_numbers_a_report_may_quote():
    assert unsupported("Attention beyond offset 8 is 0.751.") != []


def test_the_handout_numbers_are_read_from_the_handed_out_cells_only():
    nb = hw3.as_notebook(nbformat.read(runner.NOTEBOOK, as_version=4))
    numbers = hw3.handout_numbers(nb)
    settings = study.notebook_settings()  # what the handed-out cells set, read from them
    prescribed = {settings.next_prob, settings.optimizer_options["lr"], settings.batch_size, settings.test_sequences}
    assert {0.65, 300.0, 600.0} | prescribed <= set(numbers)  # the handout's prose: the accuracy, the words
    for cell in nb["cells"]:  # Colab keeps no tags: the cells are found by their fingerprints, not by tags
        cell["metadata"] = {}
    assert sorted(hw3.handout_numbers(nb)) == sorted(numbers)
    assert 0.0002 not in numbers  # a number of our own prose (the seed cell's) is not the handout's
    assert 0.7311 not in numbers and 1.7744 not in numbers  # nor the expected values of the embedded tests


# --- Pictures: the run's, the student's own, and none from outside the folder ------------------------------------

def run_with_a_figure(folder, monkeypatch, *markdown):
    """A notebook that printed the run id of the metrics written beside it; the run's kernel saved
    figures/run.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv(hw3.OUTPUT_ENV, str(folder))
    monkeypatch.setattr(hw3, "kernel_record", lambda: {"1": 'fig.savefig(FIGURES / "run.png")'})
    fig, _ = plt.subplots()
    (folder / "figures").mkdir(exist_ok=True)
    fig.savefig(folder / "figures" / "run.png")
    plt.close(fig)
    run_id = hw3.write_metrics({"final_test_accuracy": 0.85})
    monkeypatch.delenv(hw3.OUTPUT_ENV)
    code = new_code_cell("print(...)", execution_count=1)
    code.outputs = [new_output("stream", name="stdout", text=f"saved build/metrics.json and build/model.pt "
                                                             f"(run id {run_id})\n")]
    nb = hw3.as_notebook(new_notebook(cells=[*map(new_markdown_cell, markdown), code]))
    return nb, (folder / "build" / "metrics.json").read_bytes()


def verdict(results, rule):
    return next((status, detail) for name, status, detail in results if name == rule)


def test_a_picture_of_the_students_own_is_zipped_and_listed_as_theirs(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_diagram.png").write_bytes(b"a picture drawn by hand")
    nb, metrics = run_with_a_figure(tmp_path, monkeypatch, "![run](figures/run.png)", "![mine](my_diagram.png)")
    (tmp_path / "my_diagram.png").write_bytes(b"the same picture, drawn again after the run")
    results = hw3.check_submission(nb, metrics, tmp_path)
    assert verdict(results, ONE_RUN)[0] == PASS
    assert verdict(results, IMAGES) == (PASS, "2 images, yours: my_diagram.png")
    files = hw3.submission_files(nb, metrics, tmp_path)
    assert files["my_diagram.png"] == b"the same picture, drawn again after the run" and "figures/run.png" in files
    monkeypatch.setattr(hw3, "check_submission", lambda *args, **kwargs: [])  # the other rules aside
    hw3.build_submission(nb, metrics, tmp_path, tmp_path / "z.zip")
    assert "your own pictures in it (the run did not write them): my_diagram.png" in capsys.readouterr().out


def test_a_figure_the_run_wrote_changed_after_it_is_refused(tmp_path, monkeypatch):
    nb, metrics = run_with_a_figure(tmp_path, monkeypatch, "![run](figures/run.png)")
    (tmp_path / "figures" / "run.png").write_bytes(b"drawn by a later run")
    status, detail = verdict(hw3.check_submission(nb, metrics, tmp_path), ONE_RUN)
    assert status == FAIL and "written by another run than this notebook's: figures/run.png" in detail


@pytest.mark.parametrize("link", ["../x.png", "figures/../../x.png", "/tmp/x.png", "C:\\Users\\me\\x.png",
                                  '<img src="../x.png" width="300">'])
def test_a_picture_from_outside_the_folder_is_refused_with_the_fix_and_never_read(tmp_path, link, monkeypatch):
    folder = tmp_path / "student"
    folder.mkdir()
    (tmp_path / "x.png").write_bytes(b"outside")
    nb, metrics = run_with_a_figure(folder, monkeypatch, link if link.startswith("<") else f"![x]({link})")
    status, detail = verdict(hw3.check_submission(nb, metrics, folder), IMAGES)
    assert status == FAIL and "lies outside the notebook's folder" in detail and "link it by a relative path" in detail
    read = []
    original = type(folder).read_bytes
    monkeypatch.setattr(type(folder), "read_bytes", lambda self: read.append(self) or original(self))
    files = hw3.submission_files(nb, metrics, folder)
    assert all(".." not in name and not name.startswith("/") and ":" not in name for name in files)
    assert not any(path.name == "x.png" for path in read)


def test_web_images_and_attachments_stay_links_and_an_encoded_name_is_found(tmp_path, monkeypatch):
    (tmp_path / "my diagram.png").write_bytes(b"mine")
    nb, metrics = run_with_a_figure(tmp_path, monkeypatch,
                          "![w](https://example.org/a.png) ![a](attachment:b.png) ![m](my%20diagram.png)")
    assert hw3.linked_pictures(nb, None).inside == ["my diagram.png"]
    assert verdict(hw3.check_submission(nb, metrics, tmp_path), IMAGES)[0] == PASS


# --- The zip as a grader unpacks it --------------------------------------------------------------------------------

def test_zip_entries_unpack_readable_by_all_dated_by_the_run_and_the_same_run_gives_the_same_bytes(tmp_path):
    metrics = json.dumps({"written_at": "2026-12-05T10:51:39Z"}).encode()
    files = {"homework3.ipynb": b"{}", "figures/a.png": b"png", "metrics.json": metrics}
    first = hw3.write_zip(files, tmp_path / "a.zip", hw3.run_date(metrics))
    second = hw3.write_zip(files, tmp_path / "b.zip", hw3.run_date(metrics))
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        for info in archive.infolist():
            assert info.date_time == (2026, 12, 5, 10, 51, 38)  # zip keeps even seconds
            assert stat.S_IMODE(info.external_attr >> 16) == 0o644 and stat.S_ISREG(info.external_attr >> 16)
        archive.extractall(tmp_path / "unpacked")
    assert stat.S_IMODE((tmp_path / "unpacked" / "figures" / "a.png").stat().st_mode) & 0o444 == 0o444


def test_a_zip_entry_that_would_unpack_outside_is_refused():
    for name in ("../x.png", "/etc/x.png", "C:/x.png"):
        with pytest.raises(ValueError, match="outside"):
            hw3.write_zip({name: b""}, os.devnull + ".zip")


def test_a_run_without_a_date_gets_the_zip_formats_first_day():
    assert hw3.run_date(None) == hw3.run_date(b"{}") == (1980, 1, 1, 0, 0, 0)


# --- `make run`'s copy and the student's notebook --------------------------------------------------------------------

def test_a_make_run_copy_is_read_with_the_students_markdown_and_link_and_its_code_held_to_what_ran():
    executed, record = ran_notebook("a = 1", "b = 2", markdown="Old words.")
    executed["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "run output\n"}]
    executed["metadata"][hw3.RUN_KEY] = hw3.run_stamp_metadata(executed)
    source = json.loads(json.dumps(executed))
    for cell in source["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"], cell["outputs"] = None, []
    source["cells"][0]["source"] = "New words, written after the run."
    source["cells"].insert(2, {"cell_type": "markdown", "metadata": {}, "source": "A cell of my own."})
    merged = hw3.with_outputs_of(source, executed)
    assert [c["source"] for c in merged["cells"]] == ["New words, written after the run.", "a = 1",
                                                      "A cell of my own.", "b = 2"]
    assert merged["cells"][1]["outputs"][0]["text"] == "run output\n" and hw3.RUN_KEY not in merged["metadata"]
    assert code_not_as_ran(merged, record) is None
    source["cells"][3]["source"] = "b = 3"
    assert 'cell 4 "b = 3" was changed after it ran' in code_not_as_ran(hw3.with_outputs_of(source, executed),
                                                                         record)


def test_make_check_and_zip_name_the_route_s_own_fix(tmp_path, capsys):
    executed, record = ran_notebook("a = 1")
    executed["metadata"][hw3.RUN_KEY] = hw3.run_stamp_metadata(executed)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "homework3.ipynb").write_text(json.dumps(executed), encoding="utf-8")
    metrics = json.dumps({hw3.KERNEL_RAN: record})
    (tmp_path / "build" / "metrics.json").write_text(metrics, encoding="utf-8")
    source = json.loads(json.dumps(executed))
    source["cells"][1]["source"] = "a = 2"
    (tmp_path / "homework3.ipynb").write_text(json.dumps(source), encoding="utf-8")
    os.utime(tmp_path / "homework3.ipynb", (1e9, 1e9))  # older than the run, so `make run`'s copy is taken
    status, detail = verdict(check.verdicts(tmp_path), PROOF)
    assert status == FAIL and detail.endswith("; fix: run `make run` again (`python -m hw3tools run`), then zip again")
    assert check.main(["zip"], tmp_path) == 1 and not (tmp_path / "build" / "hw3_submission.zip").exists()
    assert f"FAIL  {PROOF}" in capsys.readouterr().out
