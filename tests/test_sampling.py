"""Temperature and nucleus sampling against a brute-force search, generation, and per-position accuracy."""
import copy
import functools
import itertools

import nbformat
import numpy as np
import pytest
import torch

from hw3tools.notebook import NOTEBOOK


def nucleus_by_brute_force(logits, top_p, t):
    """Over every subset of the vocabulary: the smallest whose mass reaches top_p (the heaviest among equals)."""
    probs = torch.softmax(logits.double() / t, dim=-1).tolist()
    vocab = range(len(probs))
    candidates = [set(s) for size in range(1, len(probs) + 1) for s in itertools.combinations(vocab, size)]
    reaching = [s for s in candidates if sum(probs[i] for i in s) >= top_p - 1e-12]
    best = min(reaching, key=lambda s: (len(s), -sum(probs[i] for i in s)))
    kept = torch.tensor([probs[i] if i in best else 0.0 for i in vocab], dtype=torch.float64)
    return kept / kept.sum()


@pytest.mark.parametrize("top_p", [0.0, 0.2, 0.5, 0.8, 0.95, 1.0])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_distribution_matches_brute_force(hw, top_p, t):
    logits = torch.randn(3, 4, 6) * 2
    result = hw.get_dist_after_with_temp_and_topp(logits, top_p=top_p, t=t)
    for b, s in itertools.product(range(3), range(4)):
        torch.testing.assert_close(result[b, s].double(), nucleus_by_brute_force(logits[b, s], top_p, t),
                                   atol=1e-6, rtol=1e-5)


def test_full_nucleus_is_the_tempered_softmax(hw):
    logits = torch.randn(2, 3, 50)
    torch.testing.assert_close(hw.get_dist_after_with_temp_and_topp(logits, top_p=1.0, t=0.7),
                               torch.softmax(logits / 0.7, dim=-1))


@pytest.mark.parametrize("scale,t", [(1e30, 1.0), (1.0, 1e-30), (1e4, 1e-6), (-1e30, 1.0)])
def test_extreme_logits_and_temperatures_give_a_distribution(hw, scale, t):
    logits = torch.tensor([[[1.0, 3.0, 2.0, -4.0]]]) * scale
    result = hw.get_dist_after_with_temp_and_topp(logits, top_p=0.9, t=t)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result.sum(-1), torch.ones(1, 1))
    assert result.argmax() == logits.argmax()


def test_masked_logits_are_allowed(hw):
    logits = torch.tensor([[[0.0, float("-inf"), 1.0]]])
    result = hw.get_dist_after_with_temp_and_topp(logits, top_p=1.0, t=1.0)
    assert result[0, 0, 1] == 0 and torch.isfinite(result).all()


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_must_be_positive_and_finite(hw, t):
    with pytest.raises(ValueError, match="temperature"):
        hw.get_dist_after_with_temp_and_topp(torch.randn(1, 1, 4), top_p=0.5, t=t)


