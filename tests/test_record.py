"""A fresh run is held to the committed record within measured tolerances, never bit for bit."""
import copy

from hw3tools import record

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
