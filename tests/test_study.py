"""The study runner on a tiny budget, and the notebook's study section drawn from the committed results."""
import ast
import json
import re

import matplotlib
import nbformat
import pytest

import hw3_helpers as hw3
from hw3tools import study
from hw3tools.notebook import NOTEBOOK, ROOT

matplotlib.use("Agg")

TINY = {"n_layers": 1, "hidden_dim": 16, "ff_dim": 16, "num_heads": 2, "head_dim": 8}
SETTINGS = study.notebook_settings()  # the batch and the sequence length, as the notebook gives them


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
        assert record["steps_per_epoch"] == -(-256 // SETTINGS.batch_size)
        assert len(record["per_position_accuracy"]) == SETTINGS.seq_len
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
    settings = study.notebook_settings()
    assert all(run.epochs == settings.epochs and run.train_sequences == settings.train_sequences for run in variants)


def test_the_notebook_draws_the_committed_study_without_training(monkeypatch, tmp_path, capsys):
    skip_unless_the_study_is_of_this_setup()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "code" and "hw3.load_study()" in c.source]
    monkeypatch.chdir(ROOT)  # the notebook's folder, where study/summary.json lies
    monkeypatch.setenv(hw3.OUTPUT_ENV, str(tmp_path))
    # the kernel's input history after a run top to bottom (test_the_kernel_s_input_history_...: the same fingerprint)
    monkeypatch.setattr(hw3, "kernel_sources", lambda: [""] + study.notebook_sources(NOTEBOOK))
    import matplotlib.pyplot as plt

    namespace = {"hw3": hw3, "plt": plt, "display": print, "Markdown": str}  # drawing only: no model, no data
    exec(cell.source, namespace)
    assert namespace["study_summary"] == json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    if "study_provenance(" in cell.source:
        printed = capsys.readouterr().out
        assert f"all {len(study.plan())} runs of the study were trained by this notebook's code" in printed
    for name in hw3.study_figures(namespace["study_summary"]):
        assert (tmp_path / "figures" / name).stat().st_size > 0


def test_every_run_records_bits_against_bayes_and_old_runs_without_them_are_run_again(tmp_path, monkeypatch):
    summary = study.run_study(tiny_runs()[:2], tmp_path, jobs=1, progress=False)
    path = tmp_path / "runs" / f"{tiny_runs()[0].run_id}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["kl_bits"] > 0 and record["bayes_entropy_bits"] > 0
    assert record["cross_entropy_bits"] - record["bayes_entropy_bits"] == pytest.approx(record["kl_bits"], abs=1e-9)
    assert len(record["kl_bits_per_position"]) == SETTINGS.seq_len
    dense = next(c for c in summary["configs"] if c["name"] == "dense (prescribed)")
    assert dense["kl_bits"]["per_seed"] == pytest.approx(
        [json.loads((tmp_path / "runs" / f"{r.run_id}.json").read_text(encoding="utf-8"))["kl_bits"]
         for r in tiny_runs()[:2]])
    for key in study.REQUIRED:  # a run recorded before the bits were measured
        del record[key]
    path.write_text(json.dumps(record), encoding="utf-8")
    rerun = []
    original = study.execute
    monkeypatch.setattr(study, "execute", lambda run, device="cpu", notebook=NOTEBOOK: rerun.append(run.run_id)
                        or original(run, device, notebook))
    study.run_study(tiny_runs()[:2], tmp_path, jobs=1, progress=False)
    assert rerun == [tiny_runs()[0].run_id]
    assert "kl_bits" in json.loads(path.read_text(encoding="utf-8"))


