"""The study runner on a tiny budget; the appendix's study section drawn from the committed results; the appendix's
summary held to the committed study (and, on planted numbers, to a run)."""
import ast
import copy
import dataclasses
import json
import re
import shutil
import types
from pathlib import Path

import matplotlib
import nbformat
import pytest

import hw3_appendix as hwa
import hw3_helpers as hw3
from hw3tools import study
from hw3tools.notebook import APPENDIX, NOTEBOOK, ROOT

matplotlib.use("Agg")

TINY = {"n_layers": 1, "hidden_dim": 16, "ff_dim": 16, "num_heads": 2, "head_dim": 8}
SETTINGS = study.notebook_settings()  # the batch and the sequence length, as the notebook gives them
COMMITTED = ROOT / "appendix" / "study"  # `make study`'s results, beside the appendix notebook that draws them


def committed_summary() -> dict:
    """appendix/study/summary.json as committed."""
    return json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))


def named(summary: dict, name: str) -> dict:
    [config] = [config for config in summary["configs"] if config["name"] == name]
    return config


def tiny_runs():
    return [study.Run("variants", "dense (prescribed)", seed, dict(TINY), epochs=2, train_sequences=256)
            for seed in (0, 1)] + [study.Run("epochs", "3 epochs", 0, dict(TINY), epochs=3, train_sequences=256)]


def smaller_test_set(monkeypatch) -> None:
    """The notebook's settings with a fifth of its test set: a tiny run measures the same things, sooner."""
    settings = study.notebook_settings

    def smaller(sources=None):
        given = settings(sources)
        return dataclasses.replace(given, test_sequences=given.test_sequences // 5)

    monkeypatch.setattr(study, "notebook_settings", smaller)


@pytest.fixture
def a_small_test_set(monkeypatch):
    smaller_test_set(monkeypatch)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """tiny_runs() trained once for this file, on a fifth of the test set: (its folder, its summary). Tests that
    change it work on a copy (`copy_of`)."""
    folder = tmp_path_factory.mktemp("tiny-study")
    with pytest.MonkeyPatch.context() as monkeypatch:
        smaller_test_set(monkeypatch)
        summary = study.run_study(tiny_runs(), folder, jobs=1, progress=False)
    return folder, summary


def copy_of(folder, tmp_path):
    return Path(shutil.copytree(folder, tmp_path / "study"))


def test_a_tiny_study_writes_well_formed_results_and_never_repeats_a_run(tmp_path, monkeypatch, a_small_test_set,
                                                                         tiny_study):
    folder, summary = tiny_study
    records = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (folder / "runs").glob("*.json")}
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
    assert study.run_study(tiny_runs(), copy_of(folder, tmp_path), jobs=1, progress=False) == summary


def test_a_seed_is_the_whole_pipeline_and_repeats_exactly(a_small_test_set, tiny_study):
    folder, _ = tiny_study
    first, other = tiny_runs()[0], tiny_runs()[1]
    recorded = json.loads((folder / "runs" / f"{first.run_id}.json").read_text(encoding="utf-8"))
    again = study.execute(first)
    assert again["test_accuracy"] == recorded["test_accuracy"]
    assert again["bayes_accuracy"] == recorded["bayes_accuracy"]
    other_record = json.loads((folder / "runs" / f"{other.run_id}.json").read_text(encoding="utf-8"))
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


def test_the_appendix_draws_the_committed_study_without_training(monkeypatch, tmp_path, capsys):
    """The appendix notebook's study cell, run as its kernel runs it after the first cell (`hwa`, the homework's
    `run`, pyplot and IPython's display), from a working folder that is neither the repository nor appendix/."""
    skip_unless_the_study_is_of_this_setup()
    nb = nbformat.read(APPENDIX, as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "code" and "hwa.load_study()" in c.source]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the committed study is found beside the appendix's module, whatever the cwd
    monkeypatch.setenv(hw3.OUTPUT_ENV, str(tmp_path / "out"))
    monkeypatch.setattr(study, "execute", must_not_train)
    import matplotlib.pyplot as plt

    # the homework's run as load_homework_run gives it: here only the code cells its kernel ran (the notebook's)
    run = types.SimpleNamespace(sources=study.notebook_sources(NOTEBOOK))
    shown = []
    namespace = {"hwa": hwa, "run": run, "plt": plt, "display": shown.append, "Markdown": str}  # no model, no data
    try:
        exec(cell.source, namespace)
    finally:
        plt.close("all")
    committed = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    assert namespace["study_summary"] == committed
    printed = capsys.readouterr().out
    assert f"all {len(study.plan())} runs of the study were trained by the homework's code" in printed.splitlines()
    assert shown == [hwa.study_table(committed)]
    figures = tmp_path / "out" / "appendix" / "figures"
    assert {path.name for path in figures.iterdir()} == {"study_variants.png", "study_levers.png"}
    assert all(path.stat().st_size > 0 for path in figures.iterdir())
    assert not any(elsewhere.iterdir())  # nothing written where the kernel happened to be


