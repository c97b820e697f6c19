"""Companion module of appendix/appendix.ipynb, *Beyond the assignment*: the analysis of the model that the homework
run trained. The homework (homework3.ipynb with hw3_helpers.py) never imports it.

Its sections, each using only what stands above it:

1. **The homework's run**: `load_homework_run` (its weights, numbers and code, or `NoHomeworkRun`: one line saying
   what to run), `save_figure` (into appendix/figures/), `write_appendix_metrics` (build/appendix_metrics.json).
2. **The Bayes-optimal predictor** of the data and what the model holds: `bayes_filter`, `bayes_predictive`,
   `branch_values`, `bits_against_bayes`, `token_branches`, `residual_stream`, `attention_weights`,
   `offset_profile`, `attention_by_offset`, `ridge_probe`.
3. **The committed study** (`make study`), read and drawn: `load_study`, `study_configs`, `format_spread`,
   `study_table`, the budget fit (`fit_floor_power_law`, `budget_for_gap`, `data_budgets`, `width_fits`,
   `fitted_gap`, `prediction_tests`, `plot_budget_fit`), `plot_study_variants`, `plot_study_levers`,
   `study_figures`; and which code trained it: `TRAINING_CELLS`, `training_cells`, `training_fingerprint`,
   `stale_runs`, `study_provenance`.
4. **The summary's claims**: `SUMMARY_CLAIMS`, each sentence of the appendix's summary that depends on the run or
   the study, with its test; `summary_verdicts`.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent  # appendix/
ROOT = HERE.parent  # the repository: homework3.ipynb, hw3_helpers.py, hw3tools/
if str(ROOT) not in sys.path:  # the appendix's kernel starts in appendix/
    sys.path.insert(0, str(ROOT))

from hw3_helpers import KERNEL_RAN, OUTPUT_ENV, WEIGHTS, file_digest, significant_lines, write_atomically  # noqa: E402
from hw3tools.notebook import module_of  # noqa: E402

# --------------------------------------------------------------------------------------------------------------
# 1. The homework's run: the trained model, its numbers and the code that trained it
# --------------------------------------------------------------------------------------------------------------


class NoHomeworkRun(Exception):
    """There is no homework run to analyse, or its weights are another run's. Jupyter shows it as its one line."""

    def _render_traceback_(self):  # IPython's hook: this line instead of a traceback
        return [f"The appendix stopped: {self}"]


def run_root() -> Path:
    """The folder whose build/ holds the homework's run: the runner's HW3_OUTPUT_DIR, else the repository."""
    return Path(os.environ.get(OUTPUT_ENV) or ROOT)


def run_device(recorded: str) -> torch.device:
    """The device the homework trained on where this machine has it, else the CPU; HW3_DEVICE chooses instead."""
    wanted = os.environ.get("HW3_DEVICE", "").strip() or recorded
    if wanted.startswith("cuda") and torch.cuda.is_available():
        return torch.device(wanted)
    if wanted == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_homework_run(root: Path | None = None) -> types.SimpleNamespace:
    """The homework's last run, from root/build/ (`run_root()` by default): its numbers (metrics.json), its trained
    model (model.pt, whose sha256 metrics.json records) and the code its kernel ran. Raises NoHomeworkRun, and
    writes nothing, when either file is missing or the weights are not that run's.

    The code is the homework notebook's cells as its kernel ran them (metrics.json's record), made a module by
    `hw3tools.notebook.module_of` (imports, functions, classes and constants; nothing run) and registered as the
    module `homework3`, so that the appendix imports the homework's own names: `from homework3 import generate`.

    Returns: code (that module), model (on `device`, in eval mode, with its `training_log`), device, metrics,
    sources (the code cells as they ran), settings (hw3tools.study.Settings), test_tokens (N, SEQ_LEN + 1),
    generators (the test set's SeqGen, sorted), prompt_tokens and samples (the sampling comparison's, samples by
    setting name), training_log, train_sequences, run_id.
    """
    from hw3tools.study import notebook_settings  # it imports this module: here, not at the top

    root = Path(root) if root is not None else run_root()
    metrics_path, weights_path = root / "build" / "metrics.json", root / WEIGHTS
    if not metrics_path.is_file() or not weights_path.is_file():
        raise NoHomeworkRun(f"there is no homework run in {root / 'build'} (metrics.json and model.pt): run "
                            "homework3.ipynb first (`make homework`, or Run All in Jupyter with hw3_helpers.py "
                            "beside it)")
    metrics_bytes, weights = metrics_path.read_bytes(), weights_path.read_bytes()
    metrics = json.loads(metrics_bytes)
    if (metrics.get("weights") or {}).get("sha256") != file_digest(weights):
        raise NoHomeworkRun(f"{weights_path} holds another run's weights than the numbers in {metrics_path}: run "
                            "homework3.ipynb again (`make homework`)")
    ran = metrics.get(KERNEL_RAN)
    if not ran:
        raise NoHomeworkRun(f"{metrics_path} holds no record of the code its run ran (it was written by an older "
                            "hw3_helpers.py): run homework3.ipynb again (`make homework`)")
    sources = [ran[count] for count in sorted(ran, key=int)]
    device = run_device(metrics.get("device", "cpu"))
    code = module_of(sources, str(device), name="homework3")
    sys.modules["homework3"] = code
    settings = notebook_settings(sources)
    import io

    saved = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    model = code.Transformer(vocab_size=settings.model_vocab_size, **settings.model)
    model.load_state_dict(saved["state_dict"])
    model.to(device).eval()
    model.training_log = saved["training_log"]
    generators = [code.SeqGen(row[:settings.initial].numpy(), row[settings.initial:].numpy(), settings.vocab_size,
                              settings.next_prob) for row in saved["generators"]]
    return types.SimpleNamespace(
        code=code, model=model, device=device, metrics=metrics, sources=sources, settings=settings,
        test_tokens=saved["test_tokens"].numpy(), generators=generators, prompt_tokens=saved["prompt_tokens"],
        samples={name: tokens.numpy() for name, tokens in saved["samples"].items()},
        training_log=saved["training_log"], train_sequences=saved["train_sequences"],
        run_id=file_digest(metrics_bytes)[:12])


def save_figure(fig, name: str) -> Path:
    """Save a figure as appendix/figures/<name> (under the runner's output folder) with the same bytes every run
    (no software or date stamp)."""
    path = run_root() / "appendix" / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def write_appendix_metrics(metrics: dict, homework_run_id: str) -> Path:
    """The appendix's numbers as build/appendix_metrics.json, beside the homework's metrics.json whose run id they
    were measured on: the tests hold the summary's sentences to them."""
    path = run_root() / "build" / "appendix_metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps({**metrics, "homework_run_id": homework_run_id}, indent=2, sort_keys=True)
                     + "\n")
    return path