def test_the_budget_figure_fits_the_data_lever_and_marks_the_equal_compute_run(tmp_path):
    skip_unless_the_study_is_of_this_setup()
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    budgets, fresh = hw3.data_budgets(summary, "gap_to_ceiling")
    assert [c["train_sequences"] for c in budgets] == sorted(c["train_sequences"] for c in budgets)
    assert budgets[0]["name"] == "dense (prescribed)" and len(budgets) >= 3
    assert all(c["epochs"] == study.notebook_settings().epochs for c in budgets)
    fig = hw3.plot_budget_fit(summary, {"gap_to_ceiling": 0.005, "kl_bits": 0.02})
    titles = [ax.get_title() for ax in fig.axes]
    assert "gap to the ceiling, accuracy" in titles
    fig.savefig(tmp_path / "budget.png")


def test_the_study_runs_first_what_the_fit_of_the_data_budget_needs():
    order = [run.name for run in sorted(study.plan(), key=study.priority)]
    assert order[:3] == ["dense (prescribed)"] * 3
    assert order[3:7] == ["20000 sequences"] * 2 + ["40000 sequences"] * 2
    settings = study.notebook_settings()
    name, budget = study.equal_compute(settings)
    fresh = [run for run in study.plan() if run.name == name]
    assert [run.seed for run in fresh] == [0, 1] and all(run.epochs == 1 and run.train_sequences
                                                         == budget["train_sequences"] for run in fresh)
    assert order[3:7] == ["20000 sequences"] * 2 + ["40000 sequences"] * 2 and order[7:9] == [name] * 2
    prescribed_steps = settings.epochs * -(-settings.train_sequences // settings.batch_size)  # incomplete batches too
    assert abs(budget["train_sequences"] // settings.batch_size - prescribed_steps) <= 0.02 * prescribed_steps
    capacity = [i for i, name in enumerate(order) if name.startswith("width ") and "sequences" not in name]
    assert max(capacity) < order.index("GQA, 2 KV heads")  # the prediction from the widths comes next


def test_the_predicted_budget_is_trained_at_a_width_of_the_capacity_lever_on_two_seeds():
    widths = [run.model for run in study.plan() if run.group == "capacity"]
    tested = [run for run in study.plan() if run.group == "prediction"]
    assert [run.seed for run in tested] == [0, 1]
    settings = study.notebook_settings()
    assert all(run.model in widths and run.epochs == settings.epochs and run.train_sequences > settings.train_sequences
               for run in tested)


def test_the_committed_study_measured_bits_for_every_configuration():
    skip_unless_the_study_is_of_this_setup()
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
    rows = hw3.width_fits(summary, "gap_to_ceiling")
    cost = {row["name"]: row["parameters"] * hw3.budget_for_gap(row["fit"], 0.005) for row in rows}
    [test] = hw3.prediction_tests(summary, "gap_to_ceiling")
    assert test["width"] == min(cost, key=cost.get) != "dense (prescribed)"
    assert test["train_sequences"] < hw3.budget_for_gap(
        next(row["fit"] for row in rows if row["name"] == test["width"]), 0.005)  # the largest that fitted, below


def test_what_the_notebook_says_of_the_prediction_holds_for_the_committed_study():
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    for key, target in (("gap_to_ceiling", 0.005), ("kl_bits", 0.02)):
        rows = hw3.width_fits(summary, key)
        assert rows[0]["fit"]["floor"] > target  # the prescribed width: data alone does not reach it
        [test] = hw3.prediction_tests(summary, key)
        band = test["predicted"] + test["margin"]
        assert test["held"] and test["predicted"] + test["margin"] / 2 < test["measured"]["mean"] <= band
        assert test["measured"]["mean"] - test["predicted"] > 2 * test["measured"]["std"]  # above, beyond the seeds
        assert test["width_gain_at_budget"] < test["width_gain_at_prescribed"] / 2  # "much less at 50000"
    wide = next(row for row in hw3.width_fits(summary, "kl_bits") if row["name"] == "width 128")
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


# --------------------------------------------------------------------------------------------------------------
# Which code trained a run: the training fingerprint, the plan's reused and stale runs, the notebook's settings.
# Hermetic: temporary copies of the notebook and of committed run records, nothing trained.
# --------------------------------------------------------------------------------------------------------------
STAMPED = ("variants__dense-prescribed__seed0", "variants__dense-prescribed__seed1", "epochs__16-epochs__seed0")


def code_cell(nb, marker: str):
    [cell] = [cell for cell in nb.cells if cell.cell_type == "code" and marker in cell.source
              and not hw3.is_added(cell)]
    return cell


def edit_notebook(path, *edits):
    """Each edit (marker of the cell, a pattern, new text) replaces the one match of the pattern by new in the
    handed-out code cell whose source holds the marker: the old value is whatever the handout says."""
    nb = nbformat.read(path, as_version=4)
    for marker, old, new in edits:
        cell = code_cell(nb, marker)
        cell.source, found = re.subn(old, new, cell.source)
        assert found == 1, (marker, old)
    nbformat.write(nb, path)
    return path


def fingerprint_of(notebook):
    return hw3.training_fingerprint(study.notebook_sources(notebook))


def committed_record(run_id):
    return json.loads((ROOT / "study" / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))


def skip_unless_the_study_is_of_this_setup():
    """Go on only where the committed study was planned for the notebook's prescribed setup: every run of the plan
    recorded, with the plan's model and budget. After a new handout (another number of epochs, say) the study is of
    another setup until `make study` trains it again, as the appendix then says; a change to the code alone, the
    setup kept, still fails the tests that call this."""
    for run in study.plan():
        path = ROOT / "study" / "runs" / f"{run.run_id}.json"
        recorded = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        if recorded is None or (recorded["model"], recorded["epochs"], recorded["train_sequences"]) != (
                run.model, run.epochs, run.train_sequences):
            pytest.skip(f"the committed study was trained for another setup than the notebook's ({run.run_id}): "
                        "`make study` trains it for this one")


def stamped_study(tmp_path):
    """A copy of the notebook, and a study folder holding three committed runs recorded as trained by its code."""
    notebook = tmp_path / "homework3.ipynb"
    notebook.write_bytes(NOTEBOOK.read_bytes())
    out = tmp_path / "study"
    (out / "runs").mkdir(parents=True)
    for run_id in STAMPED:
        record = {**committed_record(run_id), "training_fingerprint": fingerprint_of(notebook)}
        (out / "runs" / f"{run_id}.json").write_text(json.dumps(record), encoding="utf-8")
    runs = [run for run in study.plan(study.notebook_settings(study.notebook_sources(notebook)))
            if run.run_id in STAMPED]
    assert len(runs) == len(STAMPED)
    return notebook, out, runs


def must_not_train(*args, **kwargs):
    raise AssertionError("a run was trained that the plan reuses")


def test_an_unchanged_notebook_reuses_every_run_it_trained(tmp_path, monkeypatch):
    notebook, out, runs = stamped_study(tmp_path)
    status = study.plan_status(runs, out, notebook)
    assert status["reused"] == list(STAMPED) and status["stale"] == status["new"] == []
    assert all(study.finished(out / "runs" / f"{run_id}.json", fingerprint_of(notebook)) for run_id in STAMPED)
    monkeypatch.setattr(study, "execute", must_not_train)
    summary = study.run_study(runs, out, progress=False, notebook=notebook)
    assert hw3.stale_runs(summary, fingerprint_of(notebook)) == []
    assert "all 3 runs of the study were trained by this notebook's code" == hw3.study_provenance(
        summary, study.notebook_sources(notebook))


# Each new value is another than the notebook's, whatever a handout set (halved, or a third of it).
NEW = {"next_prob": SETTINGS.next_prob / 2, "lr": SETTINGS.optimizer_options["lr"] / 3,
       "hidden_dim": SETTINGS.model["hidden_dim"] // 2, "batch_size": SETTINGS.batch_size // 2,
       "epochs": max(1, SETTINGS.epochs // 2)}
CHANGES = {  # a line of the training TODO, a handed-out constant, the optimizer's settings, the prescribed model
    "training TODO": ("def train(", r"max_norm=[\d.]+", "max_norm=0.5"),
    "constant": ("NEXT_PROB = ", r"NEXT_PROB = [\d.]+", f"NEXT_PROB = {NEW['next_prob']!r}"),
    "learning rate": ("optimizer = torch.optim", r"lr=[\d.]+", f"lr={NEW['lr']!r}"),
    "model": ("optimizer = torch.optim", r"hidden_dim=\d+", f"hidden_dim={NEW['hidden_dim']}"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_to_the_training_code_makes_the_runs_stale_and_the_study_runs_them_again(tmp_path, monkeypatch,
                                                                                         change):
    notebook, out, runs = stamped_study(tmp_path)
    before = fingerprint_of(notebook)
    edit_notebook(notebook, CHANGES[change])
    now = fingerprint_of(notebook)
    assert now != before
    if change == "training TODO":  # a line of a TODO body: the handed-out cells are as handed out
        assert hw3.handed_out_intact(nbformat.read(notebook, as_version=4))[0]
    status = study.plan_status(runs, out, notebook)
    assert status["stale"] == list(STAMPED) and status["reused"] == status["new"] == []
    described = study.describe_plan(status)
    assert "0 runs reused, 3 stale" in described and all(f"run again: {run_id}" in described for run_id in STAMPED)
    assert not any(study.finished(out / "runs" / f"{run_id}.json", now) for run_id in STAMPED)
    summary = json.loads(json.dumps(study.summarize([committed_record(run_id) | {"training_fingerprint": before}
                                                     for run_id in STAMPED])))
    assert hw3.study_provenance(summary, study.notebook_sources(notebook)) == (
        "3 of 3 runs were trained by other code than this notebook's: `make study` runs them again")

    trained = []

    def execute(run, device="cpu", notebook=NOTEBOOK):  # what a run records, without training
        trained.append(run.run_id)
        return {**committed_record(run.run_id), "training_fingerprint": fingerprint_of(notebook)}

    monkeypatch.setattr(study, "execute", execute)
    summary = study.run_study(runs, out, progress=False, notebook=notebook)
    assert sorted(trained) == sorted(STAMPED)
    assert hw3.stale_runs(summary, now) == []
    assert study.plan_status(runs, out, notebook)["reused"] == list(STAMPED)


def as_the_cells_state_it():
    """The settings as the handed-out cells' text states them, read by pattern: a check on the study's reading of
    their syntax trees that holds whatever numbers a handout gives."""
    text = "\n".join(study.notebook_sources())

    def value(pattern):
        return ast.literal_eval(re.search(pattern, text, re.M | re.S).group(1))

    model = re.search(r"^model = Transformer\((.*?)\n\)", text, re.M | re.S).group(1)
    return {"seq_len": value(r"^SEQ_LEN = (\S+)"), "vocab_size": value(r"^VOCAB_SIZE = (\S+)"),
            "next_prob": value(r"^NEXT_PROB = (\S+)"), "initial": value(r"^INITIAL = (\S+)"),
            "batch_size": value(r"^BATCH_SIZE = (\S+)"),
            "test_sequences": value(r"^TEST_DATASET, \w+ = generate_dataset\(.*?num_entries=(\d+)"),
            "train_sequences": value(r"^TRAIN_DATASET, \w+ = generate_dataset\(.*?num_entries=(\d+)"),
            "epochs": value(r"num_epochs=(\d+)"), "lr": value(r"lr=([\d.]+)"),
            "model": {key: ast.literal_eval(number) for key, number in re.findall(r"(\w+)=(\d+)", model)
                      if key != "vocab_size"}}


def test_the_study_reads_the_constants_the_model_and_the_optimizer_from_the_notebook(tmp_path):
    settings = study.notebook_settings()
    stated = as_the_cells_state_it()
    assert {key: getattr(settings, key) for key in ("seq_len", "vocab_size", "next_prob", "initial", "batch_size",
                                                    "test_sequences", "train_sequences", "epochs")} == {
        key: value for key, value in stated.items() if key not in ("lr", "model")}
    assert settings.model == stated["model"] and set(settings.model) == {"n_layers", "hidden_dim", "ff_dim",
                                                                         "num_heads", "head_dim"}
    assert settings.model_vocab_size == settings.vocab_size
    assert (settings.optimizer, settings.optimizer_options) == ("AdamW", {"lr": stated["lr"]})

    notebook = tmp_path / "homework3.ipynb"
    notebook.write_bytes(NOTEBOOK.read_bytes())
    edit_notebook(notebook, CHANGES["constant"], CHANGES["learning rate"], CHANGES["model"],
                  ("NEXT_PROB = ", r"BATCH_SIZE = \d+", f"BATCH_SIZE = {NEW['batch_size']}"),
                  ("optimizer = torch.optim", r"num_epochs=\d+", f"num_epochs={NEW['epochs']}"))
    changed = study.notebook_settings(study.notebook_sources(notebook))
    assert (changed.next_prob, changed.batch_size, changed.epochs, changed.optimizer_options) == (
        NEW["next_prob"], NEW["batch_size"], NEW["epochs"], {"lr": NEW["lr"]})
    dense = next(run for run in study.plan(changed) if run.name == "dense (prescribed)")
    assert dense.model["hidden_dim"] == NEW["hidden_dim"] and dense.epochs == NEW["epochs"]
    wide = next(run for run in study.plan(changed) if run.name == "width 128")
    assert wide.model["hidden_dim"] == 128 and wide.epochs == NEW["epochs"]
    assert wide.model["n_layers"] == SETTINGS.model["n_layers"]  # the prescribed depth, the lever's width


def relayout(source: str) -> str:
    """The same code laid out otherwise, as a re-wrap does: a line break after every comma inside brackets, and
    every comment but the TODO markers replaced by another on a line of its own. No code, no string changes."""
    import io
    import tokenize

    fstring = getattr(tokenize, "FSTRING_START", None), getattr(tokenize, "FSTRING_END", None)  # Python 3.12+
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    edits, depth, in_fstring = [], 0, 0  # (offset, end, replacement)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        at, end = starts[token.start[0] - 1] + token.start[1], starts[token.end[0] - 1] + token.end[1]
        in_fstring += (token.type == fstring[0]) - (token.type == fstring[1])
        if token.type == tokenize.OP and not in_fstring:
            depth += (token.string in "([{") - (token.string in ")]}")
            if token.string == "," and depth > 0:
                edits.append((end, end, "\n"))
        elif token.type == tokenize.COMMENT and "TODO" not in token.string:
            indent = " " * (len(source[starts[token.start[0] - 1]:at]) - len(source[starts[token.start[0] - 1]:at]
                                                                                 .lstrip()))
            edits.append((at, end, f"\n{indent}# a comment that the re-wrap moved"))
    for at, end, replacement in sorted(edits, reverse=True):
        source = source[:at] + replacement + source[end:]
    return source


def test_comments_and_line_breaks_keep_the_fingerprint_and_the_runs(tmp_path, monkeypatch):
    notebook, out, runs = stamped_study(tmp_path)
    before = fingerprint_of(notebook)
    nb = nbformat.read(notebook, as_version=4)
    training = set(hw3.training_cells(study.notebook_sources(notebook)).values())
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source in training:
            cell.source = relayout(cell.source)
    nbformat.write(nb, notebook)
    rewrapped = set(hw3.training_cells(study.notebook_sources(notebook)).values())
    assert not rewrapped & training and None not in rewrapped  # every cell changed, every one is found
    forms = {form for form, _ in hw3.HANDED_OUT_CELLS}
    assert any(form not in forms for form, _ in hw3.handed_out_cells(nb))  # handed-out lines re-wrapped
    assert fingerprint_of(notebook) == before
    monkeypatch.setattr(study, "execute", must_not_train)
    assert study.plan_status(runs, out, notebook)["reused"] == list(STAMPED)
    study.run_study(runs, out, progress=False, notebook=notebook)
    assert study.notebook_settings(study.notebook_sources(notebook)) == study.notebook_settings(
        study.notebook_sources(NOTEBOOK))


def kernel_in(sources, tmp_path, monkeypatch):
    """`In` of an IPython shell that was handed `sources` as cells (magics and all) and executed none of them."""
    import ast

    pytest.importorskip("IPython")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell(config=config)

    class RunNothing(ast.NodeTransformer):
        def visit_Module(self, node):
            node.body = []
            return node

    shell.ast_transformers.append(RunNothing())
    for source in sources:
        assert shell.run_cell(source, store_history=True).success
    return list(shell.user_ns["In"])


def test_the_kernel_s_input_history_gives_the_notebook_file_s_fingerprint(tmp_path, monkeypatch):
    sources = study.notebook_sources(NOTEBOOK)
    expected = hw3.training_fingerprint(sources)
    history = kernel_in(sources, tmp_path, monkeypatch)  # top to bottom, as `make run` and "Run all" do
    assert history[0] == "" and any("get_ipython()" in source for source in history)  # IPython transformed magics
    assert hw3.training_fingerprint(history) == expected
    # magic-free, with cells of someone's own in between, and the training TODO run first in another version
    train = next(source for source in sources if "def train(" in source)
    magic_free = [source for source in sources if not any(line.lstrip().startswith(("%", "!"))
                                                          for line in source.splitlines())]
    assert len(magic_free) < len(sources)
    position = magic_free.index(train)
    edited = train.replace("max_norm=1.0", "max_norm=0.5")
    rerun = ([""] + magic_free[:position] + ["print(len(TRAIN_DATASET))", edited, "x = 1", train, "model"]
             + magic_free[position + 1:] + ["import math\nmath.pi"])
    assert hw3.training_fingerprint(rerun) == expected
    assert hw3.training_fingerprint(kernel_in(rerun[1:], tmp_path, monkeypatch)) == expected
    # the last version run is the one that counts
    assert hw3.training_fingerprint(magic_free + [edited]) != expected
    missing = [source for source in magic_free if "optimizer = torch.optim" not in source]
    assert hw3.training_fingerprint(missing) != expected
    summary = study.summarize([committed_record(run_id) | {"training_fingerprint": expected} for run_id in STAMPED])
    assert hw3.study_provenance(summary, missing) == (
        "3 of 3 runs were trained by other code than this notebook's: `make study` runs them again (this kernel "
        "has not run the cells of the training cell)")


def test_every_training_cell_is_a_handed_out_cell_and_known_by_the_names_it_binds_alone():
    import ast

    sources = study.notebook_sources(NOTEBOOK)
    found = hw3.training_cells(sources)
    assert all(found.values())
    handed_out = {form for form, _ in hw3.HANDED_OUT_CELLS}
    for source in found.values():  # each found cell is one of the handout's, in the table's own fingerprint
        form = ["code", *hw3.significant_lines(hw3.strip_todo_bodies(source))]
        assert hw3.fingerprint(form) in handed_out, source[:40]
    names = {}
    for source in sources:
        try:
            names.setdefault(hw3.bound_names(ast.parse(source)), []).append(source)
        except SyntaxError:  # a cell with magics
            continue
    for name, bound in hw3.TRAINING_CELLS.items():
        assert names.get(bound) == [found[name]], name  # no other cell of the notebook binds the same names
    # the cells left out: the embedded tests and the generation and sampling cells
    kept = set(found.values())
    assert not any(source.startswith("##### TESTS START #####") for source in kept)
    assert not any("def generate(" in source or "def get_dist_after_with_temp_and_topp(" in source for source in kept)


def test_the_tree_s_shape_leaves_out_positions_empty_fields_and_docstrings():
    import ast

    tree = ast.parse('def f(x: int = 1):\n    """doc"""\n    return x  # a comment\n')
    assert hw3.tree_shape(tree) == [
        "Module", ["body", [["FunctionDef", ["name", ["str", "'f'"]],
                             ["args", ["arguments", ["args", [["arg", ["arg", ["str", "'x'"]],
                                                               ["annotation", ["Name", ["id", ["str", "'int'"]],
                                                                               ["ctx", ["Load"]]]]]]],
                                       ["defaults", [["Constant", ["value", ["int", "1"]]]]]]],
                             ["body", [["Return", ["value", ["Name", ["id", ["str", "'x'"]], ["ctx", ["Load"]]]]]]]]]]]
    assert hw3.tree_shape(ast.parse("def f(x: int = (\n  1)):\n    return (x)")) == hw3.tree_shape(
        tree)


def test_runs_recorded_without_a_fingerprint_are_stale():
    summary = study.summarize([committed_record(run_id) for run_id in STAMPED])
    summary = json.loads(json.dumps(summary))
    for config in summary["configs"]:
        config.pop("training_fingerprints")  # a summary written before runs recorded their code
    assert len(hw3.stale_runs(summary, fingerprint_of(NOTEBOOK))) == 3


def test_the_plan_prints_without_training(capsys, monkeypatch):
    monkeypatch.setattr(study, "execute", must_not_train)
    assert study.main(["--plan"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("study plan for the notebook's training code ")
    counts = re.search(r"(\d+) runs reused, (\d+) stale .* and (\d+) new", printed.splitlines()[0])
    assert counts and sum(map(int, counts.groups())) == len(study.plan())



def test_a_run_reproduced_exactly_stamps_the_runs_and_one_that_differs_does_not(tmp_path, monkeypatch):
    import torch

    notebook, out, runs = stamped_study(tmp_path)
    edit_notebook(notebook, CHANGES["training TODO"])
    now = fingerprint_of(notebook)
    threads = torch.get_num_threads()

    def execute(run, device="cpu", notebook=NOTEBOOK):  # what a reproduction records, without training
        return {**committed_record(run.run_id), "train_seconds": 1.0, "training_fingerprint": fingerprint_of(notebook)}

    monkeypatch.setattr(study, "execute", execute)
    try:
        assert study.reproduce(STAMPED[0], out, notebook)["differences"] == {}
        monkeypatch.setattr(study, "execute", lambda *args: {**execute(*args), "test_accuracy": 0.5})
        assert set(study.reproduce(STAMPED[0], out, notebook)["differences"]) == {"test_accuracy"}
    finally:
        torch.set_num_threads(threads)
    assert study.plan_status(runs, out, notebook)["stale"] == list(STAMPED)
    summary = study.stamp(now, runs, out)
    assert study.plan_status(runs, out, notebook)["reused"] == list(STAMPED)
    assert hw3.stale_runs(summary, now) == []
    for run_id in STAMPED:  # nothing but the fingerprint changed
        record = json.loads((out / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))
        assert record == {**committed_record(run_id), "training_fingerprint": now}


def test_the_committed_study_was_trained_by_the_committed_notebook_s_code():
    """Every committed run records the training fingerprint of homework3.ipynb as it is: after a change to the code
    that a run trains with, `make study` runs them again (or `python -m hw3tools.study --stamp-if-reproduced RUN_ID`
    shows that the change moves no recorded number)."""
    skip_unless_the_study_is_of_this_setup()
    summary = json.loads((ROOT / "study" / "summary.json").read_text(encoding="utf-8"))
    assert hw3.stale_runs(summary, fingerprint_of(NOTEBOOK)) == []
    assert study.plan_status(study.plan())["reused"] == [run.run_id for run in study.plan()]
