"""The study runner on a tiny budget, and the notebook's study section drawn from the committed results."""
import json

import matplotlib
import nbformat
import pytest

import hw3_helpers
from hw3tools import study
from hw3tools.notebook import NOTEBOOK, ROOT

matplotlib.use("Agg")

TINY = {"n_layers": 1, "hidden_dim": 16, "ff_dim": 16, "num_heads": 2, "head_dim": 8}


def tiny_runs():
    return [study.Run("variants", "dense (prescribed)", seed, dict(TINY), epochs=2, train_sequences=256)
            for seed in (0, 1)] + [study.Run("epochs", "3 epochs", 0, dict(TINY), epochs=3, train_sequences=256)]


def test_a_tiny_study_writes_well_formed_results_and_never_repeats_a_run(tmp_path, monkeypatch):
    summary = study.run_study(tiny_runs(), tmp_path, jobs=1, progress=False)
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "runs").glob("*.json")}
    assert set(records) == {run.run_id for run in tiny_runs()}
    for record in records.values():
        assert 0 <= record["test_accuracy"] <= 1 and 0 < record["bayes_accuracy"] <= 1
        assert record["gap_to_ceiling"] == pytest.approx(record["bayes_accuracy"] - record["test_accuracy"])
        assert len(record["epoch_test_accuracy"]) == record["epochs"]
        assert record["epoch_test_accuracy"][-1] == record["test_accuracy"]
        assert record["steps_per_epoch"] == 2 and len(record["per_position_accuracy"]) == 64
    dense = next(c for c in summary["configs"] if c["name"] == "dense (prescribed)")
    assert dense["seeds"] == [0, 1] and len(dense["test_accuracy"]["per_seed"]) == 2
    assert dense["test_accuracy"]["mean"] == pytest.approx(sum(dense["test_accuracy"]["per_seed"]) / 2)
    assert dense["difference_from_prescribed"]["per_seed"] == [0.0, 0.0]
    longer = next(c for c in summary["configs"] if c["name"] == "3 epochs")
    assert longer["difference_from_prescribed"]["per_seed"] == [
        records[tiny_runs()[2].run_id]["test_accuracy"] - records[tiny_runs()[0].run_id]["test_accuracy"]]
    # the same seed draws the same test set, so the gap to the ceiling moves exactly opposite to the accuracy
    gaps = longer["gap_difference_from_prescribed"]
    assert gaps["gap_to_ceiling"]["per_seed"] == pytest.approx([-longer["difference_from_prescribed"]["mean"]])
    assert gaps["kl_bits"]["per_seed"] == [
        records[tiny_runs()[2].run_id]["kl_bits"] - records[tiny_runs()[0].run_id]["kl_bits"]]

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(study, "execute", must_not_train)
    assert study.run_study(tiny_runs(), tmp_path, jobs=1, progress=False) == summary


def test_a_seed_is_the_whole_pipeline_and_repeats_exactly(tmp_path):
    first, other = tiny_runs()[0], tiny_runs()[1]
    study.run_study([first, other], tmp_path, jobs=1, progress=False)
    recorded = json.loads((tmp_path / "runs" / f"{first.run_id}.json").read_text(encoding="utf-8"))
    again = study.execute(first)
    assert again["test_accuracy"] == recorded["test_accuracy"]
    assert again["bayes_accuracy"] == recorded["bayes_accuracy"]
    other_record = json.loads((tmp_path / "runs" / f"{other.run_id}.json").read_text(encoding="utf-8"))
    assert other_record["bayes_accuracy"] != recorded["bayes_accuracy"]  # another seed draws another test set


def test_the_plan_gives_every_variant_three_seeds_and_every_lever_two_budgets_of_two():
    runs = study.plan()
    assert len({run.run_id for run in runs}) == len(runs)
    variants = [run for run in runs if run.group == "variants"]
    assert {run.name for run in variants} == set(study.VARIANTS) and len(variants) == 3 * len(study.VARIANTS)
    for lever in ("epochs", "capacity", "data"):
        seeds = {name: [run.seed for run in runs if run.group == lever and run.name == name]
                 for name in {run.name for run in runs if run.group == lever}}
        assert sum(len(s) >= 2 for s in seeds.values()) >= 2, seeds  # two budgets of two seeds at least
    assert all(run.epochs == 8 and run.train_sequences == 10000 for run in variants)


def test_the_notebook_draws_the_committed_study_without_training(monkeypatch, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "code" and "hw3.load_study()" in c.source]
    monkeypatch.chdir(ROOT)  # the notebook's folder, where study/summary.json lies
    monkeypatch.setenv(hw3_helpers.OUTPUT_ENV, str(tmp_path))
    import matplotlib.pyplot as plt

    namespace = {"hw3": hw3_helpers, "plt": plt, "display": print, "Markdown": str}  # drawing only: no model, no data
    exec(cell.source, namespace)
    assert namespace["study_summary"] == json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    for name in hw3_helpers.study_figures(namespace["study_summary"]):
        assert (tmp_path / "figures" / name).stat().st_size > 0


