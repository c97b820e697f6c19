"""make study: the prescribed model and its variants at the full training budget over several seeds, and the
levers that could close the gap to the Bayes ceiling (epochs, capacity, data).

Each run is the notebook's pipeline with one seed: the given data code draws the test set and then the training
set (the test generators excluded), the model is built from the seed, and the graded `train` loop with the given
optimizer and batch size trains it. The constants, the prescribed model's arguments, the optimizer and its settings
and the prescribed budget are read from the notebook's cells (`notebook_settings`), not copied here. A finished run
is a JSON file in appendix/study/runs/ that records the fingerprint of the notebook's code it trained with
(hw3_appendix.training_fingerprint); it is never repeated while the notebook's code has that fingerprint, so an
interrupted study resumes where it stopped, and a run that other code trained is run again. appendix/study/summary.json
aggregates the runs per configuration. `python -m hw3tools.study --plan` prints what `make study` would reuse and
run, without training.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import nbformat
import numpy as np
import torch

import hw3_appendix
import hw3_helpers
from hw3tools.notebook import NOTEBOOK, ROOT, load_definitions, module_of

STUDY_DIR = ROOT / "appendix" / "study"


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators, as the notebook's setup cell does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def notebook_sources(notebook: Path = NOTEBOOK) -> list[str]:
    """The notebook's code cells' sources, in order: what its kernel's `In` holds after a run top to bottom."""
    return [cell.source for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"]


@dataclass(frozen=True)
class Settings:
    """What the notebook's cells give a run: the constants, the prescribed model, the optimizer, the budget."""

    seq_len: int
    vocab_size: int
    next_prob: float
    initial: int
    batch_size: int
    test_sequences: int
    train_sequences: int  # the prescribed budget: the training set's size, and the training cell's epochs
    epochs: int
    model: dict  # the training cell's Transformer keyword arguments, vocab_size aside
    model_vocab_size: int  # its vocab_size
    optimizer: str  # a class of torch.optim, as the training cell names it
    optimizer_options: dict  # its keyword arguments, the parameters aside: {"lr": 0.01}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """The calls of the function `name` in a tree."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name]


def notebook_settings(sources: list[str] | None = None) -> Settings:
    """The settings as the notebook's cells (`sources`: its code cells, or a kernel's `In`; the notebook file by
    default) hand them out: the constants cell's assignments that call nothing executed (the device, the data sets
    and the loaders aside), the sizes of its test and training sets, and the training cell's Transformer(...) and
    torch.optim keyword arguments and its epochs, each evaluated among those constants."""
    cells = hw3_appendix.training_cells(notebook_sources() if sources is None else sources)
    missing = [name for name in ("the constants", "the training cell") if cells[name] is None]
    if missing:
        raise ValueError(f"the notebook has no cell that is {' or '.join(missing)}")
    constants_cell, training_cell = ast.parse(cells["the constants"]), ast.parse(cells["the training cell"])
    constants = module_of([cells["the constants"]], name="the constants cell")  # its assignments that call nothing

    def keywords(call: ast.Call, *names: str) -> dict:  # all of them, or those named, evaluated among the constants
        return {keyword.arg: eval(compile(ast.Expression(keyword.value), "<cell>", "eval"), vars(constants))
                for keyword in call.keywords if keyword.arg is not None and (not names or keyword.arg in names)}

    def dataset_size(name: str) -> int:  # `NAME, ... = generate_dataset(..., num_entries=N, ...)`
        [call] = [node.value for node in constants_cell.body
                  if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                  and isinstance(node.targets[0], ast.Tuple) and getattr(node.targets[0].elts[0], "id", None) == name]
        return keywords(call, "num_entries")["num_entries"]

    [build], [train] = _calls(training_cell, "Transformer"), _calls(training_cell, "train")
    [optimizer] = [call for call in ast.walk(training_cell) if isinstance(call, ast.Call)  # torch.optim.AdamW(...)
                   and isinstance(call.func, ast.Attribute) and getattr(call.func.value, "attr", None) == "optim"]
    model = keywords(build)
    return Settings(
        seq_len=constants.SEQ_LEN, vocab_size=constants.VOCAB_SIZE, next_prob=constants.NEXT_PROB,
        initial=constants.INITIAL, batch_size=constants.BATCH_SIZE,
        test_sequences=dataset_size("TEST_DATASET"), train_sequences=dataset_size("TRAIN_DATASET"),
        epochs=keywords(train, "num_epochs")["num_epochs"], model_vocab_size=model.pop("vocab_size"), model=model,
        optimizer=optimizer.func.attr, optimizer_options=keywords(optimizer))


@dataclass(frozen=True)
class Run:
    """One training run: a configuration of a group, one seed."""

    group: str  # "variants", "epochs", "capacity", "data"
    name: str  # the configuration, as tables and figures label it
    seed: int
    model: dict  # Transformer keyword arguments (vocab_size aside)
    epochs: int
    train_sequences: int

    @property
    def run_id(self) -> str:
        return f"{self.group}__{re.sub(r'[^a-z0-9]+', '-', self.name.lower()).strip('-')}__seed{self.seed}"


VARIANTS = {  # configuration -> Transformer arguments beyond the prescribed model's
    "dense (prescribed)": {},
    "GQA, 2 KV heads": {"num_kv_heads": 2},
    "MoE, 4 experts top-2": {"use_moe": True, "num_experts": 4, "top_k": 2},
    "sliding window 8, alternating": {"use_sliding_window_alternating": True, "window_size": 8},
    "all three": {"num_kv_heads": 2, "use_moe": True, "num_experts": 4, "top_k": 2,
                  "use_sliding_window_alternating": True, "window_size": 8},
}
# lever -> budgets beyond the prescribed one (which is the dense variant): "model" holds Transformer arguments
# beyond the prescribed model's, "epochs" and "train_sequences" replace the prescribed budget's.
LEVERS = {
    "epochs": {"16 epochs": {"epochs": 16}, "32 epochs": {"epochs": 32}},
    "capacity": {"width 96": {"model": {"hidden_dim": 96, "ff_dim": 192, "head_dim": 24}},
                 "width 128": {"model": {"hidden_dim": 128, "ff_dim": 256, "head_dim": 32}}},
    "data": {"20000 sequences": {"train_sequences": 20000}, "40000 sequences": {"train_sequences": 40000},
             # Beyond the two budgets each lever has: one seed, as far towards the ceiling as the session allowed.
             "80000 sequences": {"train_sequences": 80000, "seeds": (0,)}},  # and `equal_compute`, planned last
    # The test of the prediction from the data fit and the capacity runs: the cheapest width predicted to come
    # within half a point of the ceiling needs about 167000 sequences; 50000 is the largest budget that fitted
    # beside the rest of the study (78 minutes of one core per seed, as recorded).
    "prediction": {"width 128, 50000 sequences": {
        "model": {"hidden_dim": 128, "ff_dim": 256, "head_dim": 32}, "train_sequences": 50000}},
}
VARIANT_SEEDS, LEVER_SEEDS = (0, 1, 2), (0, 1)


def equal_compute(settings: Settings) -> tuple[str, dict]:
    """The prescribed compute spent on fresh sequences instead of repeated epochs: as many sequences, each seen once,
    as the prescribed epochs show the model (so as many steps, but for each epoch's incomplete last batch)."""
    sequences = settings.epochs * settings.train_sequences
    return f"{sequences} sequences, 1 epoch", {"train_sequences": sequences, "epochs": 1}


def plan(settings: Settings | None = None) -> list[Run]:
    """Every run of the study, in the order they are worth having: variants first, then each lever's seeds; the
    prescribed model and budget are the notebook's (`notebook_settings`), and so is the equal-compute run's."""
    settings = settings or notebook_settings()
    prescribed = {"epochs": settings.epochs, "train_sequences": settings.train_sequences}
    runs = [Run("variants", name, seed, {**settings.model, **options}, **prescribed)
            for seed in VARIANT_SEEDS for name, options in VARIANTS.items()]
    levers = {**LEVERS, "data": {**LEVERS["data"], **dict([equal_compute(settings)])}}
    for seed in LEVER_SEEDS:
        for lever, budgets in levers.items():
            for name, budget in budgets.items():
                if seed in budget.get("seeds", LEVER_SEEDS):
                    runs.append(Run(lever, name, seed, {**settings.model, **budget.get("model", {})},
                                    **{key: budget.get(key, value) for key, value in prescribed.items()}))
    return runs


def execute(run: Run, device: str = "cpu", notebook: Path = NOTEBOOK) -> dict:
    """Train one run from scratch with the notebook's code and settings and measure it; returns the record written
    to study/runs/<run_id>.json, with the fingerprint of the code it trained with."""
    sources = notebook_sources(notebook)
    trained_with = hw3_appendix.training_fingerprint(sources)
    settings = notebook_settings(sources)
    hw = load_definitions(notebook, device=device)
    if hw3_appendix.training_fingerprint(notebook_sources(notebook)) != trained_with:
        raise RuntimeError(f"{notebook} changed while its definitions were loaded; run again")
    seed_everything(run.seed)  # the setup cell's seeding: the data come from NumPy's generator
    factory = hw.example_generator(
        lambda: hw.generate_recursive(settings.initial, settings.vocab_size, settings.next_prob))
    test_set, generators = hw.generate_dataset(gen_factory=factory, seq_len=settings.seq_len,
                                               num_entries=settings.test_sequences)
    train_set, _ = hw.generate_dataset(gen_factory=factory, seq_len=settings.seq_len,
                                       num_entries=run.train_sequences, exclude=generators)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=settings.batch_size)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=settings.batch_size)

    torch.manual_seed(run.seed)  # as the notebook's cell before the training cell
    model = hw.Transformer(vocab_size=settings.model_vocab_size, **run.model).to(device)
    optimizer = getattr(torch.optim, settings.optimizer)(model.parameters(), **settings.optimizer_options)
    epoch_accuracy = []  # the graded loop calls eval_fn before training and after every epoch

    def record_accuracy(step, model):
        epoch_accuracy.append(float(hw.eval_acc(model, test_loader)))

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm, prints
        hw.train(model, optimizer, train_loader, record_accuracy, num_epochs=run.epochs)
    train_seconds = time.perf_counter() - started

    x, y = test_set.tensors
    per_position = hw.calc_per_token_acc(model, test_loader)
    tokens = torch.cat([x, y[:, -1:]], dim=1).numpy()
    bayes_probs = hw3_appendix.bayes_predictive(tokens, settings.vocab_size, settings.next_prob,
                                               settings.initial)[:, 1:]
    bayes_hits = bayes_probs.argmax(-1) == y.numpy()
    model.eval()
    with torch.no_grad():
        log_probs = torch.cat([torch.log_softmax(model(batch.to(device)), -1).cpu() for batch, _ in test_loader])
    bits = hw3_appendix.bits_against_bayes(log_probs.double().numpy(), bayes_probs, y.numpy())
    return {
        **asdict(run), "run_id": run.run_id,
        "test_accuracy": epoch_accuracy[-1],
        "bayes_accuracy": float(bayes_hits.mean()),
        "gap_to_ceiling": float(bayes_hits.mean()) - epoch_accuracy[-1],
        "epoch_test_accuracy": epoch_accuracy[1:],
        "steps_per_epoch": len(train_loader),
        "final_train_loss": model.training_log["epoch_loss"][-1],
        "per_position_accuracy": [round(float(a), 4) for a in per_position],
        "bayes_per_position_accuracy": [round(float(a), 4) for a in bayes_hits.mean(0)],
        # Bits per token against the Bayes predictive, means over the test set's tokens (see bits_against_bayes)
        "kl_bits": float(bits["kl"].mean()), "cross_entropy_bits": float(bits["cross_entropy"].mean()),
        "bayes_entropy_bits": float(bits["bayes_entropy"].mean()),
        "kl_bits_per_position": [round(float(v), 5) for v in bits["kl"].mean(0)],
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": train_seconds,
        "device": str(device), "threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "training_fingerprint": trained_with,
    }