def test_every_run_records_bits_against_bayes_and_old_runs_without_them_are_run_again(tmp_path, monkeypatch,
                                                                                    a_small_test_set, tiny_study):
    folder = copy_of(tiny_study[0], tmp_path)
    summary = study.run_study(tiny_runs()[:2], folder, jobs=1, progress=False)
    path = folder / "runs" / f"{tiny_runs()[0].run_id}.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["kl_bits"] > 0 and record["bayes_entropy_bits"] > 0
    assert record["cross_entropy_bits"] - record["bayes_entropy_bits"] == pytest.approx(record["kl_bits"], abs=1e-9)
    assert len(record["kl_bits_per_position"]) == SETTINGS.seq_len
    dense = next(c for c in summary["configs"] if c["name"] == "dense (prescribed)")
    assert dense["kl_bits"]["per_seed"] == pytest.approx(
        [json.loads((folder / "runs" / f"{r.run_id}.json").read_text(encoding="utf-8"))["kl_bits"]
         for r in tiny_runs()[:2]])
    for key in study.REQUIRED:  # a run recorded before the bits were measured
        del record[key]
    path.write_text(json.dumps(record), encoding="utf-8")
    rerun = []
    original = study.execute
    monkeypatch.setattr(study, "execute", lambda run, device="cpu", notebook=NOTEBOOK: rerun.append(run.run_id)
                        or original(run, device, notebook))
    study.run_study(tiny_runs()[:2], folder, jobs=1, progress=False)
    assert rerun == [tiny_runs()[0].run_id]
    assert "kl_bits" in json.loads(path.read_text(encoding="utf-8"))


def test_the_budget_figure_fits_the_data_lever_and_marks_the_equal_compute_run(tmp_path):
    skip_unless_the_study_is_of_this_setup()
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    budgets, fresh = hwa.data_budgets(summary, "gap_to_ceiling")
    assert [c["train_sequences"] for c in budgets] == sorted(c["train_sequences"] for c in budgets)
    assert budgets[0]["name"] == "dense (prescribed)" and len(budgets) >= 3
    assert all(c["epochs"] == study.notebook_settings().epochs for c in budgets)
    fig = hwa.plot_budget_fit(summary, {"gap_to_ceiling": 0.005, "kl_bits": 0.02})
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
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    names = {(run.group, run.name) for run in study.plan()}
    assert {(c["group"], c["name"]) for c in summary["configs"]} == names
    for config in summary["configs"]:
        for key in ("kl_bits", "cross_entropy_bits", "bayes_entropy_bits"):
            assert config[key] is not None and len(config[key]["per_seed"]) == len(config["seeds"]), config["name"]
        assert config["cross_entropy_bits"]["mean"] - config["bayes_entropy_bits"]["mean"] == pytest.approx(
            config["kl_bits"]["mean"], abs=1e-9)


def test_the_tested_width_is_the_cheapest_the_fit_predicts_to_come_within_half_a_point():
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    rows = hwa.width_fits(summary, "gap_to_ceiling")
    cost = {row["name"]: row["parameters"] * hwa.budget_for_gap(row["fit"], 0.005) for row in rows}
    [test] = hwa.prediction_tests(summary, "gap_to_ceiling")
    assert test["width"] == min(cost, key=cost.get) != "dense (prescribed)"
    assert test["train_sequences"] < hwa.budget_for_gap(
        next(row["fit"] for row in rows if row["name"] == test["width"]), 0.005)  # the largest that fitted, below