def test_every_run_records_bits_against_bayes_and_old_runs_without_them_are_run_again(tmp_path, monkeypatch):
    summary = study.run_study(tiny_runs()[:2], tmp_path, jobs=1, progress=False)
    path = tmp_path / "runs" / f"{tiny_runs()[0].run_id}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["kl_bits"] > 0 and record["bayes_entropy_bits"] > 0
    assert record["cross_entropy_bits"] - record["bayes_entropy_bits"] == pytest.approx(record["kl_bits"], abs=1e-9)
    assert len(record["kl_bits_per_position"]) == 64
    dense = next(c for c in summary["configs"] if c["name"] == "dense (prescribed)")
    assert dense["kl_bits"]["per_seed"] == pytest.approx(
        [json.loads((tmp_path / "runs" / f"{r.run_id}.json").read_text(encoding="utf-8"))["kl_bits"]
         for r in tiny_runs()[:2]])
    for key in study.REQUIRED:  # a run recorded before the bits were measured
        del record[key]
    path.write_text(json.dumps(record), encoding="utf-8")
    rerun = []
    original = study.execute
    monkeypatch.setattr(study, "execute", lambda run, device="cpu": rerun.append(run.run_id) or original(run, device))
    study.run_study(tiny_runs()[:2], tmp_path, jobs=1, progress=False)
    assert rerun == [tiny_runs()[0].run_id]
    assert "kl_bits" in json.loads(path.read_text(encoding="utf-8"))


def test_the_budget_figure_fits_the_data_lever_and_marks_the_equal_compute_run(tmp_path):
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    budgets, fresh = hw3_helpers.data_budgets(summary, "gap_to_ceiling")
    assert [c["train_sequences"] for c in budgets] == sorted(c["train_sequences"] for c in budgets)
    assert budgets[0]["name"] == "dense (prescribed)" and len(budgets) >= 3
    assert all(c["epochs"] == 8 for c in budgets)
    fig = hw3_helpers.plot_budget_fit(summary, {"gap_to_ceiling": 0.005, "kl_bits": 0.02})
    titles = [ax.get_title() for ax in fig.axes]
    assert "gap to the ceiling, accuracy" in titles
    fig.savefig(tmp_path / "budget.png")


def test_the_study_runs_first_what_the_fit_of_the_data_budget_needs():
    order = [run.name for run in sorted(study.plan(), key=study.priority)]
    assert order[:3] == ["dense (prescribed)"] * 3
    assert order[3:7] == ["20000 sequences"] * 2 + ["40000 sequences"] * 2
    fresh = [run for run in study.plan() if run.name == "80000 sequences, 1 epoch"]
    assert [run.seed for run in fresh] == [0, 1] and all(run.epochs == 1 and run.train_sequences == 80000
                                                         for run in fresh)
    assert 80000 // study.BATCH_SIZE == 625  # the same compute as the prescribed 8 x 79 = 632 steps, within 1%
    capacity = [i for i, name in enumerate(order) if name.startswith("width ") and "sequences" not in name]
    assert max(capacity) < order.index("GQA, 2 KV heads")  # the prediction from the widths comes next


def test_the_predicted_budget_is_trained_at_a_width_of_the_capacity_lever_on_two_seeds():
    widths = [run.model for run in study.plan() if run.group == "capacity"]
    tested = [run for run in study.plan() if run.group == "prediction"]
    assert [run.seed for run in tested] == [0, 1]
    assert all(run.model in widths and run.epochs == 8 and run.train_sequences > 10000 for run in tested)


def test_the_committed_study_measured_bits_for_every_configuration():
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    names = {(run.group, run.name) for run in study.plan()}
    assert {(c["group"], c["name"]) for c in summary["configs"]} == names
    for config in summary["configs"]:
        for key in ("kl_bits", "cross_entropy_bits", "bayes_entropy_bits"):
            assert config[key] is not None and len(config[key]["per_seed"]) == len(config["seeds"]), config["name"]
        assert config["cross_entropy_bits"]["mean"] - config["bayes_entropy_bits"]["mean"] == pytest.approx(
            config["kl_bits"]["mean"], abs=1e-9)


def test_the_tested_width_is_the_cheapest_the_fit_predicts_to_come_within_half_a_point():
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    rows = hw3_helpers.width_fits(summary, "gap_to_ceiling")
    cost = {row["name"]: row["parameters"] * hw3_helpers.budget_for_gap(row["fit"], 0.005) for row in rows}
    [test] = hw3_helpers.prediction_tests(summary, "gap_to_ceiling")
    assert test["width"] == min(cost, key=cost.get) != "dense (prescribed)"
    assert test["train_sequences"] < hw3_helpers.budget_for_gap(
        next(row["fit"] for row in rows if row["name"] == test["width"]), 0.005)  # the largest that fitted, below