REQUIRED = ("kl_bits", "cross_entropy_bits")  # a run recorded before these were measured is run again


def _state(path: Path, trained_with: str) -> str:
    """"new" without a complete record, "stale" for a run that other code trained, else "reused"."""
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if record is None or not all(key in record for key in REQUIRED):
        return "new"
    return "reused" if record.get("training_fingerprint") == trained_with else "stale"


def finished(path: Path, trained_with: str) -> bool:
    """A run is finished when its file exists, records everything the study now measures, and was trained by the
    code whose fingerprint is `trained_with` (the notebook's now)."""
    return _state(path, trained_with) == "reused"


def plan_status(runs: list[Run], out_dir: Path = STUDY_DIR, notebook: Path = NOTEBOOK) -> dict:
    """What `make study` would do, without training: the notebook's training fingerprint, and the run ids that it
    reuses (finished, trained by this code), that are stale (finished, but trained by other code: run again) and
    that are new (no complete record: run)."""
    trained_with = hw3_appendix.training_fingerprint(notebook_sources(notebook))
    status = {"training_fingerprint": trained_with, "reused": [], "stale": [], "new": []}
    for run in runs:
        status[_state(out_dir / "runs" / f"{run.run_id}.json", trained_with)].append(run.run_id)
    return status


def describe_plan(status: dict) -> str:
    lines = [f"study plan for the notebook's training code {status['training_fingerprint'][:12]}: "
             f"{len(status['reused'])} runs reused, {len(status['stale'])} stale (not trained by this code) and "
             f"{len(status['new'])} new, to run"]
    lines += [f"  run again: {run_id}" for run_id in status["stale"]]
    lines += [f"  run: {run_id}" for run_id in status["new"]]
    return "\n".join(lines)


