"""Companion module of homework3.ipynb: the check under its report and the analysis of its appendix, *Beyond the
assignment*.

The graded path (everything up to the end of the report) never imports it, so the homework runs without it. It ships
in the submission zip beside the notebook; the tooling behind `make` (run, check, zip, study) lives in the package
hw3tools, which does not.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

# --------------------------------------------------------------------------------------------------------------
# Reproducibility
# --------------------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's generators, as the notebook's setup cell does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------------------
# Analysis: the Bayes-optimal predictor of the assignment's data
# --------------------------------------------------------------------------------------------------------------

def bayes_filter(sequences: np.ndarray, vocab_size: int = 7, next_prob: float = 0.1,
                 n_first: int = 2) -> tuple[np.ndarray, np.ndarray]:
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


def bayes_predictive(sequences: np.ndarray, vocab_size: int = 7, next_prob: float = 0.1,
                     n_first: int = 2) -> np.ndarray:
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


@torch.no_grad()
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
        for start in range(0, len(tokens), batch_size):
            captured.clear()
            model(tokens[start:start + batch_size].to(device))
            chunks.append(torch.stack(captured).cpu())  # (n_layers + 1, batch, T, hidden)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(chunks, dim=1)


@torch.no_grad()
def attention_weights(model: torch.nn.Module, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention weights, recomputed from the layer's input the way its formula defines them.

    softmax over keys of (scale * w_h * rope(q_h)) . rope(k_g(h)), where head h reads KV head h // group, masked
    causally, and to the window on sliding-window blocks (0 <= query - key <= window_size). Written apart from
    the graded code (KV heads repeated, not grouped), so the tests can hold one against the other.

    Returns:
        per layer, float tensor [num_sequences, num_heads, seq_len, seq_len] on the CPU (rows sum to 1).
    """
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
# The committed study (`make study`): reading and drawing it
# --------------------------------------------------------------------------------------------------------------

STUDY_SUMMARY = Path("study") / "summary.json"  # relative to the notebook's folder


def load_study(path: Path = STUDY_SUMMARY) -> dict | None:
    """The study's summary ({"configs": [...]}, see hw3tools/study.py), or None with a note where it is missing."""
    path = Path(path)
    if not path.exists():
        print(f"{path} is not here: this section draws the committed results of `make study` "
              f"(in the repository and the submission zip); it is skipped.")
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def study_configs(summary: dict, group: str) -> list[dict]:
    return [config for config in summary["configs"] if config["group"] == group]


def format_spread(stat: dict, digits: int = 3, signed: bool = False) -> str:
    """'0.851 ± 0.002 (n=3)': mean and sample standard deviation over the seeds; '0.874 (1 seed)' has no spread."""
    mean = f"{stat['mean']:{'+' if signed else ''}.{digits}f}"
    if len(stat["per_seed"]) < 2:
        return f"{mean} (1 seed)"
    return f"{mean} ± {stat['std']:.{digits}f} (n={len(stat['per_seed'])})"


def study_table(summary: dict) -> str:
    """The study's configurations as a Markdown table (it fits any width: cells wrap at spaces, and no number has
    one): per configuration its parameters (in thousands), training steps, number of seeds, and the mean ± the
    sample standard deviation over those seeds of its test accuracy, its difference from the prescribed dense model
    on the same seeds, its gap to the Bayes ceiling and its KL from the Bayes predictor in bits per token."""
    def spread(stat: dict | None, signed: bool = False) -> str:
        if not stat:
            return "not measured"
        mean = f"{stat['mean']:{'+' if signed else ''}.3f}".replace("-", "−")
        return mean if len(stat["per_seed"]) < 2 else f"{mean}±{stat['std']:.3f}"

    lines = ["| configuration | parameters | steps | seeds | test accuracy | vs dense, same seeds | gap to ceiling "
             "| KL, bits per token |", "|:--|--:|--:|--:|:--|:--|:--|:--|"]
    group = None
    for config in summary["configs"]:
        if config["group"] != group:
            group = config["group"]
            lines.append(f"| ***{group}*** | | | | | | | |")
        baseline = (config["group"], config["name"]) == ("variants", "dense (prescribed)")
        lines.append(" | ".join((
            f"| {config['name']}", f"{config['parameters'] / 1000:.0f}k", f"{config['steps']}",
            f"{len(config['test_accuracy']['per_seed'])}", spread(config["test_accuracy"]),
            "baseline" if baseline else spread(config.get("difference_from_prescribed"), signed=True),
            spread(config.get("gap_to_ceiling")), spread(config.get("kl_bits")))) + " |")
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
    """The prescribed model and the data lever's budgets at 8 epochs that measured `key` (sorted by sequences),
    and the equal-compute run (fresh sequences, one epoch) if it did."""
    baseline = [c for c in study_configs(summary, "variants") if c["name"] == "dense (prescribed)"]
    data = [c for c in study_configs(summary, "data") if c.get(key) is not None]
    same_epochs = sorted([c for c in baseline + data if c["epochs"] == 8 and c.get(key) is not None],
                         key=lambda c: c["train_sequences"])
    fresh = next((c for c in data if c["epochs"] == 1), None)
    return same_epochs, fresh