def test_what_the_notebook_says_of_the_prediction_holds_for_the_committed_study():
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    for key, target in (("gap_to_ceiling", 0.005), ("kl_bits", 0.02)):
        rows = hwa.width_fits(summary, key)
        assert rows[0]["fit"]["floor"] > target  # the prescribed width: data alone does not reach it
        [test] = hwa.prediction_tests(summary, key)
        band = test["predicted"] + test["margin"]
        assert test["held"] and test["predicted"] + test["margin"] / 2 < test["measured"]["mean"] <= band
        assert test["measured"]["mean"] - test["predicted"] > 2 * test["measured"]["std"]  # above, beyond the seeds
        assert test["width_gain_at_budget"] < test["width_gain_at_prescribed"] / 2  # "much less at 50000"
    wide = next(row for row in hwa.width_fits(summary, "kl_bits") if row["name"] == "width 128")
    margin = 2 * wide["shift"]["std"] / len(wide["shift"]["per_seed"]) ** 0.5
    assert abs(wide["fit"]["floor"] - 0.02) < margin  # "cannot be told apart from the 0.02 target"


THREE_SEEDS = {"mean": 0.85123, "std": 0.00214, "per_seed": [0.849, 0.8513, 0.8534]}
ONE_SEED = {"mean": 0.8736, "std": 0.0, "per_seed": [0.8736]}
LOSS = {"mean": -0.0031, "std": 0.0012, "per_seed": [-0.0022, -0.004]}
GAIN = {"mean": 0.0052, "std": 0.0012, "per_seed": [0.0044, 0.006]}


@pytest.mark.parametrize("stat,options,shown", [
    (THREE_SEEDS, {}, "0.851 ± 0.002 (n=3)"),
    (THREE_SEEDS, {"seeds": False}, "0.851 ± 0.002"),  # the study table's compact form
    (THREE_SEEDS, {"digits": 4}, "0.8512 ± 0.0021 (n=3)"),
    (ONE_SEED, {}, "0.874 (1 seed)"),  # one seed has no spread
    (ONE_SEED, {"seeds": False}, "0.874"),
    (LOSS, {}, "−0.003 ± 0.001 (n=2)"),  # a minus sign, not a hyphen
    (LOSS, {"signed": True, "seeds": False}, "−0.003 ± 0.001"),
    (GAIN, {"signed": True}, "+0.005 ± 0.001 (n=2)"),
    (None, {}, "not measured"),
    (None, {"signed": True, "seeds": False}, "not measured"),
])
def test_format_spread_forms(stat, options, shown):
    assert hwa.format_spread(stat, **options) == shown


def test_the_study_table_has_spaces_around_every_plus_minus_so_its_cells_wrap():
    summary = committed_summary()
    named(summary, "GQA, 2 KV heads")["kl_bits"] = None  # a configuration not measured in bits on every seed
    table = hwa.study_table(summary)
    assert "±" in table and re.search(r"\S±|±\S", table) is None and "(n=" not in table
    header, *rows = [line for line in table.splitlines() if line.startswith("| ") and "***" not in line]
    assert header.startswith("| configuration |") and len(rows) == len(summary["configs"])
    number = r"[−+]?\d\.\d{3}( ± \d\.\d{3})?"  # no space inside a number, one on each side of ±
    for row, config in zip(rows, summary["configs"], strict=True):
        cells = row.removeprefix("| ").removesuffix(" |").split(" | ")
        assert cells[0].replace("\u2011", "-") == config["name"] and len(cells) == 8, row  # hyphens kept whole
        for cell in cells[4:]:  # test accuracy, vs dense, gap to ceiling, KL
            assert re.fullmatch(number, cell) or cell in ("baseline", "not measured"), (config["name"], cell)
        assert ("±" in cells[4]) == (len(config["seeds"]) > 1), row  # one seed: a mean alone
        assert "-" not in "".join(cells[4:]), row  # minus signs, not hyphens
    gqa = next(row for row in rows if row.startswith("| GQA, 2 KV heads |"))
    assert gqa.endswith("| not measured |")


# --------------------------------------------------------------------------------------------------------------
# The appendix's "Summary of findings": each sentence that depends on the run or the study is a claim of
# hw3_appendix.SUMMARY_CLAIMS with its test. Those of the study hold for the committed study, and each fails on a
# study built to break it; those of the run are checked by tests/test_e2e.py on a real run, and here on planted
# numbers, so that none is vacuous.
# --------------------------------------------------------------------------------------------------------------
RUN_CLAIMS = {  # the claims on the appendix's and the homework's numbers; every other claim is on the study alone
    "comes within a few points of the exact Bayes-optimal accuracy",
    "A large share of the gap lies before the homework's curve levels off",
    "after that it stays a little below the ceiling",
    "In bits per token it is under-confident there",
    "it spreads a few percent of its probability over tokens the generator cannot emit",
    "most attention lies within 8 positions",
    "A linear probe does not find the coefficient pair",
    "the data pin the pair down after a few tokens",
    "gives `generate`'s tokens exactly",
    "is faster at the longest continuation timed",
    "the banded sliding window gives the graded one's output",
}
STUDY_CLAIMS = [claim for claim in hwa.SUMMARY_CLAIMS if claim not in RUN_CLAIMS]