# --------------------------------------------------------------------------------------------------------------
# 2. The Bayes-optimal predictor of the homework's data, and what the model holds
# --------------------------------------------------------------------------------------------------------------

def bayes_filter(sequences: np.ndarray, vocab_size: int, next_prob: float,
                 n_first: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact posterior of the generating process, token by token: next-token predictions and coefficients.

    The process (`generate_recursive` + `SeqGen`): hidden initial values and coefficients, each uniform on
    0..vocab_size-1; each new token is last + 1 with probability `next_prob`, else the dot product of the last
    `n_first` values with the coefficients, mod vocab_size; the initial values are never emitted. The posterior
    over all vocab_size^(2 n_first) hypotheses is updated token by token. A token that no hypothesis still in
    play could emit (generated text can contain one) leaves the posterior unchanged.

    Args:
        sequences: int array [num_sequences, length], the emitted tokens (a data set's x and last y together).

    Returns:
        predictive: float array [num_sequences, length, vocab_size]; row t is P(token t | tokens < t).
        coefficients: float array [num_sequences, length + 1, vocab_size^n_first]; row t is P(coefficients |
            tokens < t), the coefficient tuple (c_1, ..., c_n) at index sum c_i vocab_size^(n - i).
    """
    sequences = np.asarray(sequences)
    num_sequences, length = sequences.shape
    num_coeffs = vocab_size ** n_first
    grid = np.stack(np.meshgrid(*[np.arange(vocab_size)] * (2 * n_first), indexing="ij"), -1).reshape(-1, 2 * n_first)
    initial, coeffs = grid[:, :n_first], grid[:, n_first:]  # (H, n_first) each; hypothesis = initial * V^n + coeffs

    posterior = np.full((num_sequences, len(grid)), 1.0 / len(grid))
    state = np.broadcast_to(initial, (num_sequences, len(grid), n_first))  # last n_first values, per hypothesis
    predictive = np.empty((num_sequences, length, vocab_size))
    coefficients = np.empty((num_sequences, length + 1, num_coeffs))
    for t in range(length + 1):
        if t == n_first:
            # The hidden initial values have left the state, so from here on only the coefficients matter:
            # marginalise them out and carry on with vocab_size^n_first hypotheses instead of the square of it.
            posterior = posterior.reshape(num_sequences, -1, num_coeffs).sum(1)
            coeffs, state = coeffs[:num_coeffs], state[:, :num_coeffs]
        coefficients[:, t] = posterior.reshape(num_sequences, -1, num_coeffs).sum(1)
        if t == length:
            break
        recurrence = np.einsum("nhk,hk->nh", state, coeffs) % vocab_size  # (N, H)
        plus_one = (state[..., -1] + 1) % vocab_size  # (N, H)
        for v in range(vocab_size):  # P(next = v) = sum over hypotheses of posterior * P(v | hypothesis)
            predictive[:, t, v] = (posterior * (next_prob * (plus_one == v)
                                                + (1 - next_prob) * (recurrence == v))).sum(-1)
        observed = sequences[:, t, None]  # (N, 1)
        updated = posterior * (next_prob * (plus_one == observed) + (1 - next_prob) * (recurrence == observed))
        evidence = updated.sum(-1, keepdims=True)  # P(observed token | tokens before it)
        # A token that no remaining hypothesis can emit (a model's sample can be one) says nothing about the
        # hypotheses: keep the posterior, as the limit of the process plus vanishing noise would.
        posterior = np.where(evidence > 0, updated / np.where(evidence > 0, evidence, 1.0), posterior)
        state = np.concatenate([state[..., 1:], np.broadcast_to(observed[..., None], state[..., :1].shape)], -1)
    return predictive, coefficients


def bayes_predictive(sequences: np.ndarray, vocab_size: int, next_prob: float,
                     n_first: int) -> np.ndarray:
    """P(token t | tokens before t) for every token of every sequence: `bayes_filter`'s predictions alone."""
    return bayes_filter(sequences, vocab_size, next_prob, n_first)[0]


def branch_values(tokens: np.ndarray, coeffs: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """What each branch of the generator would emit next: the recurrence's value and last + 1.

    Args:
        tokens: int array [num_sequences, length] of consecutive tokens, at least n_first + 1 long.
        coeffs: int array [num_sequences, n_first], each sequence's coefficients.

    Returns:
        two int arrays [num_sequences, length - n_first]: the values for token t, t >= n_first.
    """
    n_first = coeffs.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:, :-1], n_first, axis=1)  # (N, L - n, n)
    return (windows * coeffs[:, None, :]).sum(-1) % vocab_size, (tokens[:, n_first - 1:-1] + 1) % vocab_size


def bits_against_bayes(model_log_probs: np.ndarray, bayes_probs: np.ndarray, targets: np.ndarray) -> dict:
    """How far the model's next-token distributions are from the exact posterior predictive, in bits, per token.

    With p the Bayes predictive and m the model's distribution at a position:
      kl            = sum_v p(v) log2 p(v)/m(v)   the bits the model wastes there (0 only where m = p)
      cross_entropy = sum_v p(v) log2 1/m(v)      the model's expected loss on the true process
      bayes_entropy = sum_v p(v) log2 1/p(v)      the floor: the bits no predictor can save
    so cross_entropy - bayes_entropy = kl exactly. Also the model's entropy (its confidence) and the loss each
    gave the token that came, -log2 m(y) and -log2 p(y).

    Args:
        model_log_probs: float [N, T, V], natural-log probabilities (log_softmax of the logits).
        bayes_probs: float [N, T, V], the Bayes predictive of the same tokens (bayes_filter's, shifted to match).
        targets: int [N, T], the tokens that came.

    Returns:
        dict of float arrays [N, T]: kl, cross_entropy, bayes_entropy, model_entropy, model_loss, bayes_loss.
    """
    log_m = np.asarray(model_log_probs, dtype=np.float64) / np.log(2)  # log2 m
    p = np.asarray(bayes_probs, dtype=np.float64)
    log_p = np.log2(np.where(p > 0, p, 1.0))  # p log p = 0 where p = 0
    targets = np.asarray(targets)[..., None]
    bayes_entropy = -(p * log_p).sum(-1)
    cross_entropy = -(p * log_m).sum(-1)
    with np.errstate(divide="ignore"):  # a token the process cannot emit costs the Bayes predictor infinite bits
        bayes_loss = -np.log2(np.take_along_axis(p, targets, -1)[..., 0])
    return {
        "kl": (p * (log_p - log_m)).sum(-1),
        "cross_entropy": cross_entropy,
        "bayes_entropy": bayes_entropy,
        "model_entropy": -(np.exp2(log_m) * log_m).sum(-1),
        "model_loss": -np.take_along_axis(log_m, targets, -1)[..., 0],
        "bayes_loss": bayes_loss,
    }


def token_branches(tokens: np.ndarray, coeffs: np.ndarray, vocab_size: int) -> np.ndarray:
    """Which branch of the generator can have emitted each token: 0 the recurrence only, 1 "+1" only, 2 both
    (they give the same value), 3 neither (not the generator's): [num_sequences, seq_len - coeffs.shape[1]]."""
    recurrence, plus_one = branch_values(tokens, coeffs, vocab_size)
    following = tokens[:, coeffs.shape[1]:]
    by_recurrence, by_plus_one = following == recurrence, following == plus_one
    return np.select([by_recurrence & by_plus_one, by_recurrence, by_plus_one], [2, 0, 1], default=3)


def residual_stream(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The residual stream after the embedding and after each block, for every token.

    Args:
        model: the notebook's Transformer (its `embedding` and `layers`), on any device.
        tokens: int tensor [num_sequences, seq_len], on any device.

    Returns:
        float tensor [n_layers + 1, num_sequences, seq_len, hidden_dim] on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    captured = []
    modules = [model.embedding, *model.layers]
    hooks = [module.register_forward_hook(lambda _module, _args, out: captured.append(out)) for module in modules]
    chunks = []
    try:
        with torch.no_grad():  # no autograd graph kept for the chunks
            for start in range(0, len(tokens), batch_size):
                captured.clear()
                model(tokens[start:start + batch_size].to(device))
                chunks.append(torch.stack(captured).cpu())  # (n_layers + 1, batch, T, hidden)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(chunks, dim=1)


def _attention_weights(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    model.eval()
    device = next(model.parameters()).device
    inputs = []
    hooks = [layer.attention.register_forward_hook(lambda _module, args, _out: inputs.append(args[0]))
             for layer in model.layers]
    try:
        model(tokens.to(device))
    finally:
        for hook in hooks:
            hook.remove()
    maps = []
    for layer, x in zip(model.layers, inputs, strict=True):
        attention = layer.attention
        batch, seq_len, _ = x.shape
        num_heads, head_dim = attention.num_heads, attention.head_dim
        num_kv_heads = getattr(attention, "num_kv_heads", num_heads)  # sliding-window blocks have one per head
        q = attention.q_proj(x).view(batch, seq_len, num_heads, head_dim).transpose(1, 2)  # (B, H, T, D)
        k = attention.k_proj(x).view(batch, seq_len, num_kv_heads, head_dim).transpose(1, 2)  # (B, KV, T, D)
        q, k = attention.rope(q), attention.rope(k).repeat_interleave(num_heads // num_kv_heads, dim=1)
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * (attention.scale * attention.key_weights).view(1, -1, 1, 1)
        distance = (torch.arange(seq_len, device=x.device).view(-1, 1)
                    - torch.arange(seq_len, device=x.device).view(1, -1))  # (T, T): query - key position
        allowed = distance >= 0
        if hasattr(attention, "window_size"):
            allowed &= distance <= attention.window_size
        maps.append(scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1).cpu())
    return maps


def attention_weights(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention weights, recomputed from the layer's input the way its formula defines them.

    softmax over keys of (scale * w_h * rope(q_h)) . rope(k_g(h)), where head h reads KV head h // group, masked
    causally, and to the window on sliding-window blocks (0 <= query - key <= window_size). Written apart from
    the graded code (KV heads repeated, not grouped), so the tests can hold one against the other.

    Returns:
        per layer, float tensor [num_sequences, num_heads, seq_len, seq_len] on the CPU (rows sum to 1).
    """
    with torch.no_grad():
        return _attention_weights(model, tokens)


def offset_profile(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention weight by how far back the key is: [..., num_heads, T, T] -> [num_heads, T].

    Entry (h, d) averages head h's weight on the key d positions before the query, over every query that has
    such a key (positions d..T-1) and over all leading dimensions.
    """
    seq_len = weights.shape[-1]
    heads = weights.reshape(-1, *weights.shape[-3:])  # (N, H, T, T)
    return torch.stack([heads.diagonal(offset=-d, dim1=-2, dim2=-1).mean(dim=(0, -1)) for d in range(seq_len)], -1)


def attention_by_offset(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 250) -> np.ndarray:
    """`offset_profile` of every layer over all `tokens`: float array [n_layers, num_heads, seq_len]."""
    total = None
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size]
        profiles = torch.stack([offset_profile(w) for w in attention_weights(model, batch)]) * len(batch)
        total = profiles if total is None else total + profiles
    return (total / len(tokens)).numpy()


def ridge_probe(train_features: torch.Tensor, test_features: torch.Tensor, targets: dict,
                ridge: float = 1e-3) -> dict[str, np.ndarray]:
    """Linear probes, many at once: for each problem and target, least squares from the features (and a bias) to
    one-hot labels with a ridge penalty, in closed form (float64, on the CPU); the predicted class is the largest
    output. All targets share one solve, since least squares fits each output column on its own.

    Args:
        train_features: float [num_problems, num_train, dim]; test_features: [num_problems, num_test, dim].
        targets: name -> (train_labels [num_train], test_labels [num_test], num_classes), labels in
            0..num_classes-1 and shared by the problems.
        ridge: the penalty, relative to the mean feature energy (so it does not depend on the features' scale).

    Returns:
        name -> float array [num_problems]: each probe's accuracy on the test set.
    """
    if not 0 < ridge < float("inf"):
        raise ValueError(f"ridge must be a finite number > 0, got {ridge}")
    for name, (train_labels, test_labels, num_classes) in targets.items():
        for which, labels in (("train", train_labels), ("test", test_labels)):
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"{which} labels of target {name!r} must lie in 0..{num_classes - 1} "
                                 f"(num_classes={num_classes})")

    def with_bias(features):  # float64 on the CPU, whatever device the features come from (MPS has no float64)
        features = features.to("cpu", torch.float64)
        return torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)  # (P, N, dim + 1)

    x, x_test = with_bias(train_features), with_bias(test_features)
    one_hots = torch.cat([torch.nn.functional.one_hot(labels.cpu().long(), classes)
                          for labels, _, classes in targets.values()], dim=-1).to(torch.float64)  # (N, sum C)
    gram = x.transpose(1, 2) @ x  # (P, dim + 1, dim + 1)
    identity = torch.eye(gram.shape[-1], dtype=torch.float64, device=gram.device)
    penalty = ridge * gram.diagonal(dim1=1, dim2=2).mean(-1).view(-1, 1, 1) * identity
    outputs = x_test @ torch.linalg.solve(gram + penalty, x.transpose(1, 2) @ one_hots)  # (P, N_test, sum C)
    accuracy, start = {}, 0
    for name, (_, test_labels, classes) in targets.items():
        predicted = outputs[..., start:start + classes].argmax(-1)  # (P, N_test)
        accuracy[name] = (predicted == test_labels.cpu().view(1, -1)).to(torch.float64).mean(-1).numpy()
        start += classes
    return accuracy


# --------------------------------------------------------------------------------------------------------------
# 3. The committed study (`make study`): reading and drawing it
# --------------------------------------------------------------------------------------------------------------

STUDY_SUMMARY = HERE / "study" / "summary.json"  # written by `make study`


def load_study(path: Path = STUDY_SUMMARY) -> dict | None:
    """The study's summary ({"configs": [...]}, see hw3tools/study.py), or None with a note where it is missing."""
    path = Path(path)
    if not path.is_file():
        print(f"{path} is not here: this section draws the committed results of `make study`; it is skipped.")
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def study_configs(summary: dict, group: str) -> list[dict]:
    return [config for config in summary["configs"] if config["group"] == group]


def format_spread(stat: dict | None, digits: int = 3, signed: bool = False, seeds: bool = True) -> str:
    """'0.851 ± 0.002 (n=3)': mean and sample standard deviation over the seeds ('0.874 (1 seed)' has no spread);
    without `seeds`, '0.851 ± 0.002' and '0.874'. 'not measured' where there is no statistic."""
    if not stat:
        return "not measured"
    mean = f"{stat['mean'] + 0.0:{'+' if signed else ''}.{digits}f}".replace("-", "−")
    if float(mean.replace("−", "-")) == 0:  # -0.0004 shows as 0.000, never as −0.000
        mean = f"{0.0:{'+' if signed else ''}.{digits}f}"
    count = len(stat["per_seed"])
    if count < 2:
        return f"{mean} (1 seed)" if seeds else mean
    return f"{mean} ± {stat['std']:.{digits}f}" + (f" (n={count})" if seeds else "")


NON_BREAKING_HYPHEN = "\u2011"  # "top-2" stays on one line in a narrow table cell


def study_table(summary: dict) -> str:
    """The study's configurations as a Markdown table (it fits any width: cells wrap at spaces, and no number has
    one): per configuration its parameters (in thousands), training steps, number of seeds, and the mean ± the
    sample standard deviation over those seeds of its test accuracy, its difference from the prescribed dense model
    on the same seeds, its gap to the Bayes ceiling and its KL from the Bayes predictor in bits per token."""
    lines = ["| configuration | parameters | steps | seeds | test accuracy | vs dense, same seeds | gap to ceiling "
             "| KL, bits per token |", "|:--|--:|--:|--:|:--|:--|:--|:--|"]
    group = None
    for config in summary["configs"]:
        if config["group"] != group:
            group = config["group"]
            lines.append(f"| ***{group}*** | | | | | | | |")
        baseline = (config["group"], config["name"]) == ("variants", "dense (prescribed)")
        lines.append(" | ".join((
            f"| {config['name'].replace('-', NON_BREAKING_HYPHEN)}", f"{config['parameters'] / 1000:.0f}k",
            f"{config['steps']}",
            f"{len(config['test_accuracy']['per_seed'])}", format_spread(config["test_accuracy"], seeds=False),
            "baseline" if baseline else
            format_spread(config.get("difference_from_prescribed"), signed=True, seeds=False),
            format_spread(config.get("gap_to_ceiling"), seeds=False),
            format_spread(config.get("kl_bits"), seeds=False))) + " |")
    return "\n".join(lines) + "\n\n± is the sample standard deviation over the seeds."


def fit_floor_power_law(budget, gap) -> dict:
    """gap = scale * budget^-exponent + floor, fitted by least squares on the gaps: for each floor on a fine grid
    below the smallest gap, a line in log-log space gives scale and exponent; the floor with the smallest error
    wins. A floor lets the curve level off, as a gap that training cannot close does.

    Returns {"scale", "exponent", "floor", "rmse"}.
    """
    budget, gap = np.asarray(budget, dtype=float), np.asarray(gap, dtype=float)
    if len(budget) < 4 or (gap <= 0).any():  # 3 points would pass through the curve exactly and test nothing
        raise ValueError(f"need at least 4 budgets (more than the fit's 3 parameters) with positive gaps, got "
                         f"{len(budget)} and min {gap.min()}")
    best = None
    for floor in np.linspace(0.0, gap.min(), 2001)[:-1]:
        slope, intercept = np.polyfit(np.log(budget), np.log(gap - floor), 1)
        predicted = np.exp(intercept) * budget ** slope + floor
        rmse = float(np.sqrt(np.mean((predicted - gap) ** 2)))
        if best is None or rmse < best["rmse"]:
            best = {"scale": float(np.exp(intercept)), "exponent": float(-slope), "floor": float(floor), "rmse": rmse}
    return best


def budget_for_gap(fit: dict, target: float) -> float:
    """The budget at which the fitted gap reaches `target`; infinity when the floor is at or above it."""
    if target <= fit["floor"]:
        return float("inf")
    return float((fit["scale"] / (target - fit["floor"])) ** (1 / fit["exponent"]))


def data_budgets(summary: dict, key: str) -> tuple[list[dict], dict | None]:
    """The prescribed model and the data lever's budgets at the prescribed epochs that measured `key` (sorted by
    sequences), and the equal-compute run (fresh sequences, one epoch) if it did."""
    baseline = [c for c in study_configs(summary, "variants") if c["name"] == "dense (prescribed)"]
    data = [c for c in study_configs(summary, "data") if c.get(key) is not None]
    epochs = baseline[0]["epochs"] if baseline else None
    same_epochs = sorted([c for c in baseline + data if c["epochs"] == epochs and c.get(key) is not None],
                         key=lambda c: c["train_sequences"])
    fresh = next((c for c in data if c["epochs"] == 1), None)
    return same_epochs, fresh


def width_fits(summary: dict, key: str) -> list[dict]:
    """The data fit of the prescribed width, moved to each width the study trained: the floor shifts by the width's
    gap difference from the prescribed model on the same seeds (at the prescribed budget), while the data term
    (scale, exponent) is assumed the same at every width. The test run of a predicted budget checks that assumption.

    Returns [] until `key` has 4 data budgets, else one row per width: name, model, parameters, epochs, the shift
    (mean ± s.d. over seeds) and the moved fit, the prescribed width first."""
    budgets, _ = data_budgets(summary, key)
    if len(budgets) < 4:
        return []
    fit = fit_floor_power_law([c["train_sequences"] for c in budgets], [c[key]["mean"] for c in budgets])
    rows = []
    for config in [budgets[0], *study_configs(summary, "capacity")]:
        shift = config["gap_difference_from_prescribed"][key]
        if shift is not None:
            rows.append({"name": config["name"], "model": config["model"], "parameters": config["parameters"],
                         "epochs": config["epochs"], "shift": shift,
                         "fit": {**fit, "floor": fit["floor"] + shift["mean"]}})
    return rows


def fitted_gap(fit: dict, budget: float) -> float:
    return fit["scale"] * budget ** -fit["exponent"] + fit["floor"]


def prediction_tests(summary: dict, key: str) -> list[dict]:
    """Each run of the study's "prediction" group against what its width's fit (width_fits) predicts at its budget.
    The prediction holds when the measured mean lies within twice the combined standard error of the width's shift
    and of the test run; the error of the data fit itself is not known (4 budgets for 3 parameters) and not in it.
    Also what the width gains over the prescribed width's fit at the prescribed budget and at the test's: the move
    assumes the two are equal."""
    fits = width_fits(summary, key)
    rows = {tuple(sorted(row["model"].items())): row for row in fits}
    tests = []
    for config in study_configs(summary, "prediction"):
        row = rows.get(tuple(sorted(config["model"].items())))
        if row is None or config.get(key) is None:
            continue
        measured = config[key]
        margin = 2 * np.sqrt(row["shift"]["std"] ** 2 / len(row["shift"]["per_seed"])
                             + measured["std"] ** 2 / len(measured["per_seed"]))
        predicted = fitted_gap(row["fit"], config["train_sequences"])
        tests.append({"name": config["name"], "width": row["name"], "train_sequences": config["train_sequences"],
                      "predicted": predicted, "measured": measured, "margin": float(margin),
                      "held": bool(abs(measured["mean"] - predicted) <= margin),
                      # what the width gains over the prescribed width's fit, at the prescribed budget and the test's
                      "width_gain_at_prescribed": -row["shift"]["mean"],
                      "width_gain_at_budget": fitted_gap(fits[0]["fit"], config["train_sequences"]) - measured["mean"]})
    return tests


def plot_budget_fit(summary: dict, targets: dict):
    """The gap to the ceiling against the number of training sequences (prescribed epochs), for accuracy and bits,
    with the floor-power-law fit, its target, the equal-compute run and, where the study ran one, the test of a
    predicted budget at a larger width. `targets`: key -> gap aimed at."""
    import matplotlib.pyplot as plt

    fits = {key: width_fits(summary, key) for key in targets}  # one fit per gap, moved to each width
    keys = [key for key in targets if fits[key]]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(5.6 * max(len(keys), 1), 6.4), squeeze=False,
                             layout="constrained")
    labels = {"gap_to_ceiling": "gap to the ceiling, accuracy", "kl_bits": "KL(Bayes ‖ model), bits per token"}
    for ax, key in zip(axes[0], keys, strict=False):
        budgets, fresh = data_budgets(summary, key)
        n = np.array([c["train_sequences"] for c in budgets], dtype=float)
        fit = fits[key][0]["fit"]  # the prescribed width
        for c in budgets:
            seeds = c[key]["per_seed"]
            ax.plot([c["train_sequences"]] * len(seeds), seeds, "o", color="tab:blue", alpha=0.6)
        grid = np.geomspace(n.min(), n.max() * 64, 200)
        ax.plot(grid, fitted_gap(fit, grid), color="tab:blue",
                label=f"fit: {fit['scale']:.3g}·N^-{fit['exponent']:.2f} + {fit['floor']:.4f}")
        ax.axhline(fit["floor"], ls=":", color="tab:blue", lw=1, label="the fit's floor")
        ax.axhline(targets[key], ls="--", color="black", lw=1, label=f"target {targets[key]:g}")
        if fresh is not None:
            ax.plot([fresh["train_sequences"]] * len(fresh[key]["per_seed"]), fresh[key]["per_seed"], "s",
                    color="tab:red", label=f"the prescribed compute ({fresh['steps']} steps) on fresh sequences")
        tests = prediction_tests(summary, key)
        for test in tests[:1]:  # the width that was tested: its moved fit, its prediction and the test run
            row = next(r for r in fits[key] if r["name"] == test["width"])
            wider = next(c for c in summary["configs"] if c["name"] == test["width"])  # at the prescribed budget
            tested = next(c for c in study_configs(summary, "prediction") if c["name"] == test["name"])
            ax.plot(grid, fitted_gap(row["fit"], grid), "--", color="tab:orange",
                    label=f"{test['width']}: the fit moved by its difference at {budgets[0]['train_sequences']}")
            spread = 2 * row["shift"]["std"] / len(row["shift"]["per_seed"]) ** 0.5
            ax.fill_between(grid, fitted_gap(row["fit"], grid) - spread, fitted_gap(row["fit"], grid) + spread,
                            color="tab:orange", alpha=0.12, label="± twice the standard error of that difference")
            ax.plot([wider["train_sequences"]] * len(wider[key]["per_seed"]), wider[key]["per_seed"], "o",
                    color="tab:orange", alpha=0.6)
            needed = budget_for_gap(row["fit"], targets[key])
            if np.isfinite(needed) and needed <= grid.max():
                ax.plot(needed, targets[key], "*", ms=12, color="tab:orange",
                        label=f"predicted to reach the target: {needed:,.0f}")
            ax.plot([tested["train_sequences"]] * len(tested[key]["per_seed"]), tested[key]["per_seed"], "D",
                    color="tab:green", label=f"test run, {test['name']}: predicted {test['predicted']:.4f}")
        ax.set(xscale="log", xlabel=f"training sequences ({budgets[0]['epochs']} epochs each; seeds as dots)",
               ylabel=labels.get(key, key),
               title=labels.get(key, key), ylim=(0, None))
        ax.grid(True, alpha=0.3, which="both")
        # below the axes, where it hides no data
        ax.legend(fontsize=9, numpoints=1, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    return fig


def plot_study_variants(summary: dict):
    """Each variant's test accuracy, its difference from the prescribed model trained on the same seed, and its
    KL from the Bayes predictor in bits per token: every seed a dot, mean ± standard deviation a bar."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    variants = study_configs(summary, "variants")
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.5 * len(variants) + 2.0), sharey=True, layout="constrained")
    panels = ((axes[0], "test_accuracy", "test accuracy", 6),
              (axes[1], "difference_from_prescribed", "difference from the dense model,\nsame seed", 4),
              (axes[2], "kl_bits", "KL(Bayes ‖ model),\nbits per token", 6))  # the last: how many ticks at most
    for ax, key, label, ticks in panels:
        for row, config in enumerate(variants):
            stat = config[key]
            if stat is None:  # not measured on every seed yet
                continue
            ax.errorbar(stat["mean"], row, xerr=stat["std"], fmt="s", color="black", capsize=4, zorder=3)
            ax.plot(stat["per_seed"], [row] * len(stat["per_seed"]), "o", alpha=0.5, color="tab:blue")
        ax.set(xlabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(ticks, steps=[1, 2, 3, 5, 10]))  # labels that do not run together
        ax.margins(x=0.08)
        ax.grid(True, alpha=0.3)
    axes[1].axvline(0, color="gray", lw=1)
    axes[0].set_yticks(range(len(variants)), [c["name"] for c in variants])
    axes[0].invert_yaxis()
    fig.suptitle(f"Variants at the prescribed budget ({variants[0]['epochs']} epochs, "
                 f"{variants[0]['train_sequences']} sequences): seeds as dots, mean ± s.d. as bars")
    return fig


def plot_study_levers(summary: dict):
    """Test accuracy against training steps for each lever (epochs, capacity, data), the ceiling drawn in; and the
    KL each configuration ends at against its training cost (parameters × steps), in a panel below them: colour
    for the lever, marker for the configuration, and a key beside the panel naming each with its mean KL."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    baseline = next(c for c in study_configs(summary, "variants") if c["name"] == "dense (prescribed)")
    ceiling = np.mean([c["bayes_accuracy"]["mean"] for c in summary["configs"]])
    levers = [group for group in ("epochs", "capacity", "data") if study_configs(summary, group)]
    fig = plt.figure(figsize=(12, 9.2))
    grid = fig.add_gridspec(2, len(levers))
    bottom = grid[1, :].subgridspec(1, 2, width_ratios=[1.9, 1], wspace=0.03)  # the KL panel and its key
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(levers))] + [fig.add_subplot(bottom[0])]
    for ax, lever in zip(axes, levers, strict=False):
        for config in [baseline, *study_configs(summary, lever)]:
            steps = config["steps_per_epoch"] * np.arange(1, config["epochs"] + 1)
            mean, std = np.array(config["epoch_test_accuracy_mean"]), np.array(config["epoch_test_accuracy_std"])
            label = f"{config['name']}: {format_spread(config['test_accuracy'])}"
            line, = ax.plot(steps, mean, "o-", ms=2.5, label=label)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.axhline(ceiling, ls="--", color="black", label=f"Bayes ceiling {ceiling:.3f} (study's test sets)")
        ax.set(title=f"lever: {lever}", xlabel="training steps (one batch each)", xscale="log", ylim=(0.6, 0.9),
               ylabel="test accuracy, mean ± s.d.")
        low, high = ax.get_xlim()  # plain numbers at 1-2-5 steps, not 2×10^2 3×10^2 running together
        ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000) if low <= t <= high]
        if len(ticks) > 5:  # too many to read side by side in a third of the figure
            ticks = [t for t in (10, 30, 100, 300, 1000, 3000, 10000, 30000) if low <= t <= high]
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below, hiding no curve

    bits = axes[len(levers)]  # where every configuration ends, in bits: the mean over seeds with its s.d.
    colors = {"variants": "black", "epochs": "tab:purple", "capacity": "tab:orange", "data": "tab:blue",
              "prediction": "tab:green"}
    markers = "osD^v"  # colour says the lever, marker the configuration within it; the key names each pair
    costs, tops = [], []
    for lever, color in colors.items():
        configs = [c for c in study_configs(summary, lever) if c.get("kl_bits") is not None
                   and (lever != "variants" or c is baseline)]
        for config, marker in zip(configs, markers, strict=False):
            cost, stat = config["steps"] * config["parameters"], config["kl_bits"]
            name = config["name"] if lever == "variants" else f"{lever}: {config['name']}"
            bits.errorbar(cost, stat["mean"], yerr=stat["std"], fmt=marker, ms=7, color=color, capsize=3,
                          label=f"{name} ({stat['mean']:.3f})")
            costs.append(cost)
            tops.append(stat["mean"] + stat["std"])
    bits.set(title="KL from the Bayes predictor after training", xscale="log",
             xlim=(min(costs) / 1.3, max(costs) * 1.3), ylim=(0, max(tops) * 1.1),
             xlabel="training cost: parameters × steps", ylabel="KL(Bayes ‖ model), bits per token")
    bits.grid(True, alpha=0.3, which="both")
    key = fig.add_subplot(bottom[1])  # beside the panel, covering no point
    key.axis("off")
    key.legend(*bits.get_legend_handles_labels(), fontsize=9, title="configuration (mean KL, bits)",
               title_fontsize=9, loc="center left", borderaxespad=0)
    fig.tight_layout(h_pad=1.5)
    return fig