def width_fits(summary: dict, key: str) -> list[dict]:
    """The data fit of the prescribed width, moved to each width the study trained: the floor shifts by the width's
    gap difference from the prescribed model on the same seeds (at 10000 sequences, 8 epochs), while the data term
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
    Also what the width gains over the prescribed width's fit at 10000 sequences and at the test's budget: the move
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
                      # what the width gains over the prescribed width's fit, at 10000 sequences and at the test's
                      "width_gain_at_10000": -row["shift"]["mean"],
                      "width_gain_at_budget": fitted_gap(fits[0]["fit"], config["train_sequences"]) - measured["mean"]})
    return tests


def plot_budget_fit(summary: dict, targets: dict):
    """The gap to the ceiling against the number of training sequences (8 epochs each), for accuracy and for bits,
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
                    color="tab:red", label="same 625 steps on fresh sequences (1 epoch)")
        tests = prediction_tests(summary, key)
        for test in tests[:1]:  # the width that was tested: its moved fit, its prediction and the test run
            row = next(r for r in fits[key] if r["name"] == test["width"])
            wider = next(c for c in summary["configs"] if c["name"] == test["width"])  # at 10000 sequences
            tested = next(c for c in study_configs(summary, "prediction") if c["name"] == test["name"])
            ax.plot(grid, fitted_gap(row["fit"], grid), "--", color="tab:orange",
                    label=f"{test['width']}: the fit moved by its difference at 10000")
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
        ax.set(xscale="log", xlabel="training sequences (8 epochs each; seeds as dots)", ylabel=labels.get(key, key),
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


def study_figures(summary: dict) -> dict:
    """The study's figures by file name: the variants, and the levers once the study has run any."""
    figures = {"study_variants.png": plot_study_variants(summary)}
    if any(study_configs(summary, lever) for lever in ("epochs", "capacity", "data")):
        figures["study_levers.png"] = plot_study_levers(summary)
    return figures


def plot_study_levers(summary: dict):
    """Test accuracy against training steps for each lever (epochs, capacity, data), the ceiling drawn in; and the
    KL each configuration ends at against its training cost (parameters × steps), named beside each point, in a
    panel as wide as the figure below them."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    from matplotlib.transforms import Bbox

    baseline = next(c for c in study_configs(summary, "variants") if c["name"] == "dense (prescribed)")
    ceiling = np.mean([c["bayes_accuracy"]["mean"] for c in summary["configs"]])
    levers = [group for group in ("epochs", "capacity", "data") if study_configs(summary, group)]
    fig = plt.figure(figsize=(12, 9.2))
    grid = fig.add_gridspec(2, len(levers))
    axes = [fig.add_subplot(grid[0, i]) for i in range(len(levers))] + [fig.add_subplot(grid[1, :])]
    for ax, lever in zip(axes, levers, strict=False):
        for config in [baseline, *study_configs(summary, lever)]:
            steps = config["steps_per_epoch"] * np.arange(1, config["epochs"] + 1)
            mean, std = np.array(config["epoch_test_accuracy_mean"]), np.array(config["epoch_test_accuracy_std"])
            label = f"{config['name']}: {format_spread(config['test_accuracy'])}"
            line, = ax.plot(steps, mean, "o-", ms=2.5, label=label)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.axhline(ceiling, ls="--", color="black", label=f"Bayes ceiling {ceiling:.3f}")
        ax.set(title=f"lever: {lever}", xlabel="training steps (batches of 128)", xscale="log", ylim=(0.6, 0.9),
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
    points = []  # (cost, mean, s.d., name, color)
    for lever, color in colors.items():
        configs = [c for c in study_configs(summary, lever) if c.get("kl_bits") is not None
                   and (lever != "variants" or c is baseline)]
        for i, config in enumerate(configs):
            cost = config["steps"] * config["parameters"]
            stat = config["kl_bits"]
            bits.errorbar(cost, stat["mean"], yerr=stat["std"], fmt="o", color=color, capsize=3,
                          label=lever if i == 0 else None)
            points.append((cost, stat["mean"], stat["std"], config["name"], color))
    costs = [p[0] for p in points]
    bits.set(title="KL from the Bayes predictor after training", xscale="log",
             xlim=(min(costs) / 1.6, max(costs) * 1.6), ylim=(0, max(p[1] + p[2] for p in points) * 1.15),
             xlabel="training cost: parameters × steps", ylabel="KL(Bayes ‖ model), bits per token")
    bits.grid(True, alpha=0.3, which="both")
    legend = bits.legend(fontsize=9, loc="upper right")
    fig.tight_layout(h_pad=1.5)

    # Each point's name beside it, where it covers no other name, point or error bar and stays inside the panel
    # (else where it covers least): placed one by one, then each moved again while any still overlaps. This
    # measures the text as drawn, so it runs once the layout is fixed.
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = bits.get_window_extent(renderer)
    pt = fig.dpi / 72  # pixels a point

    def padded(box, pad=1.5 * pt):
        return Bbox.from_extents(box.x0 - pad, box.y0 - pad, box.x1 + pad, box.y1 + pad)

    def area(box):
        return max(box.width, 0) * max(box.height, 0)

    def covered(box, others):  # how much of the box lies on others or outside the panel
        return sum(area(i) for i in (Bbox.intersection(box, o) for o in others) if i is not None) \
            + area(box) - area(Bbox.intersection(box, frame) or Bbox.null())

    marks = [padded(legend.get_window_extent(renderer))]  # the legend, and each point with its error bar and caps
    for cost, mean, std, _, _ in points:
        (x, low), (_, high) = bits.transData.transform([(cost, mean - std), (cost, mean + std)])
        marks.append(Bbox.from_extents(x - 3.5 * pt, low - 3.5 * pt, x + 3.5 * pt, high + 3.5 * pt))
    sides = [(6, 3, "left", "bottom"), (6, -3, "left", "top"), (-6, 3, "right", "bottom"),
             (-6, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
             (6, 12, "left", "bottom"), (-6, 12, "right", "bottom"), (6, -12, "left", "top"),
             (-6, -12, "right", "top"), (0, 18, "center", "bottom"), (0, -18, "center", "top")]

    def place(k, others):
        cost, mean, std, name, color = points[k]
        best = None
        for dx, dy, ha, va in sides:
            at = mean + (np.sign(dy) * std if dx == 0 else 0)  # above or below the error bar, or beside the point
            text = bits.annotate(name, (cost, at), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                 fontsize=9, color=color)
            box = padded(text.get_window_extent(renderer))
            score = covered(box, others)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, text, box)
            else:
                text.remove()
            if score == 0:
                break
        return best

    placed = {}
    for _ in range(3):
        for k in range(len(points)):
            others = marks + [placed[j][2] for j in placed if j != k]
            if k in placed:
                if covered(placed[k][2], others) == 0:
                    continue
                placed[k][1].remove()
            placed[k] = place(k, others)
    return fig


# --------------------------------------------------------------------------------------------------------------
# The report: its sentences whose truth depends on the run, checked on the run's numbers
# --------------------------------------------------------------------------------------------------------------

def _sampled_at_or_above_t1(n) -> list[float]:
    return [n.rule_consistent[t, p] for t in (1.0, 1.5, 2.0) for p in (0.9, 1.0)]


def _flat_from_10(n) -> bool:
    late = np.asarray(n.per_token_acc[10:])
    halves = np.array_split(late, 2)
    steep = np.asarray(n.per_token_acc[:3]).max() < late.mean() - 0.2
    return bool(steep and abs(halves[0].mean() - halves[1].mean()) < 0.02)


# A fragment of a report sentence -> its test on the run's numbers (rule_consistent and distinct by setting,
# "greedy" or (t, top_p), and per_token_acc), as the notebook passes them to check_report.
REPORT_CLAIMS = {
    "the 8 continuations of a prompt are always the same": lambda n: n.distinct["greedy"] == 1,
    "at a price": lambda n: n.rule_consistent[1.0, 0.9] < n.rule_consistent["greedy"],
    "without truncation (`top_p=1`, the whole distribution)":
        lambda n: n.rule_consistent[1.0, 1.0] < n.rule_consistent[1.0, 0.9],
    "Greedy keeps to the rule more often":
        lambda n: n.rule_consistent["greedy"] > max(_sampled_at_or_above_t1(n)),
    "sampling behaves almost like greedy decoding": lambda n: abs(
        n.rule_consistent[0.5, 0.9] - n.rule_consistent["greedy"]) < 0.02 and n.distinct[0.5, 0.9] < 2,
    "nearly every sample differs": lambda n: n.distinct[2.0, 1.0] > 7.5,
    "rule-consistency falls at every step up in temperature": lambda n: all(
        n.rule_consistent[a, p] > n.rule_consistent[b, p]
        for p in (0.9, 1.0) for a, b in ((0.5, 1.0), (1.0, 1.5), (1.5, 2.0))),
    "A small nucleus protects against high temperature":
        lambda n: all(n.rule_consistent[t, 0.5] > n.rule_consistent[t, 1.0] + 0.1 for t in (1.5, 2.0)),
    "climbs steeply over the next few positions and stays flat from about position 10 on": _flat_from_10,
    "the flat part lies close to that": lambda n: 0.87 < float(np.mean(n.per_token_acc[10:])) < 0.925,
}


def report_verdicts(report_text: str, **numbers) -> dict[str, str]:
    """For each claim of REPORT_CLAIMS: "holds", "does not hold", or "no longer in the report" (a student rewrote
    it). Sentences are compared with white space folded, so line breaks inside them do not matter."""
    flat, n = " ".join(report_text.split()), types.SimpleNamespace(**numbers)
    return {claim: "no longer in the report" if claim not in flat else "holds" if holds(n) else "does not hold"
            for claim, holds in REPORT_CLAIMS.items()}


def check_report(report_parts: list[str], **numbers) -> dict:
    """Show, under the report, whether each of its run-dependent sentences holds for this run, and its word count
    as `wc -w` counts (the handout asks for 300 to 600). Returns the verdicts and the count for the metrics."""
    from IPython.display import Markdown, display

    text = "\n\n".join(report_parts)
    verdicts, words = report_verdicts(text, **numbers), len(text.split())
    failing = [claim for claim, verdict in verdicts.items() if verdict == "does not hold"]
    shown = (f"⚠️ **This run does not bear out {len(failing)} of the report's sentences; edit them before "
             "submitting:**\n" + "\n".join(f"- “{claim}”" for claim in failing) if failing else
             f"✅ All {sum(v == 'holds' for v in verdicts.values())} sentences of the report that depend on the run "
             "hold for this run.")
    limits = "" if 300 <= words <= 600 else " ⚠️ **outside the handout's 300 to 600**"
    display(Markdown(f"{shown}\n\nThe report has {words} words{limits}."))
    return {"claims": verdicts, "words": words}


# --------------------------------------------------------------------------------------------------------------
# Outputs of a run: where they go, figures, metrics
# --------------------------------------------------------------------------------------------------------------

OUTPUT_ENV = "HW3_OUTPUT_DIR"  # set by the runner so a test run can write somewhere else


def output_dir() -> Path:
    """Where a run writes figures/, build/ and report.md: the notebook's folder unless the runner says else."""

    return Path(os.environ.get(OUTPUT_ENV, "."))


def save_figure(fig, name: str) -> Path:
    """Save a figure as figures/<name> with the same bytes every run (no software or date stamp)."""
    path = output_dir() / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def write_metrics(metrics: dict) -> Path:
    """The run's numbers as build/metrics.json, for `make check` and the tests; returns the path, relative to
    the output folder."""
    path = output_dir() / "build" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path.relative_to(output_dir())


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so readers never see half a file. The file gets the mode
    a plain open() would give it (the umask applies), not the owner-only mode of a temporary file."""
    umask = os.umask(0)
    os.umask(umask)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o666 & ~umask)
    os.replace(tmp.name, path)