FIRST = ("dense (prescribed)", "20000 sequences", "40000 sequences", "equal compute", "80000 sequences", "width 96",
         "width 128")


def priority(run: Run) -> tuple:
    """What the fit of the gap against the data budget and the prediction from the capacity runs need, smallest
    budgets first, then the plan's order."""
    name = "equal compute" if run.group == "data" and run.epochs == 1 else run.name
    return (FIRST.index(name) if name in FIRST else len(FIRST),)


def _execute_in_worker(run: Run, device: str, threads: int, notebook: Path) -> dict:
    torch.set_num_threads(threads)
    return execute(run, device, notebook)


BASELINE = ("variants", "dense (prescribed)")


def _spread(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "per_seed": [float(v) for v in array]}


def summarize(records: list[dict]) -> dict:
    """Per configuration: mean, sample standard deviation and per-seed values of what each run measured, and the
    difference from the prescribed model trained on the same seeds (same data, same test set), which removes the
    seed-to-seed spread that both share."""
    configs = {}
    for record in records:
        configs.setdefault((record["group"], record["name"]), []).append(record)
    baseline = {r["seed"]: r for r in configs.get(BASELINE, [])}

    def paired(runs, key):  # None until the runs and their baselines have all measured `key`
        pairs = [(r, baseline[r["seed"]]) for r in runs if r["seed"] in baseline]
        if not pairs or not all(key in r and key in base for r, base in pairs):
            return None
        return _spread([r[key] - base[key] for r, base in pairs])

    summary = []
    for (group, name), runs in configs.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        epochs = np.array([r["epoch_test_accuracy"] for r in runs])
        summary.append({
            "group": group, "name": name, "seeds": [r["seed"] for r in runs],
            "model": runs[0]["model"], "epochs": runs[0]["epochs"], "train_sequences": runs[0]["train_sequences"],
            "parameters": runs[0]["parameters"], "steps": runs[0]["steps_per_epoch"] * runs[0]["epochs"],
            "steps_per_epoch": runs[0]["steps_per_epoch"],
            **{key: _spread([r[key] for r in runs]) for key in
               ("test_accuracy", "bayes_accuracy", "gap_to_ceiling", "train_seconds", "final_train_loss")},
            # bits per token: None until every run of the configuration has measured them
            **{key: _spread([r[key] for r in runs]) if all(key in r for r in runs) else None
               for key in ("kl_bits", "cross_entropy_bits", "bayes_entropy_bits")},
            "difference_from_prescribed": paired(runs, "test_accuracy"),
            # the same pairing for the two gaps to the Bayes predictor, as the prediction of the budget uses them
            "gap_difference_from_prescribed": {key: paired(runs, key) for key in ("gap_to_ceiling", "kl_bits")},
            "epoch_test_accuracy_mean": epochs.mean(0).tolist(),
            "epoch_test_accuracy_std": (epochs.std(0, ddof=1) if len(runs) > 1 else 0 * epochs[0]).tolist(),
            "per_position_accuracy_mean": np.mean([r["per_position_accuracy"] for r in runs], 0).round(4).tolist(),
            "bayes_per_position_accuracy_mean":
                np.mean([r["bayes_per_position_accuracy"] for r in runs], 0).round(4).tolist(),
            "device": runs[0]["device"], "torch_version": runs[0]["torch_version"],
            # per seed: the fingerprint of the notebook's code that trained it (hw3_helpers.stale_runs reads them)
            "training_fingerprints": [r.get("training_fingerprint") for r in runs],
        })
    return {"configs": summary}