def summary_text() -> str:
    """The appendix notebook's markdown cell "### Summary of findings"."""
    [text] = [cell.source for cell in nbformat.read(APPENDIX, as_version=4).cells
              if cell.cell_type == "markdown" and cell.source.startswith("### Summary of findings")]
    return text


def test_what_the_notebook_says_the_study_shows_holds_for_the_committed_study():
    verdicts = hwa.summary_verdicts(summary_text(), appendix=None, homework=None, study=committed_summary())
    assert set(verdicts) == set(hwa.SUMMARY_CLAIMS) and RUN_CLAIMS < set(verdicts) and len(STUDY_CLAIMS) >= 10
    assert "no longer in the summary" not in verdicts.values()  # every claim is a sentence of the summary
    assert {claim: verdicts[claim] for claim in STUDY_CLAIMS} == dict.fromkeys(STUDY_CLAIMS, "holds")
    # without the run's numbers the claims on them are not checked, never said to hold: which claims need a run
    assert {claim for claim, verdict in verdicts.items() if verdict.startswith("not checked: ")} == RUN_CLAIMS
    # and without the study, none is checked
    nothing = hwa.summary_verdicts(summary_text(), appendix=None, homework=None, study=None)
    assert all(verdict.startswith("not checked: ") for verdict in nothing.values()), nothing
    # In bits, 32 epochs end about where the prescribed 8 do (no sentence says so; the study's table shows it).
    assert abs(named(committed_summary(), "32 epochs")["kl_bits"]["mean"]
               - named(committed_summary(), "dense (prescribed)")["kl_bits"]["mean"]) < 0.005


def test_a_claim_whose_sentence_left_the_summary_is_said_to_be_gone_not_checked():
    claim = "in bits, 32 epochs lose more than 16 on both seeds"
    text = " ".join(summary_text().split()).replace(claim, "in bits, more epochs do not help")
    verdicts = hwa.summary_verdicts(text, appendix=None, homework=None, study=committed_summary())
    assert verdicts[claim] == "no longer in the summary"
    assert [c for c, verdict in verdicts.items() if verdict == "no longer in the summary"] == [claim]


def the_prediction(summary: dict) -> float:
    """What the width-128 fit predicts for its test run's budget: a test run that lands on it is no evidence that
    the predicted budget is too small."""
    [test] = hwa.prediction_tests(summary, "gap_to_ceiling")
    return test["predicted"]


