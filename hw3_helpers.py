"""Companion module of homework3.ipynb: the analysis that its extension sections use.

The graded cells never import it. It ships in the submission zip beside the notebook; the tooling behind `make`
(run, check, zip, study) lives in the package hw3tools, which does not.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
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

def bayes_predictive(sequences: np.ndarray, vocab_size: int = 7, next_prob: float = 0.1,
                     n_first: int = 2) -> np.ndarray:
    """P(token t | tokens before t) under the exact generating process, for every token of every sequence.

    The process (`generate_recursive` + `SeqGen`): hidden initial values and coefficients, each uniform on
    0..vocab_size-1; each new token is last + 1 with probability `next_prob`, else the dot product of the last
    `n_first` values with the coefficients, mod vocab_size; the initial values are never emitted. The posterior
    over all vocab_size^(2 n_first) hypotheses is updated token by token.

    Args:
        sequences: int array [num_sequences, length], the emitted tokens (a data set's x and last y together).

    Returns:
        float array [num_sequences, length, vocab_size]; row t is the prediction of token t from tokens < t.
    """
    sequences = np.asarray(sequences)
    num_sequences, length = sequences.shape
    grid = np.stack(np.meshgrid(*[np.arange(vocab_size)] * (2 * n_first), indexing="ij"), -1).reshape(-1, 2 * n_first)
    initial, coeffs = grid[:, :n_first], grid[:, n_first:]  # (H, n_first) each
    num_hypotheses = len(grid)

    posterior = np.full((num_sequences, num_hypotheses), 1.0 / num_hypotheses)
    state = np.broadcast_to(initial, (num_sequences, num_hypotheses, n_first))  # last n_first values, per hypothesis
    predictive = np.empty((num_sequences, length, vocab_size))
    for t in range(length):
        if t == n_first:
            # The hidden initial values have left the state, so from here on only the coefficients matter:
            # marginalise them out and carry on with vocab_size^n_first hypotheses instead of the square of it.
            posterior = posterior.reshape(num_sequences, -1, vocab_size ** n_first).sum(1)
            coeffs = coeffs[: vocab_size ** n_first]
            state = state[:, : vocab_size ** n_first]
        recurrence = np.einsum("nhk,hk->nh", state, coeffs) % vocab_size  # (N, H)
        plus_one = (state[..., -1] + 1) % vocab_size  # (N, H)
        for v in range(vocab_size):  # P(next = v) = sum over hypotheses of posterior * P(v | hypothesis)
            predictive[:, t, v] = (posterior * (next_prob * (plus_one == v)
                                                + (1 - next_prob) * (recurrence == v))).sum(-1)
        observed = sequences[:, t, None]  # (N, 1)
        posterior = posterior * (next_prob * (plus_one == observed) + (1 - next_prob) * (recurrence == observed))
        posterior /= posterior.sum(-1, keepdims=True)
        state = np.concatenate([state[..., 1:], np.broadcast_to(observed[..., None], state[..., :1].shape)], -1)
    return predictive



def rule_consistent(tokens: np.ndarray, coeffs: np.ndarray, vocab_size: int) -> np.ndarray:
    """Which tokens the true generator could have emitted: its recurrence or the last token + 1.

    Args:
        tokens: int array [num_sequences, length] of consecutive tokens, at least n_first long.
        coeffs: int array [num_sequences, n_first], each sequence's true coefficients.

    Returns:
        bool array [num_sequences, length - n_first]: token t (t >= n_first) is consistent.
    """
    n_first = coeffs.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:, :-1], n_first, axis=1)  # (N, L - n, n)
    recurrence = (windows * coeffs[:, None, :]).sum(-1) % vocab_size
    plus_one = (tokens[:, n_first - 1:-1] + 1) % vocab_size
    following = tokens[:, n_first:]
    return (following == recurrence) | (following == plus_one)


def continuation_diversity(samples: np.ndarray) -> tuple[float, float]:
    """Mean number of distinct continuations per prompt, and mean per-position entropy (bits) across samples.

    Args:
        samples: int array [num_prompts, num_samples, gen_length].
    """
    distinct = np.mean([len({row.tobytes() for row in prompt}) for prompt in samples])
    entropies = []
    for prompt in samples:
        for column in prompt.T:
            freq = np.bincount(column) / len(column)
            freq = freq[freq > 0]
            entropies.append(-(freq * np.log2(freq)).sum())
    return float(distinct), float(np.mean(entropies))


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

    path = output_dir() / "build" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder, so readers never see half a file."""

    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)