def test_what_the_notebook_says_of_the_prediction_holds_for_the_committed_study():
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    for key, target in (("gap_to_ceiling", 0.005), ("kl_bits", 0.02)):
        rows = hw3_helpers.width_fits(summary, key)
        assert rows[0]["fit"]["floor"] > target  # the prescribed width: data alone does not reach it
        [test] = hw3_helpers.prediction_tests(summary, key)
        band = test["predicted"] + test["margin"]
        assert test["held"] and test["predicted"] + test["margin"] / 2 < test["measured"]["mean"] <= band
        assert test["measured"]["mean"] - test["predicted"] > 2 * test["measured"]["std"]  # above, beyond the seeds
        assert test["width_gain_at_budget"] < test["width_gain_at_10000"] / 2  # "much less at 50000"
    wide = next(row for row in hw3_helpers.width_fits(summary, "kl_bits") if row["name"] == "width 128")
    margin = 2 * wide["shift"]["std"] / len(wide["shift"]["per_seed"]) ** 0.5
    assert abs(wide["fit"]["floor"] - 0.02) < margin  # "cannot be told apart from the 0.02 target"


def test_what_the_notebook_says_the_study_shows_holds_for_the_committed_study():
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    configs = {config["name"]: config for config in summary["configs"]}

    def beyond_twice_the_standard_error(stat):
        return abs(stat["mean"]) > 2 * stat["std"] / len(stat["per_seed"]) ** 0.5

    def kl_gain(name):  # positive: fewer bits lost than the prescribed model on the same seeds
        return -configs[name]["gap_difference_from_prescribed"]["kl_bits"]["mean"]

    for name in ("MoE, 4 experts top-2", "all three"):  # beat the prescribed model on every seed, in bits too
        assert min(configs[name]["difference_from_prescribed"]["per_seed"]) > 0
        assert 0.015 < kl_gain(name) < 0.03 and beyond_twice_the_standard_error(
            configs[name]["gap_difference_from_prescribed"]["kl_bits"])
        assert 0.004 < configs[name]["difference_from_prescribed"]["mean"] < 0.007  # about half a point
    for name in ("GQA, 2 KV heads", "sliding window 8, alternating"):  # within the spread in accuracy
        assert not beyond_twice_the_standard_error(configs[name]["difference_from_prescribed"])
    assert not beyond_twice_the_standard_error(configs["GQA, 2 KV heads"]["gap_difference_from_prescribed"]["kl_bits"])
    window = configs["sliding window 8, alternating"]["gap_difference_from_prescribed"]["kl_bits"]
    assert 0 < window["mean"] < 0.01 and beyond_twice_the_standard_error(window)  # "loses a little, just beyond"
    assert configs["40000 sequences"]["kl_bits"]["mean"] < configs["dense (prescribed)"]["kl_bits"]["mean"] / 2
    data = ["dense (prescribed)", "20000 sequences", "40000 sequences", "80000 sequences"]
    assert [configs[n]["kl_bits"]["mean"] for n in data] == sorted((configs[n]["kl_bits"]["mean"] for n in data),
                                                                   reverse=True)  # more data, fewer bits lost
    assert [configs[n]["test_accuracy"]["mean"] for n in data] == sorted(configs[n]["test_accuracy"]["mean"]
                                                                         for n in data)  # and higher accuracy
    assert configs["32 epochs"]["test_accuracy"]["mean"] <= configs["16 epochs"]["test_accuracy"]["mean"]
    assert configs["32 epochs"]["final_train_loss"]["mean"] < configs["16 epochs"]["final_train_loss"]["mean"]
    longer, shorter = configs["32 epochs"]["kl_bits"], configs["16 epochs"]["kl_bits"]  # in bits they even hurt
    assert min(longer["per_seed"]) > max(shorter["per_seed"])
    assert abs(longer["mean"] - configs["dense (prescribed)"]["kl_bits"]["mean"]) < 0.005
    fresh = configs["80000 sequences, 1 epoch"]  # equal compute: fresh sequences beat repeated epochs on each seed
    assert min(fresh["difference_from_prescribed"]["per_seed"]) > 0
    assert max(fresh["gap_difference_from_prescribed"]["kl_bits"]["per_seed"]) < 0
    assert 0.004 < fresh["difference_from_prescribed"]["mean"] < 0.007 and 0.02 < kl_gain(fresh["name"]) < 0.035
    assert max(kl_gain(n) for n in ("width 96", "width 128")) < kl_gain("40000 sequences")  # width: less than data