VS_DENSE = ("difference_from_prescribed",)  # accuracy against the prescribed model on the same seeds
BITS_VS_DENSE = ("gap_difference_from_prescribed", "kl_bits")  # the KL against it, on the same seeds
# claim, what the broken study says, the configuration, the path to the one number changed in it, and its new value
# (or a function of the committed summary giving it)
BREAKERS = [
    ("only the mixture of experts, alone or in the combination of all three, beats the prescribed model on every seed",
     "GQA beats it on every seed too", "GQA, 2 KV heads", (*VS_DENSE, "per_seed"),
     [0.001, 0.002, 0.001]),
    ("only the mixture of experts, alone or in the combination of all three, beats the prescribed model on every seed",
     "all three loses on one seed", "all three", (*VS_DENSE, "per_seed", 2), -0.001),
    ("by about half a point in accuracy and about 0.02 bits per token",
     "MoE gains a whole point", "MoE, 4 experts top-2", (*VS_DENSE, "mean"), 0.01),
    ("by about half a point in accuracy and about 0.02 bits per token",
     "all three saves 0.04 bits", "all three", (*BITS_VS_DENSE, "mean"), -0.04),
    ("by about half a point in accuracy and about 0.02 bits per token",
     "MoE's bits within the spread", "MoE, 4 experts top-2", (*BITS_VS_DENSE, "std"),
     0.03),
    ("It also carries almost three times the parameters",
     "MoE has three times", "MoE, 4 experts top-2", ("parameters",),
     lambda s: 3 * named(s, "dense (prescribed)")["parameters"]),
    ("the width lever gains about as much from extra parameters alone",
     "width 96 gains 0.4 points more than MoE", "width 96", (*VS_DENSE, "mean"),
     lambda s: named(s, "MoE, 4 experts top-2")["difference_from_prescribed"]["mean"] + 0.004),
    ("GQA with 2 KV heads and the 8-token window stay within the spread over seeds in accuracy",
     "the window's loss beyond the spread", "sliding window 8, alternating", (*VS_DENSE, "std"),
     0.0001),
    ("In bits GQA stays within it too",
     "GQA's bits beyond the spread", "GQA, 2 KV heads", (*BITS_VS_DENSE, "std"), 0.0001),
    ("while the window loses a little (under 0.01 bits per token), just beyond twice its standard error",
     "the window loses 0.012 bits", "sliding window 8, alternating",
     (*BITS_VS_DENSE, "mean"), 0.012),
    ("while the window loses a little (under 0.01 bits per token), just beyond twice its standard error",
     "the window's bits within the spread", "sliding window 8, alternating",
     (*BITS_VS_DENSE, "std"), 0.01),
    ("data is the lever that closes the gap",
     "16 epochs save more bits than 40000 sequences", "16 epochs", (*BITS_VS_DENSE, "mean"),
     lambda s: named(s, "40000 sequences")["gap_difference_from_prescribed"]["kl_bits"]["mean"] - 0.001),
    ("raise accuracy and lower the KL at every budget tried",
     "80000 sequences lose more bits than 40000", "80000 sequences", ("kl_bits", "mean"),
     lambda s: named(s, "40000 sequences")["kl_bits"]["mean"] + 0.001),
    ("raise accuracy and lower the KL at every budget tried",
     "20000 sequences below the prescribed accuracy", "20000 sequences", ("test_accuracy", "mean"),
     lambda s: named(s, "dense (prescribed)")["test_accuracy"]["mean"] - 0.001),
    ("to under half of the prescribed model's at 40000",
     "40000 sequences at 0.55 of the prescribed bits", "40000 sequences", ("kl_bits", "mean"),
     lambda s: 0.55 * named(s, "dense (prescribed)")["kl_bits"]["mean"]),
    ("more epochs on the given training set stop helping after 16",
     "32 epochs more accurate than 16", "32 epochs", ("test_accuracy", "mean"),
     lambda s: named(s, "16 epochs")["test_accuracy"]["mean"] + 0.001),
    ("even as the study's final training loss keeps falling",
     "32 epochs end at a higher loss than 16", "32 epochs", ("final_train_loss", "mean"),
     lambda s: named(s, "16 epochs")["final_train_loss"]["mean"] + 0.001),
    ("in bits, 32 epochs lose more than 16 on both seeds",
     "32 epochs lose less than 16 on seed 0", "32 epochs", ("kl_bits", "per_seed", 0),
     lambda s: max(named(s, "16 epochs")["kl_bits"]["per_seed"]) - 0.001),
    ("gains about half a point and 0.03 bits, on every seed",
     "fresh sequences lose on seed 1", "80000 sequences, 1 epoch", (*VS_DENSE, "per_seed", 1),
     -0.001),
    ("gains about half a point and 0.03 bits, on every seed",
     "fresh sequences save 0.05 bits", "80000 sequences, 1 epoch", (*BITS_VS_DENSE, "mean"),
     -0.05),
    ("Wider models help, less than more data",
     "width 128 loses accuracy", "width 128", (*VS_DENSE, "mean"), -0.001),
    ("Wider models help, less than more data",
     "width 96 saves more bits than 40000 sequences", "width 96", (*BITS_VS_DENSE, "mean"),
     lambda s: named(s, "40000 sequences")["gap_difference_from_prescribed"]["kl_bits"]["mean"] - 0.001),
    ("The fitted data curve levels off above half a point at this width",
     "80000 sequences come within 0.4 points", "80000 sequences", ("gap_to_ceiling", "mean"), 0.004),
    ("the budget predicted for width 128 is likely too small, as its test run shows",
     "the test run lands on its prediction", "width 128, 50000 sequences", ("gap_to_ceiling", "mean"),
     the_prediction),
]


def test_every_claim_on_the_study_has_a_study_that_breaks_it():
    assert {claim for claim, *_ in BREAKERS} == set(STUDY_CLAIMS)