def study_figures(summary: dict) -> dict:
    """The study's figures by file name: the variants, and the levers once the study has run any."""
    figures = {"study_variants.png": plot_study_variants(summary)}
    if any(study_configs(summary, lever) for lever in ("epochs", "capacity", "data")):
        figures["study_levers.png"] = plot_study_levers(summary)
    return figures


# Which code trained the study's runs. Each run records the fingerprint of the notebook's code that it trained with
# (`training_fingerprint`); `make study` runs again every run that other code trained, and the appendix says how
# many of the study's runs that is (`study_provenance`). The fingerprint covers the handed-out code cells that a run
# of the study executes, TODO bodies included: the imports, the model's classes (SwiGLU, RoPE, attention, sliding
# window, MoE, block, Transformer), the data code, the constants (the `#[do not modify]` cells), `eval_acc` and
# `train`, the training cell (the Transformer's arguments, the optimizer and its settings, the epochs) and
# `calc_per_token_acc`, whose per-position accuracy each run records. Left out, as nothing a run measures depends on
# them: the embedded tests (the cells that start `##### TESTS START #####`), which only define test functions, and
# the generation and sampling cells (`generate`, `get_dist_after_with_temp_and_topp`), which the study never calls.
# Our own cells define none of the names that these cells define or use.
TRAINING_CELLS = {  # what it is -> the names it binds at its top level, which find it among the cells
    "the imports": ("Callable", "F", "Optional", "torch"),
    "SwiGLUFeedForward": ("SwiGLUFeedForward",),
    "RotaryPositionalEmbedding": ("RotaryPositionalEmbedding",),
    "calculate_attention": ("GroupedQueryAttention", "calculate_attention"),
    "calculate_sliding_attention": ("SWAttention", "calculate_sliding_attention"),
    "Router": ("MixtureOfExperts", "Router"),
    "TransformerBlock": ("TransformerBlock",),
    "Transformer": ("Transformer",),
    "the data code": ("SeqGen", "generate_dataset", "generate_recursive", "np"),
    "example_generator": ("example_generator",),
    "the constants": ("BATCH_SIZE", "DEVICE", "INITIAL", "NEXT_PROB", "PERM_EXAMPLE_GENERATOR", "SEQ_LEN",
                       "TEST_DATASET", "TEST_LOADER", "TRAIN_DATASET", "TRAIN_LOADER", "VOCAB_SIZE", "_",
                       "generators"),
    "train": ("eval_acc", "eval_fn", "functools", "tqdm", "train"),
    "the training cell": ("model", "optimizer"),
    "calc_per_token_acc": ("calc_per_token_acc", "per_token_acc", "plt"),
}