def run_study(runs: list[Run], out_dir: Path = STUDY_DIR, jobs: int = 1, device: str = "cpu",
              progress: bool = True, notebook: Path = NOTEBOOK) -> dict:
    """Print the plan (with `progress`), run what is not finished by the notebook's code yet (each result written
    as it finishes), then write the summary."""
    from tqdm import tqdm

    runs_dir = out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    status = plan_status(runs, out_dir, notebook)
    if progress:
        print(describe_plan(status))
    todo = sorted((run for run in runs if run.run_id not in status["reused"]), key=priority)
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="study runs", unit="run", disable=not progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with contextlib.ExitStack() as stack:
        if jobs == 1:
            results = (execute(run, device, notebook) for run in todo)
        else:  # one process per run in flight, each with its share of the cores
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")))
            results = (future.result() for future in
                       as_completed([pool.submit(_execute_in_worker, run, device, threads, notebook)
                                     for run in todo]))
        for record in results:
            hw3_helpers.write_atomically(runs_dir / f"{record['run_id']}.json", json.dumps(record, indent=1) + "\n")
            if record["training_fingerprint"] != status["training_fingerprint"]:
                print(f"warning: {notebook} changed during the study; {record['run_id']} was trained by its new "
                      f"code, the runs before by the old: `make study` again runs what is stale")
            bar.set_postfix_str(f"{record['run_id']}: {record['test_accuracy']:.4f}")
            bar.update()
    bar.close()
    summary = summarize([json.loads((runs_dir / f"{run.run_id}.json").read_text(encoding="utf-8")) for run in runs])
    hw3_helpers.write_atomically(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


RECORD_TIMING = ("train_seconds",)  # what a run's record holds that no two runs reproduce


def reproduce(run_id: str, out_dir: Path = STUDY_DIR, notebook: Path = NOTEBOOK) -> dict:
    """Train the recorded run `run_id` again with the notebook's code, on as many threads as it recorded; returns
    {"record": the new record, "differences": {key: (recorded, now)} for every key but the timing}."""
    [run] = [run for run in plan(notebook_settings(notebook_sources(notebook))) if run.run_id == run_id]
    recorded = json.loads((out_dir / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))
    torch.set_num_threads(recorded["threads"])
    record = execute(run, recorded["device"], notebook)
    skip = {*RECORD_TIMING, "training_fingerprint"}
    differences = {key: (recorded.get(key), record.get(key)) for key in {*recorded, *record} - skip
                   if recorded.get(key) != record.get(key)}
    return {"record": record, "differences": differences}


def stamp(trained_with: str, runs: list[Run], out_dir: Path = STUDY_DIR) -> dict:
    """Record `trained_with` as the training fingerprint of every run, without training, and write the summary
    again. Only for code that reproduces a recorded run exactly (`reproduce`, `--stamp-if-reproduced`)."""
    runs_dir = out_dir / "runs"
    records = []
    for run in runs:
        path = runs_dir / f"{run.run_id}.json"
        record = {**json.loads(path.read_text(encoding="utf-8")), "training_fingerprint": trained_with}
        hw3_helpers.write_atomically(path, json.dumps(record, indent=1) + "\n")
        records.append(record)
    summary = summarize(records)
    hw3_helpers.write_atomically(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw3tools.study", description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--plan", action="store_true", help="print which runs `make study` reuses and which it "
                        "runs (again), without training")
    action.add_argument("--stamp-if-reproduced", metavar="RUN_ID", help="train RUN_ID again with the notebook's "
                        "code; if every number it records but the timing is the recorded one, record the "
                        "notebook's training fingerprint in every run and the summary, without training them")
    args = parser.parse_args(argv)
    if args.plan:
        print(describe_plan(plan_status(plan())))
        return 0
    result = reproduce(args.stamp_if_reproduced)
    record = result["record"]
    print(f"{args.stamp_if_reproduced} trained again in {record['train_seconds']:.0f} s on {record['threads']} "
          f"thread(s), torch {record['torch_version']}, code {record['training_fingerprint'][:12]}")
    if result["differences"]:
        for key, (recorded, now) in sorted(result["differences"].items()):
            print(f"  {key}: recorded {recorded!r}, now {now!r}")
        print(f"not reproduced: {len(result['differences'])} values differ; nothing was stamped")
        return 1
    summary = stamp(record["training_fingerprint"], plan())
    print(f"reproduced exactly (every value but {', '.join(RECORD_TIMING)}): stamped "
          f"{sum(len(c['seeds']) for c in summary['configs'])} runs and {STUDY_DIR / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
