"""A fresh run is held to the committed record within measured tolerances, never bit for bit."""
import copy
import json

import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook

import hw3_helpers as hw3
from hw3tools import cli, record, runs

RECORD = record.load_json(record.RECORD)


def test_flatten_names_rows_by_their_setting_and_group():
    flat = record.flatten({"a": [1, 2], "sampling_study": [{"setting": "greedy", "x": 0.5}],
                           "study": [{"group": "epochs", "name": "16 epochs", "y": {"mean": 1}}], "flag": True})
    assert flat == {"a[0]": 1.0, "a[1]": 2.0, "sampling_study[greedy].x": 0.5, "study[epochs: 16 epochs].y.mean": 1.0,
                    "flag": 1.0}


def test_tolerances_cover_every_metric_and_follow_their_measurements():
    tolerances = record.load_json(record.TOLERANCES)
    assert record.deviations(RECORD, RECORD, tolerances["families"])  # raises if a metric has no family
    assert record.outside_tolerance(RECORD, RECORD, tolerances) == []
    for name, family in tolerances["families"].items():
        measured = [m["difference"] for m in family["measured"].values()] + list(family.get("reported", {}).values())
        assert {"threads=1", "threads=4"} <= set(family["measured"]), name
        assert family["tolerance"] == record.tolerance(family, tolerances["margin"])
        assert family["tolerance"] >= max([family["floor"]] + [tolerances["margin"] * d for d in measured]) * (1 - 1e-9)


def test_a_run_beyond_tolerance_is_named():
    tolerances = record.load_json(record.TOLERANCES)
    far = copy.deepcopy(RECORD)
    far["per_position_accuracy"][5] += 10 * tolerances["families"]["per_position_accuracy"]["tolerance"]
    [problem] = record.outside_tolerance(far, RECORD, tolerances)
    assert "per_position_accuracy[5]" in problem
    missing = copy.deepcopy(RECORD)
    del missing["final_test_accuracy"]
    assert any("final_test_accuracy" in p for p in record.outside_tolerance(missing, RECORD, tolerances))


def a_finished_run(tmp_path):
    """A run as `make run` leaves it: the source notebook, its executed copy, metrics.json and report.md."""
    nb = new_notebook(cells=[new_markdown_cell("Instructions"), new_markdown_cell(hw3.REPORT_HEADING + " (2 points)"),
                             new_markdown_cell("The report: accuracy 0.851, as this run measured it.")])
    source = tmp_path / "homework3.ipynb"
    nbformat.write(nb, source)
    nb.metadata[runs.RUN_KEY] = runs.run_stamp_metadata(nb)
    (tmp_path / "build").mkdir()
    nbformat.write(nb, tmp_path / "build" / "homework3.ipynb")
    (tmp_path / "build" / "metrics.json").write_text(json.dumps({"final_test_accuracy": 0.851}), encoding="utf-8")
    (tmp_path / "report.md").write_text(hw3.report_text(nb), encoding="utf-8")
    return source


def test_the_record_and_the_committed_report_come_from_one_run(tmp_path, capsys):
    source, target = a_finished_run(tmp_path), tmp_path / "record.json"
    assert cli.record_command(tmp_path, source, target) == 0
    assert json.loads(target.read_text(encoding="utf-8")) == {"final_test_accuracy": 0.851}


def test_a_word_planted_in_the_report_is_caught_and_nothing_is_recorded(tmp_path, capsys):
    source, target = a_finished_run(tmp_path), tmp_path / "record.json"
    report = tmp_path / "report.md"
    report.write_text(report.read_text(encoding="utf-8").replace("accuracy", "accuracy planted"), encoding="utf-8")
    assert cli.record_command(tmp_path, source, target) == 1
    assert "is not the report of" in capsys.readouterr().out and not target.exists()


def test_a_run_of_an_older_notebook_is_not_recorded(tmp_path, capsys):
    source, target = a_finished_run(tmp_path), tmp_path / "record.json"
    nb = nbformat.read(source, as_version=4)
    nb.cells[0].source = "Instructions, changed after the run"
    nbformat.write(nb, source)
    assert cli.record_command(tmp_path, source, target) == 1
    assert "run of an older" in capsys.readouterr().out and not target.exists()