def _parsed(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def bound_names(tree: ast.Module) -> tuple[str, ...]:
    """The names that a cell's top-level statements bind (definitions, imports, assignments), sorted."""
    names = set()

    def bind(target):
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                bind(element)
        elif isinstance(target, ast.Starred):
            bind(target.value)

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            bind(node.target)
    return tuple(sorted(names))


@functools.lru_cache(maxsize=1024)
def _names_bound_by(source: str | None) -> tuple[str, ...] | None:
    """bound_names of a cell's source; None for an empty or unparsable one (kept: the same cells are read often)."""
    tree = _parsed(source) if source and source.strip() else None
    return None if tree is None else bound_names(tree)


def training_cells(code_sources: list[str]) -> dict[str, str | None]:
    """Per cell of TRAINING_CELLS, its source among `code_sources` (a notebook's code cells in order, or a kernel's
    `In`: the sources it executed, in the order it ran them): the last one that binds exactly the names the
    handed-out cell binds, whatever its text (a new handout may change a cell's text, not what it defines); None if
    no source does."""
    by_names = {names: name for name, names in TRAINING_CELLS.items()}
    found = dict.fromkeys(TRAINING_CELLS)
    for source in code_sources:
        name = by_names.get(_names_bound_by(source))
        if name is not None:
            found[name] = source
    return found


def _is_string_statement(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def tree_shape(node):
    """A syntax tree as plain JSON values that every Python from 3.11 on gives alike (ast.dump does not): each node
    its type's name and its fields in order, without positions, skipping the fields whose value is None or an empty
    list (the fields newer versions add, such as `type_params` in 3.12, are empty where older ones lack them), and
    bare string statements (docstrings) dropped. Comments and line breaks are not in the tree."""
    if isinstance(node, ast.AST):
        shape = [type(node).__name__]
        for field in node._fields:
            value = getattr(node, field, None)
            if isinstance(value, list):
                value = [item for item in value if not _is_string_statement(item)]
            if value is None or value == []:
                continue
            shape.append([field, tree_shape(value)])
        return shape
    if isinstance(node, list):
        return [tree_shape(item) for item in node]
    return [type(node).__name__, repr(node)]  # a constant, an identifier, a flag such as ImportFrom's level


@functools.lru_cache(maxsize=256)
def _cell_shape_json(source: str | None) -> str:
    """One cell's part of the training fingerprint, as compact JSON (kept: the study's staleness checks fingerprint
    the same cells many times)."""
    tree = None if source is None else _parsed(source)
    shape = ("missing" if source is None else
             tree_shape(tree) if tree is not None else ["unparsable", significant_lines(source)])
    return json.dumps(shape, separators=(",", ":"))


def training_fingerprint(code_sources: list[str]) -> str:
    """The sha256 of what a run of the study trains with: the syntax trees (`tree_shape`) of the cells of
    TRAINING_CELLS as `training_cells` finds them in `code_sources`, in TRAINING_CELLS's order ("missing" for one
    not found). The same from the notebook file (its code cells) and in its kernel (`In`); comments, line breaks and
    docstrings aside, any change to these cells changes it."""
    shapes = ",".join(_cell_shape_json(source) for source in training_cells(code_sources).values())
    return hashlib.sha256(f"[{shapes}]".encode()).hexdigest()  # json.dumps of the list of shapes, compact


def stale_runs(summary: dict, current: str) -> list[tuple[str, str, int]]:
    """(group, configuration, seed) of every run of the study whose recorded training fingerprint is not `current`
    (a run recorded without one counts as stale)."""
    return [(config["group"], config["name"], seed) for config in summary["configs"]
            for seed, recorded in zip(config["seeds"],
                                      config.get("training_fingerprints") or [None] * len(config["seeds"]), strict=True)
            if recorded != current]


def study_provenance(summary: dict, code_sources: list[str]) -> str:
    """One line: whether the study's runs were trained by the code in `code_sources` (in the appendix: what the
    homework's kernel ran, `load_homework_run().sources`)."""
    total = sum(len(config["seeds"]) for config in summary["configs"])
    stale = stale_runs(summary, training_fingerprint(code_sources))
    if not stale:
        return f"all {total} runs of the study were trained by the homework's code"
    missing = [name for name, source in training_cells(code_sources).items() if source is None]
    if len(missing) == len(TRAINING_CELLS):
        return f"the study's {total} runs are not compared with the homework's code: the homework's run ran none of it"
    return (f"{len(stale)} of {total} runs were trained by other code than the homework's: `make study` runs them "
            f"again" + (f" (the homework's run did not run the cells of {', '.join(missing)})" if missing else ""))


# --------------------------------------------------------------------------------------------------------------
# 4. The summary's claims: each sentence of the appendix's summary that depends on the run or on the study
# --------------------------------------------------------------------------------------------------------------

def _config(a, name: str) -> dict:
    return next(config for config in a.study["configs"] if config["name"] == name)


def _beyond_twice_the_standard_error(stat: dict) -> bool:
    return abs(stat["mean"]) > 2 * stat["std"] / len(stat["per_seed"]) ** 0.5


def _kl_gain(a, name: str) -> float:
    """Positive: fewer bits lost than the prescribed model on the same seeds."""
    return -_config(a, name)["gap_difference_from_prescribed"]["kl_bits"]["mean"]


def _gap_by_position(a) -> np.ndarray:
    return np.array(a.appendix["bayes_per_position_accuracy"]) - np.array(a.homework["per_position_accuracy"])


def _gap_share_before_the_plateau(a) -> float:
    gap, levels_off = _gap_by_position(a), a.homework["levels_off_at"]
    return float(gap[:levels_off].sum() / gap.sum())


def _under_confident_late(a) -> bool:
    bits = a.appendix["bits"]
    return float(np.mean(bits["model_entropy_per_position"][10:])) > float(np.mean(
        bits["bayes_entropy_per_position"][10:]))


def _moe_beats_dense_on_every_seed(a) -> bool:
    beats = {c["name"] for c in study_configs(a.study, "variants")
             if c["name"] != "dense (prescribed)" and min(c["difference_from_prescribed"]["per_seed"]) > 0}
    return beats == {"MoE, 4 experts top-2", "all three"}


DATA_BUDGET_NAMES = ("dense (prescribed)", "20000 sequences", "40000 sequences", "80000 sequences")
SUMMARY_CLAIMS = {  # a fragment of a sentence of the summary -> its test on `a`: appendix, homework and study
    "comes within a few points of the exact Bayes-optimal accuracy":
        lambda a: 0 < a.appendix["bayes_optimal_accuracy"] - a.homework["final_test_accuracy"] < 0.05,
    "A large share of the gap lies before the homework's curve levels off":
        lambda a: _gap_share_before_the_plateau(a) >= 0.3,
    "after that it stays a little below the ceiling":
        lambda a: 0 < _gap_by_position(a)[a.homework["levels_off_at"]:].mean() < 0.05,
    "In bits per token it is under-confident there": _under_confident_late,
    "it spreads a few percent of its probability over tokens the generator cannot emit":
        lambda a: 0.01 <= a.appendix["bits"]["outside_mass_after_position_9"] <= 0.1
        and a.appendix["bits"]["outside_mass_after_position_9"]
        > 3 * a.appendix["bits"]["bayes_outside_mass_after_position_9"],
    "most attention lies within 8 positions": lambda a: np.mean(a.appendix["attention_beyond_offset_8"]) < 0.5,
    "A linear probe does not find the coefficient pair": lambda a: np.max(a.appendix["probe"]["pair"]) < 0.5,
    "the data pin the pair down after a few tokens":
        lambda a: max(a.appendix["probe"]["bayes_map_accuracy"][:11]) >= 0.9,
    "gives `generate`'s tokens exactly": lambda a: a.appendix["kv_cache"]["identical_to_generate"] is True,
    "is faster at the longest continuation timed": lambda a: a.appendix["kv_cache"]["speedups"][-1] > 1,
    "the banded sliding window gives the graded one's output": lambda a: a.appendix["banded_largest_difference"] < 1e-4,
    "only the mixture of experts, alone or in the combination of all three, beats the prescribed model on every seed":
        _moe_beats_dense_on_every_seed,
    "by about half a point in accuracy and about 0.02 bits per token": lambda a: all(
        0.004 < _config(a, name)["difference_from_prescribed"]["mean"] < 0.007 and 0.015 < _kl_gain(a, name) < 0.03
        and _beyond_twice_the_standard_error(_config(a, name)["gap_difference_from_prescribed"]["kl_bits"])
        for name in ("MoE, 4 experts top-2", "all three")),
    "It also carries almost three times the parameters":
        lambda a: 2.5 < _config(a, "MoE, 4 experts top-2")["parameters"] / _config(a, "dense (prescribed)")[
            "parameters"] < 3,
    "the width lever gains about as much from extra parameters alone": lambda a: all(
        abs(_config(a, name)["difference_from_prescribed"]["mean"]
            - _config(a, "MoE, 4 experts top-2")["difference_from_prescribed"]["mean"]) < 0.003
        for name in ("width 96", "width 128")),
    "GQA with 2 KV heads and the 8-token window stay within the spread over seeds in accuracy": lambda a: not any(
        _beyond_twice_the_standard_error(_config(a, name)["difference_from_prescribed"])
        for name in ("GQA, 2 KV heads", "sliding window 8, alternating")),
    "In bits GQA stays within it too": lambda a: not _beyond_twice_the_standard_error(
        _config(a, "GQA, 2 KV heads")["gap_difference_from_prescribed"]["kl_bits"]),
    "while the window loses a little (under 0.01 bits per token), just beyond twice its standard error":
        lambda a: 0 < (window := _config(a, "sliding window 8, alternating")[
            "gap_difference_from_prescribed"]["kl_bits"])["mean"] < 0.01 and _beyond_twice_the_standard_error(window),
    "data is the lever that closes the gap":
        lambda a: max(_kl_gain(a, n) for n in ("width 96", "width 128", "16 epochs", "32 epochs"))
        < _kl_gain(a, "40000 sequences"),
    "raise accuracy and lower the KL at every budget tried": lambda a: (
        [_config(a, n)["kl_bits"]["mean"] for n in DATA_BUDGET_NAMES]
        == sorted((_config(a, n)["kl_bits"]["mean"] for n in DATA_BUDGET_NAMES), reverse=True)
        and [_config(a, n)["test_accuracy"]["mean"] for n in DATA_BUDGET_NAMES]
        == sorted(_config(a, n)["test_accuracy"]["mean"] for n in DATA_BUDGET_NAMES)),
    "to under half of the prescribed model's at 40000": lambda a: _config(a, "40000 sequences")["kl_bits"]["mean"]
        < _config(a, "dense (prescribed)")["kl_bits"]["mean"] / 2,
    "more epochs on the given training set stop helping after 16":
        lambda a: _config(a, "32 epochs")["test_accuracy"]["mean"] <= _config(a, "16 epochs")["test_accuracy"]["mean"],
    "even as the study's final training loss keeps falling":
        lambda a: _config(a, "32 epochs")["final_train_loss"]["mean"]
        < _config(a, "16 epochs")["final_train_loss"]["mean"],
    "in bits, 32 epochs lose more than 16 on both seeds":
        lambda a: min(_config(a, "32 epochs")["kl_bits"]["per_seed"])
        > max(_config(a, "16 epochs")["kl_bits"]["per_seed"]),
    "gains about half a point and 0.03 bits, on every seed": lambda a: (
        min((fresh := _config(a, "80000 sequences, 1 epoch"))["difference_from_prescribed"]["per_seed"]) > 0
        and max(fresh["gap_difference_from_prescribed"]["kl_bits"]["per_seed"]) < 0
        and 0.004 < fresh["difference_from_prescribed"]["mean"] < 0.007
        and 0.02 < _kl_gain(a, fresh["name"]) < 0.035),
    "Wider models help, less than more data": lambda a: all(
        0 < _config(a, n)["difference_from_prescribed"]["mean"] and _kl_gain(a, n) < _kl_gain(a, "40000 sequences")
        for n in ("width 96", "width 128")),
    "The fitted data curve levels off above half a point at this width":
        lambda a: width_fits(a.study, "gap_to_ceiling")[0]["fit"]["floor"] > 0.005,
    "the budget predicted for width 128 is likely too small, as its test run shows": lambda a: bool(
        tests := [test for test in prediction_tests(a.study, "gap_to_ceiling") if test["width"] == "width 128"])
        and all(test["measured"]["mean"] > test["predicted"] + test["margin"] / 2 for test in tests),
}
def summary_verdicts(summary_text: str, appendix: dict | None, homework: dict | None, study: dict | None) -> dict:
    """For each claim of SUMMARY_CLAIMS: "holds", "does not hold", "no longer in the summary", or "not checked:
    ..." where the numbers it needs (the appendix's, the homework's or the study's) were not given."""
    flat = " ".join(summary_text.split())
    a = types.SimpleNamespace(appendix=appendix, homework=homework, study=study)
    verdicts = {}
    for claim, holds in SUMMARY_CLAIMS.items():
        if claim not in flat:
            verdicts[claim] = "no longer in the summary"
            continue
        try:
            verdicts[claim] = "holds" if holds(a) else "does not hold"
        except (TypeError, KeyError, IndexError, StopIteration, ValueError) as missing:  # ValueError: min([])
            verdicts[claim] = f"not checked: {type(missing).__name__} {missing}"
    return verdicts
