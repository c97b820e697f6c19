"""make study: the prescribed model and its variants at the full training budget over several seeds, and the
levers that could close the gap to the Bayes ceiling (epochs, capacity, data).

Each run is the notebook's pipeline with one seed: the given data code draws the test set and then the training
set (the test generators excluded), the model is built from the seed, and the graded `train` loop with the given
AdamW(lr=0.01) and batch size trains it. A finished run is a JSON file in study/runs/ and is never repeated, so an
interrupted study resumes where it stopped; study/summary.json aggregates the runs per configuration.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

import hw3_helpers
from hw3tools.notebook import ROOT, load_definitions

STUDY_DIR = ROOT / "study"
# The notebook's given constants (cell `#[do not modify]` with BATCH_SIZE, SEQ_LEN, ...).
SEQ_LEN, VOCAB_SIZE, NEXT_PROB, INITIAL, BATCH_SIZE, TEST_SEQUENCES = 64, 7, 0.1, 2, 128, 1000
PRESCRIBED = {"n_layers": 4, "hidden_dim": 64, "ff_dim": 128, "num_heads": 4, "head_dim": 16}


@dataclass(frozen=True)
class Run:
    """One training run: a configuration of a group, one seed."""

    group: str  # "variants", "epochs", "capacity", "data"
    name: str  # the configuration, as tables and figures label it
    seed: int
    model: dict = field(default_factory=lambda: dict(PRESCRIBED))  # Transformer keyword arguments
    epochs: int = 8
    train_sequences: int = 10000

    @property
    def run_id(self) -> str:
        return f"{self.group}__{re.sub(r'[^a-z0-9]+', '-', self.name.lower()).strip('-')}__seed{self.seed}"


VARIANTS = {
    "dense (prescribed)": {},
    "GQA, 2 KV heads": {"num_kv_heads": 2},
    "MoE, 4 experts top-2": {"use_moe": True, "num_experts": 4, "top_k": 2},
    "sliding window 8, alternating": {"use_sliding_window_alternating": True, "window_size": 8},
    "all three": {"num_kv_heads": 2, "use_moe": True, "num_experts": 4, "top_k": 2,
                  "use_sliding_window_alternating": True, "window_size": 8},
}
LEVERS = {  # lever -> budgets beyond the prescribed one (which is the dense variant)
    "epochs": {"16 epochs": {"epochs": 16}, "32 epochs": {"epochs": 32}},
    "capacity": {"width 96": {"model": {**PRESCRIBED, "hidden_dim": 96, "ff_dim": 192, "head_dim": 24}},
                 "width 128": {"model": {**PRESCRIBED, "hidden_dim": 128, "ff_dim": 256, "head_dim": 32}}},
    "data": {"20000 sequences": {"train_sequences": 20000}, "40000 sequences": {"train_sequences": 40000},
             # Beyond the two budgets each lever has: one seed, as far towards the ceiling as the session allowed.
             "80000 sequences": {"train_sequences": 80000, "seeds": (0,)},
             # The prescribed compute (625 steps against 632) spent on fresh sequences instead of repeated epochs.
             "80000 sequences, 1 epoch": {"train_sequences": 80000, "epochs": 1}},
    # The test of the prediction from the data fit and the capacity runs: the cheapest width predicted to come
    # within half a point of the ceiling needs about 167000 sequences (some 100 minutes of one core per seed);
    # 50000 is the largest budget that fitted beside the rest of the study, about 40 minutes per seed.
    "prediction": {"width 128, 50000 sequences": {
        "model": {**PRESCRIBED, "hidden_dim": 128, "ff_dim": 256, "head_dim": 32}, "train_sequences": 50000}},
}
VARIANT_SEEDS, LEVER_SEEDS = (0, 1, 2), (0, 1)


def plan() -> list[Run]:
    """Every run of the study, in the order they are worth having: variants first, then each lever's seeds."""
    runs = [Run("variants", name, seed, {**PRESCRIBED, **options})
            for seed in VARIANT_SEEDS for name, options in VARIANTS.items()]
    for seed in LEVER_SEEDS:
        for lever, budgets in LEVERS.items():
            for name, budget in budgets.items():
                options = {key: value for key, value in budget.items() if key != "seeds"}
                if seed in budget.get("seeds", LEVER_SEEDS):
                    runs.append(Run(lever, name, seed, **options))
    return runs