@pytest.mark.parametrize("claim,broken,name,path,value", BREAKERS, ids=[row[1] for row in BREAKERS])
def test_each_claim_on_the_study_fails_on_a_study_built_to_break_it(claim, broken, name, path, value):
    assert claim in " ".join(summary_text().split())
    summary = committed_summary()
    # the summary's text cut down to this claim: only its test runs (the fits of the others take a while)
    assert hwa.summary_verdicts(claim, appendix=None, homework=None, study=summary)[claim] == "holds"
    new = value(summary) if callable(value) else value
    changed = copy.deepcopy(summary)
    target = named(changed, name)
    for key in path[:-1]:
        target = target[key]
    assert target[path[-1]] != new
    target[path[-1]] = new
    assert hwa.summary_verdicts(claim, appendix=None, homework=None, study=changed)[claim] == "does not hold", broken


def test_the_claim_on_the_test_run_fails_on_a_study_without_one():
    """No test run of width 128 shows nothing: the claim does not hold (it once held vacuously, over no test)."""
    claim = "the budget predicted for width 128 is likely too small, as its test run shows"
    summary = committed_summary()
    summary["configs"] = [config for config in summary["configs"] if config["group"] != "prediction"]
    assert hwa.prediction_tests(summary, "gap_to_ceiling") == []
    assert hwa.summary_verdicts(claim, appendix=None, homework=None, study=summary)[claim] == "does not hold"


def planted_run():
    """The appendix's and the homework's numbers, made up so that every claim on them holds: the model 3 points
    below a ceiling of 0.88, most of its gap before position 10 where its curve levels off, 3 points below the
    ceiling after; more entropy than the Bayes predictor late, 3% of its mass on tokens the generator cannot emit;
    attention mostly within 8 positions; a probe at 0.1 where the Bayes posterior names the pair by position 3; the
    cache's tokens identical, slower at 16 tokens and faster from 64 on; the banded window within 1e-6."""
    model = [0.2] * 3 + [0.5] * 7 + [0.87] * 54  # (SEQ_LEN,): levels off at 10
    ceiling = [0.3] * 3 + [0.9] * 61
    appendix = {
        "bayes_optimal_accuracy": 0.88, "bayes_per_position_accuracy": ceiling,
        "bits": {"model_entropy_per_position": [0.5] * 64, "bayes_entropy_per_position": [0.4] * 64,
                 "outside_mass_after_position_9": 0.03, "bayes_outside_mass_after_position_9": 0.001},
        "attention_beyond_offset_8": [[0.1, 0.2], [0.05, 0.3]],  # (n_layers, heads)
        "probe": {"pair": [[0.1] * 64 for _ in range(3)],  # (stages, positions)
                  "bayes_map_accuracy": [0.05, 0.3, 0.7] + [0.95] * 61},
        "kv_cache": {"identical_to_generate": True, "lengths": [16, 64, 128], "speedups": [0.8, 2.0, 4.0]},
        "banded_largest_difference": 1e-6,
    }
    homework = {"final_test_accuracy": 0.85, "per_position_accuracy": model, "levels_off_at": 10}
    return appendix, homework


RUN_BREAKERS = [  # claim, what the broken run says, whose numbers, the path to what changes, its new value
    ("comes within a few points of the exact Bayes-optimal accuracy", "the ceiling 10 points above", "appendix",
     ("bayes_optimal_accuracy",), 0.95),
    ("A large share of the gap lies before the homework's curve levels off", "the curve levels off at 2",
     "homework", ("levels_off_at",), 2),
    ("after that it stays a little below the ceiling", "the model on the ceiling after 10", "appendix",
     ("bayes_per_position_accuracy",), [0.3] * 3 + [0.9] * 7 + [0.87] * 54),
    ("In bits per token it is under-confident there", "less entropy than Bayes", "appendix",
     ("bits", "model_entropy_per_position"), [0.3] * 64),
    ("it spreads a few percent of its probability over tokens the generator cannot emit", "20% outside", "appendix",
     ("bits", "outside_mass_after_position_9"), 0.2),
    ("most attention lies within 8 positions", "most attention beyond 8", "appendix", ("attention_beyond_offset_8",),
     [[0.6, 0.7], [0.5, 0.8]]),
    ("A linear probe does not find the coefficient pair", "the probe finds it at one position", "appendix",
     ("probe", "pair", 2, 40), 0.9),
    ("the data pin the pair down after a few tokens", "Bayes names it only after 11 tokens", "appendix",
     ("probe", "bayes_map_accuracy"), [0.1] * 11 + [0.95] * 53),
    ("gives `generate`'s tokens exactly", "other tokens", "appendix", ("kv_cache", "identical_to_generate"), False),
    ("is faster at the longest continuation timed", "slower at 128 tokens", "appendix", ("kv_cache", "speedups", 2),
     0.9),
    ("the banded sliding window gives the graded one's output", "off by 0.01", "appendix",
     ("banded_largest_difference",), 0.01),
]