@pytest.mark.parametrize("top_p", [-0.1, 1.01, float("nan")])
def test_top_p_must_lie_in_0_1(hw, top_p):
    with pytest.raises(ValueError, match="top_p"):
        hw.get_dist_after_with_temp_and_topp(torch.randn(1, 1, 4), top_p=top_p, t=1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_logits_are_refused(hw, bad):
    with pytest.raises(ValueError, match="model_logits"):
        hw.get_dist_after_with_temp_and_topp(torch.tensor([[[0.0, bad]]]), top_p=0.5, t=1.0)


def test_sampled_frequencies_follow_the_nucleus(hw):
    torch.manual_seed(1)
    logits = torch.tensor([[[1.0, 3.0, 2.0, 0.0]]]).expand(20000, 1, 4)
    samples = hw.token_choice_adv(logits, top_p=0.8, t=1.0)
    assert samples.shape == (20000, 1)
    freq = torch.bincount(samples.flatten(), minlength=4).double() / 20000
    expected = hw.get_dist_after_with_temp_and_topp(logits[:1], top_p=0.8, t=1.0).flatten().double()
    assert freq[0] == freq[3] == 0
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


class CountingModel(torch.nn.Module):
    """A stand-in language model: the next token is (last token + 1) mod 5, so greedy output is known."""

    def forward(self, x):
        return torch.nn.functional.one_hot((x + 1) % 5, 5).float() * 10


def test_greedy_generation_extends_each_sequence(hw):
    out = hw.generate(CountingModel(), torch.tensor([[0, 1], [3, 3]]), 6)
    assert torch.equal(out, torch.tensor([[2, 3, 4, 0, 1, 2], [4, 0, 1, 2, 3, 4]]))


def test_generation_uses_the_given_token_choice(hw):
    always_zero = lambda logits: torch.zeros(logits.shape[0], 1, dtype=torch.long)  # noqa: E731
    out = hw.generate(CountingModel(), torch.tensor([[1], [2], [3]]), 4, token_choice=always_zero)
    assert torch.equal(out, torch.zeros(3, 4, dtype=torch.long))


def test_generation_matches_a_step_by_step_argmax(hw):
    model = hw.Transformer(vocab_size=7, n_layers=2, hidden_dim=16, ff_dim=32, num_heads=2, head_dim=8).eval()
    prompt = torch.randint(0, 7, (3, 5))
    seq = prompt
    for _ in range(8):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(hw.generate(model, prompt, 8), seq[:, 5:])
    sampled = hw.generate(model, prompt, 8, token_choice=functools.partial(hw.token_choice_adv, top_p=0.9, t=1.0))
    assert sampled.shape == (3, 8) and ((0 <= sampled) & (sampled < 7)).all()


def test_per_token_accuracy_is_the_mean_over_sequences(hw):
    model = hw.Transformer(vocab_size=7, n_layers=1, hidden_dim=16, ff_dim=32, num_heads=2, head_dim=8)
    x, y = torch.randint(0, 7, (50, 12)), torch.randint(0, 7, (50, 12))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    per_token = hw.calc_per_token_acc(model, loader)
    with torch.no_grad():
        expected = (model(x).argmax(-1) == y).double().mean(dim=0).numpy()
    assert isinstance(per_token, np.ndarray) and per_token.shape == (12,)
    np.testing.assert_allclose(per_token, expected)
    np.testing.assert_allclose(per_token.mean(), float(hw.eval_acc(model, loader)), rtol=1e-6)


def run_the_sampling_cell(hw, continue_with):
    """The notebook's comparison of greedy decoding and sampling, with `generate` replaced by `continue_with`
    (namespace, prompt rows, length -> new tokens), on the test generators of 300 sequences drawn by the given code."""
    np.random.seed(0)
    factory = hw.example_generator(lambda: hw.generate_recursive(2, 7, 0.1))
    _, generators = hw.generate_dataset(gen_factory=factory, seq_len=8, num_entries=300)
    [cell] = [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"
              and "rule_consistent[setting] =" in c.source]
    namespace = {**vars(hw), "np": np, "torch": torch, "functools": functools, "generators": generators,
                 "VOCAB_SIZE": 7, "model": None, "print": lambda *args: None}
    namespace["generate"] = lambda model, prompts, length, token_choice: continue_with(namespace, prompts, length)
    exec(cell.source, namespace)
    return namespace


def the_generators_own_continuation(namespace, prompts, length):
    """Each row continued by a copy of its prompt's generator, from where the prompt ended."""
    rows = [[next(generator) for _ in range(length)]
            for generator in (copy.deepcopy(namespace["restarted"][row // 8]) for row in range(len(prompts)))]
    return torch.tensor(np.array(rows))


def test_the_rule_consistency_of_the_generators_own_continuations_is_one_and_of_noise_about_two_in_seven(hw):
    truth = run_the_sampling_cell(hw, the_generators_own_continuation)
    assert set(truth["rule_consistent"].values()) == {1.0}
    assert all(1 < distinct <= 8 for distinct in truth["distinct"].values())  # the "+1" jumps make them differ
    noise = run_the_sampling_cell(hw, lambda namespace, prompts, length: torch.randint(0, 7, (len(prompts), length)))
    for share in noise["rule_consistent"].values():  # two of the 7 values are consistent (one where they coincide)
        assert abs(share - 2 / 7) < 0.03
    assert set(noise["distinct"].values()) == {8.0}