def execute(run: Run, device: str = "cpu") -> dict:
    """Train one run from scratch and measure it; returns the record written to study/runs/<run_id>.json."""
    hw = load_definitions(device=device)
    hw3_helpers.seed_everything(run.seed)  # the setup cell's seeding: the data come from NumPy's generator
    factory = hw.example_generator(lambda: hw.generate_recursive(INITIAL, VOCAB_SIZE, NEXT_PROB))
    test_set, generators = hw.generate_dataset(gen_factory=factory, seq_len=SEQ_LEN, num_entries=TEST_SEQUENCES)
    train_set, _ = hw.generate_dataset(gen_factory=factory, seq_len=SEQ_LEN, num_entries=run.train_sequences,
                                       exclude=generators)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH_SIZE)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=BATCH_SIZE)

    torch.manual_seed(run.seed)  # as the notebook's cell before the training cell
    model = hw.Transformer(vocab_size=VOCAB_SIZE, **run.model).to(device)
    epoch_accuracy = []  # the graded loop calls eval_fn before training and after every epoch

    def record_accuracy(step, model):
        epoch_accuracy.append(float(hw.eval_acc(model, test_loader)))

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm, prints
        hw.train(model, torch.optim.AdamW(model.parameters(), lr=0.01), train_loader, record_accuracy,
                 num_epochs=run.epochs)
    train_seconds = time.perf_counter() - started

    x, y = test_set.tensors
    per_position = hw.calc_per_token_acc(model, test_loader)
    tokens = torch.cat([x, y[:, -1:]], dim=1).numpy()
    bayes_probs = hw3_helpers.bayes_predictive(tokens, VOCAB_SIZE, NEXT_PROB, INITIAL)[:, 1:]
    bayes_hits = bayes_probs.argmax(-1) == y.numpy()
    model.eval()
    with torch.no_grad():
        log_probs = torch.cat([torch.log_softmax(model(batch.to(device)), -1).cpu() for batch, _ in test_loader])
    bits = hw3_helpers.bits_against_bayes(log_probs.double().numpy(), bayes_probs, y.numpy())
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
    }


REQUIRED = ("kl_bits", "cross_entropy_bits")  # a run recorded before these were measured is run again


def finished(path: Path) -> bool:
    """A run is finished when its file exists and records everything the study now measures."""
    return path.exists() and all(key in json.loads(path.read_text(encoding="utf-8")) for key in REQUIRED)


FIRST = ("dense (prescribed)", "20000 sequences", "40000 sequences", "80000 sequences, 1 epoch", "80000 sequences",
         "width 96", "width 128")


def priority(run: Run) -> tuple:
    """What the fit of the gap against the data budget and the prediction from the capacity runs need, smallest
    budgets first, then the plan's order."""
    return (FIRST.index(run.name) if run.name in FIRST else len(FIRST),)


def _execute_in_worker(run: Run, device: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    return execute(run, device)


def run_study(runs: list[Run], out_dir: Path = STUDY_DIR, jobs: int = 1, device: str = "cpu",
              progress: bool = True) -> list[dict]:
    """Run what is not finished yet (each result written as it finishes), then write the summary."""
    from tqdm import tqdm

    runs_dir = out_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = sorted((run for run in runs if not finished(runs_dir / f"{run.run_id}.json")), key=priority)
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="study runs", unit="run", disable=not progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with contextlib.ExitStack() as stack:
        if jobs == 1:
            results = (execute(run, device) for run in todo)
        else:  # one process per run in flight, each with its share of the cores
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")))
            results = (future.result() for future in
                       as_completed([pool.submit(_execute_in_worker, run, device, threads) for run in todo]))
        for record in results:
            hw3_helpers.write_atomically(runs_dir / f"{record['run_id']}.json", json.dumps(record, indent=1) + "\n")
            bar.set_postfix_str(f"{record['run_id']}: {record['test_accuracy']:.4f}")
            bar.update()
    bar.close()
    summary = summarize([json.loads((runs_dir / f"{run.run_id}.json").read_text(encoding="utf-8")) for run in runs])
    hw3_helpers.write_atomically(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _spread(values: list[float]) -> dict:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "per_seed": [float(v) for v in array]}


BASELINE = ("variants", "dense (prescribed)")


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
        })
    return {"configs": summary}
