"""A fresh run is held to the committed record within measured tolerances, never bit for bit."""
import ast
import copy
import json

import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook
from support import outside_tolerance

import hw3_helpers as hw3
from hw3tools import cli, record
from hw3tools import notebook as runner

RECORD = record.load_json(record.RECORD)


def test_flatten_names_rows_by_their_setting_and_group():
    flat = record.flatten({"a": [1, 2], "sampling_study": [{"setting": "greedy", "x": 0.5}],
                           "study": [{"group": "epochs", "name": "16 epochs", "y": {"mean": 1}}], "flag": True})
    assert flat == {"a[0]": 1.0, "a[1]": 2.0, "sampling_study[greedy].x": 0.5, "study[epochs: 16 epochs].y.mean": 1.0,
                    "flag": 1.0}


def test_tolerances_cover_every_metric_and_follow_their_measurements():
    tolerances = record.load_json(record.TOLERANCES)
    assert record.deviations(RECORD, RECORD, tolerances["families"])  # raises if a metric has no family
    assert outside_tolerance(RECORD, RECORD, tolerances) == []
    for name, family in tolerances["families"].items():
        measured = [m["difference"] for m in family["measured"].values()] + list(family.get("reported", {}).values())
        assert {"threads=1", "threads=4"} <= set(family["measured"]), name
        assert family["tolerance"] == record.tolerance(family, tolerances["margin"])
        assert family["tolerance"] >= max([family["floor"]] + [tolerances["margin"] * d for d in measured]) * (1 - 1e-9)


def test_a_run_beyond_tolerance_is_named():
    tolerances = record.load_json(record.TOLERANCES)
    far = copy.deepcopy(RECORD)
    far["per_position_accuracy"][5] += 10 * tolerances["families"]["per_position_accuracy"]["tolerance"]
    [problem] = outside_tolerance(far, RECORD, tolerances)
    assert "per_position_accuracy[5]" in problem
    missing = copy.deepcopy(RECORD)
    del missing["final_test_accuracy"]
    assert any("final_test_accuracy" in p for p in outside_tolerance(missing, RECORD, tolerances))


def a_finished_run(tmp_path):
    """A run as `make run` leaves it: the source notebook, its executed copy, metrics.json and report.md."""
    nb = new_notebook(cells=[new_markdown_cell("Instructions"), new_markdown_cell(hw3.REPORT_HEADING + " (2 points)"),
                             new_markdown_cell("The report: accuracy 0.851, as this run measured it.")])
    source = tmp_path / "homework3.ipynb"
    nbformat.write(nb, source)
    nb.metadata[hw3.RUN_KEY] = hw3.run_stamp_metadata(nb)
    (tmp_path / "build").mkdir()
    nbformat.write(nb, tmp_path / "build" / "homework3.ipynb")
    (tmp_path / "build" / "metrics.json").write_text(json.dumps({"final_test_accuracy": 0.851}), encoding="utf-8")
    (tmp_path / "report.md").write_text(hw3.report_text(nb), encoding="utf-8")
    return source


def test_the_record_and_the_committed_report_come_from_one_run(tmp_path, capsys):
    source, target = a_finished_run(tmp_path), tmp_path / "record.json"
    assert cli.record_command(tmp_path, source, target) == 0
    words = len((tmp_path / "report.md").read_text(encoding="utf-8").split())  # the README quotes it
    assert json.loads(target.read_text(encoding="utf-8")) == {"final_test_accuracy": 0.851, "report_words": words}


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


def recorded_keys() -> list[str]:
    """The keys of the dict that the notebook's cell that saves the run passes to save_run."""
    cell = next(c for c in nbformat.read(runner.NOTEBOOK, as_version=4).cells if "hw3.save_run(" in c.source)
    [metrics] = [node.value for node in ast.walk(ast.parse(cell.source))
                 if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "metrics"]
    return [key.value for key in metrics.keys]


def test_the_notebook_records_the_numbers_the_report_and_the_rubric_read():
    keys = recorded_keys()
    assert {"per_position_accuracy", "best_possible_per_position", "levels_off_at", "plateau_accuracy",
            "best_possible_plateau", "gap_to_best_possible_plateau", "best_possible_accuracy", "final_test_accuracy",
            "sampling_prompts", "sampling_study", "next_prob", "vocab_size"} <= set(keys)
    assert not [key for key in keys if key.startswith(("bayes", "late_", "report_"))], "an older name"


def test_the_record_and_the_tolerance_families_cover_every_number_the_notebook_records():
    tolerances = record.load_json(record.TOLERANCES)
    series = {"per_position_accuracy", "best_possible_per_position", "epoch_train_loss"}
    metrics = {key: [0.5, 0.6] if key in series else 0.5 for key in recorded_keys()}
    metrics["sampling_study"] = hw3.sampling_table({"greedy": 0.98, (1.0, 0.9): 0.94}, {"greedy": 1, (1.0, 0.9): 4.7})
    assert outside_tolerance(metrics, metrics, tolerances) == []  # raises where a number has no family
    assert set(recorded_keys()) <= set(RECORD), "the record is of another notebook"


def test_a_runs_numbers_take_in_the_appendixs_only_where_it_analysed_that_run(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    (build / "metrics.json").write_text(json.dumps({"final_test_accuracy": 0.851}), encoding="utf-8")
    assert record.run_metrics(tmp_path) == {"final_test_accuracy": 0.851}
    run_id = hw3.file_digest((build / "metrics.json").read_bytes())[:12]
    appendix = {"homework_run_id": run_id, "bits": {"kl_mean": 0.01}}
    (build / "appendix_metrics.json").write_text(json.dumps(appendix), encoding="utf-8")
    assert record.run_metrics(tmp_path) == {"final_test_accuracy": 0.851, **appendix}
    (build / "appendix_metrics.json").write_text(json.dumps({**appendix, "homework_run_id": "0" * 12}),
                                                 encoding="utf-8")
    assert record.run_metrics(tmp_path) == {"final_test_accuracy": 0.851}, "another run's analysis"