def test_every_claim_on_the_run_holds_on_a_planted_run_and_has_a_run_that_breaks_it():
    appendix, homework = planted_run()
    verdicts = hwa.summary_verdicts(summary_text(), appendix, homework, committed_summary())
    assert set(verdicts.values()) == {"holds"}, {claim: v for claim, v in verdicts.items() if v != "holds"}
    assert {claim for claim, *_ in RUN_BREAKERS} == RUN_CLAIMS


@pytest.mark.parametrize("claim,broken,whose,path,value", RUN_BREAKERS, ids=[row[1] for row in RUN_BREAKERS])
def test_each_claim_on_the_run_fails_on_a_run_built_to_break_it(claim, broken, whose, path, value):
    appendix, homework = copy.deepcopy(planted_run())
    target = {"appendix": appendix, "homework": homework}[whose]
    for key in path[:-1]:
        target = target[key]
    assert target[path[-1]] != value
    target[path[-1]] = value
    assert hwa.summary_verdicts(claim, appendix, homework, study=None)[claim] == "does not hold", broken


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
    return hwa.training_fingerprint(study.notebook_sources(notebook))


def committed_record(run_id):
    return json.loads((COMMITTED / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))


def skip_unless_the_study_is_of_this_setup():
    """Go on only where the committed study was planned for the notebook's prescribed setup: every run of the plan
    recorded, with the plan's model and budget. After a new handout (another number of epochs, say) the study is of
    another setup until `make study` trains it again, as the appendix then says; a change to the code alone, the
    setup kept, still fails the tests that call this."""
    for run in study.plan():
        path = COMMITTED / "runs" / f"{run.run_id}.json"
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
    assert hwa.stale_runs(summary, fingerprint_of(notebook)) == []
    assert "all 3 runs of the study were trained by the homework's code" == hwa.study_provenance(
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
    assert hwa.study_provenance(summary, study.notebook_sources(notebook)) == (
        "3 of 3 runs were trained by other code than the homework's: `make study` runs them again")

    trained = []

    def execute(run, device="cpu", notebook=NOTEBOOK):  # what a run records, without training
        trained.append(run.run_id)
        return {**committed_record(run.run_id), "training_fingerprint": fingerprint_of(notebook)}

    monkeypatch.setattr(study, "execute", execute)
    summary = study.run_study(runs, out, progress=False, notebook=notebook)
    assert sorted(trained) == sorted(STAMPED)
    assert hwa.stale_runs(summary, now) == []
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
    training = set(hwa.training_cells(study.notebook_sources(notebook)).values())
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source in training:
            cell.source = relayout(cell.source)
    nbformat.write(nb, notebook)
    rewrapped = set(hwa.training_cells(study.notebook_sources(notebook)).values())
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
    expected = hwa.training_fingerprint(sources)
    history = kernel_in(sources, tmp_path, monkeypatch)  # top to bottom, as `make run` and "Run all" do
    assert history[0] == "" and any("get_ipython()" in source for source in history)  # IPython transformed magics
    assert hwa.training_fingerprint(history) == expected
    # magic-free, with cells of someone's own in between, and the training TODO run first in another version
    train = next(source for source in sources if "def train(" in source)
    magic_free = [source for source in sources if not any(line.lstrip().startswith(("%", "!"))
                                                          for line in source.splitlines())]
    assert len(magic_free) < len(sources)
    position = magic_free.index(train)
    edited = train.replace("max_norm=1.0", "max_norm=0.5")
    rerun = ([""] + magic_free[:position] + ["print(len(TRAIN_DATASET))", edited, "x = 1", train, "model"]
             + magic_free[position + 1:] + ["import math\nmath.pi"])
    assert hwa.training_fingerprint(rerun) == expected
    assert hwa.training_fingerprint(kernel_in(rerun[1:], tmp_path, monkeypatch)) == expected
    # the last version run is the one that counts
    assert hwa.training_fingerprint(magic_free + [edited]) != expected
    missing = [source for source in magic_free if "optimizer = torch.optim" not in source]
    assert hwa.training_fingerprint(missing) != expected
    summary = study.summarize([committed_record(run_id) | {"training_fingerprint": expected} for run_id in STAMPED])
    assert hwa.study_provenance(summary, missing) == (
        "3 of 3 runs were trained by other code than the homework's: `make study` runs them again (the "
        "homework's run did not run the cells of the training cell)")
    # a run that ran none of the training cells (the homework's code unknown) is not compared at all
    assert hwa.study_provenance(summary, ["print('a cell of my own')"]) == (
        "the study's 3 runs are not compared with the homework's code: the homework's run ran none of it")


def test_every_training_cell_is_a_handed_out_cell_and_known_by_the_names_it_binds_alone():
    import ast

    sources = study.notebook_sources(NOTEBOOK)
    found = hwa.training_cells(sources)
    assert all(found.values())
    handed_out = {form for form, _ in hw3.HANDED_OUT_CELLS}
    for source in found.values():  # each found cell is one of the handout's, in the table's own fingerprint
        form = ["code", *hw3.significant_lines(hw3.strip_todo_bodies(source))]
        assert hw3.fingerprint(form) in handed_out, source[:40]
    names = {}
    for source in sources:
        try:
            names.setdefault(hwa.bound_names(ast.parse(source)), []).append(source)
        except SyntaxError:  # a cell with magics
            continue
    for name, bound in hwa.TRAINING_CELLS.items():
        assert names.get(bound) == [found[name]], name  # no other cell of the notebook binds the same names
    # the cells left out: the embedded tests and the generation and sampling cells
    kept = set(found.values())
    assert not any(source.startswith("##### TESTS START #####") for source in kept)
    assert not any("def generate(" in source or "def get_dist_after_with_temp_and_topp(" in source for source in kept)


def test_the_tree_s_shape_leaves_out_positions_empty_fields_and_docstrings():
    import ast

    tree = ast.parse('def f(x: int = 1):\n    """doc"""\n    return x  # a comment\n')
    assert hwa.tree_shape(tree) == [
        "Module", ["body", [["FunctionDef", ["name", ["str", "'f'"]],
                             ["args", ["arguments", ["args", [["arg", ["arg", ["str", "'x'"]],
                                                               ["annotation", ["Name", ["id", ["str", "'int'"]],
                                                                               ["ctx", ["Load"]]]]]]],
                                       ["defaults", [["Constant", ["value", ["int", "1"]]]]]]],
                             ["body", [["Return", ["value", ["Name", ["id", ["str", "'x'"]], ["ctx", ["Load"]]]]]]]]]]]
    assert hwa.tree_shape(ast.parse("def f(x: int = (\n  1)):\n    return (x)")) == hwa.tree_shape(
        tree)


def test_runs_recorded_without_a_fingerprint_are_stale():
    summary = study.summarize([committed_record(run_id) for run_id in STAMPED])
    summary = json.loads(json.dumps(summary))
    for config in summary["configs"]:
        config.pop("training_fingerprints")  # a summary written before runs recorded their code
    assert len(hwa.stale_runs(summary, fingerprint_of(NOTEBOOK))) == 3


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
    assert hwa.stale_runs(summary, now) == []
    for run_id in STAMPED:  # nothing but the fingerprint changed
        record = json.loads((out / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))
        assert record == {**committed_record(run_id), "training_fingerprint": now}


def test_the_committed_study_was_trained_by_the_committed_notebook_s_code():
    """Every committed run records the training fingerprint of homework3.ipynb as it is: after a change to the code
    that a run trains with, `make study` runs them again (or `python -m hw3tools.study --stamp-if-reproduced RUN_ID`
    shows that the change moves no recorded number)."""
    skip_unless_the_study_is_of_this_setup()
    summary = json.loads((COMMITTED / "summary.json").read_text(encoding="utf-8"))
    assert hwa.stale_runs(summary, fingerprint_of(NOTEBOOK)) == []
    assert study.plan_status(study.plan())["reused"] == [run.run_id for run in study.plan()]


def test_every_sentence_of_the_appendixs_summary_holds_for_the_record_run():
    """The record run (report/record.json: the homework's numbers and the appendix's on them, made on an idle
    machine) bears out every sentence of the summary, its timing of the KV cache included."""
    from hw3tools import record

    recorded = record.load_json(record.RECORD)
    summary = next(c.source for c in nbformat.read(APPENDIX, as_version=4).cells
                   if c.source.startswith("### Summary of findings"))
    verdicts = hwa.summary_verdicts(summary, recorded, recorded, json.loads(
        (COMMITTED / "summary.json").read_text(encoding="utf-8")))
    assert set(verdicts.values()) == {"holds"}, {claim: v for claim, v in verdicts.items() if v != "holds"}
