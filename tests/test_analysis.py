"""The appendix's module (hw3_appendix): the Bayes filter, the residual stream, attention by offset, the probe, the
bits against Bayes and the budget fit; the homework's own Bayes ceiling and plateau (best_possible_accuracy,
levels_off_at) held to it; and the homework's run as the appendix loads it."""
import itertools
import json
import sys
import types
from fractions import Fraction

import numpy as np
import pytest
import torch

import hw3_appendix as hwa


def brute_force_bayes(sequence, vocab_size, next_prob, n_first):
    """Every hypothesis's likelihood by stepping its generator along the sequence, then Bayes' rule."""
    hypotheses = list(itertools.product(range(vocab_size), repeat=2 * n_first))
    predictive = np.zeros((len(sequence), vocab_size))
    coefficients = np.zeros((len(sequence) + 1, vocab_size ** n_first))
    for hypothesis in hypotheses:
        state, coeffs = list(hypothesis[:n_first]), np.array(hypothesis[n_first:])
        coeff_index = int(np.dot(coeffs, vocab_size ** np.arange(n_first)[::-1]))
        likelihood = 1.0
        for t, token in enumerate(list(sequence) + [None]):
            coefficients[t, coeff_index] += likelihood
            if token is None:
                break
            recurrence, plus_one = int(np.dot(state, coeffs)) % vocab_size, (state[-1] + 1) % vocab_size
            for v in range(vocab_size):
                predictive[t, v] += likelihood * (next_prob * (v == plus_one) + (1 - next_prob) * (v == recurrence))
            likelihood *= next_prob * (token == plus_one) + (1 - next_prob) * (token == recurrence)
            state = state[1:] + [token]
    return (predictive / predictive.sum(-1, keepdims=True),
            coefficients / coefficients.sum(-1, keepdims=True))


def sample_process(rng, num, length, vocab_size, next_prob, n_first):
    """Sequences drawn as generate_recursive + SeqGen draw them."""
    sequences = []
    for _ in range(num):
        state, coeffs, tokens = list(rng.integers(0, vocab_size, n_first)), rng.integers(0, vocab_size, n_first), []
        for _ in range(length):
            new = (state[-1] + 1) % vocab_size if rng.random() < next_prob else int(np.dot(state, coeffs)) % vocab_size
            tokens.append(new)
            state = state[1:] + [new]
        sequences.append(tokens)
    return np.array(sequences)


@pytest.mark.parametrize("vocab_size,next_prob,n_first", [(3, 0.2, 2), (4, 0.1, 2), (5, 0.3, 1)])
def test_bayes_filter_matches_brute_force_enumeration(vocab_size, next_prob, n_first):
    sequences = sample_process(np.random.default_rng(0), 6, 7, vocab_size, next_prob, n_first)
    predictive, coefficients = hwa.bayes_filter(sequences, vocab_size, next_prob, n_first)
    for row, sequence in enumerate(sequences):
        expected_predictive, expected_coefficients = brute_force_bayes(sequence, vocab_size, next_prob, n_first)
        np.testing.assert_allclose(predictive[row], expected_predictive, atol=1e-12)
        np.testing.assert_allclose(coefficients[row], expected_coefficients, atol=1e-12)
    np.testing.assert_array_equal(hwa.bayes_predictive(sequences, vocab_size, next_prob, n_first), predictive)


def test_a_token_the_process_cannot_emit_leaves_the_posterior_as_it_was():
    """Model samples can break the rule; the filter then learns nothing from that token, and never gives NaN."""
    vocab_size, next_prob = 4, 0.1
    sequence = sample_process(np.random.default_rng(2), 1, 12, vocab_size, next_prob, 2)[0]
    _, coefficients = hwa.bayes_filter(sequence[None], vocab_size, next_prob, 2)
    possible = [t for t in range(2, 12) if coefficients[0, t].max() > 0.99][:1]
    assert possible, "the test sequence never pinned its coefficients down"
    t = possible[0]
    predictive, _ = hwa.bayes_filter(sequence[None], vocab_size, next_prob, 2)
    impossible = next(v for v in range(vocab_size) if predictive[0, t, v] == 0)
    broken = sequence.copy()
    broken[t] = impossible
    broken_predictive, broken_coefficients = hwa.bayes_filter(broken[None], vocab_size, next_prob, 2)
    assert np.isfinite(broken_predictive).all() and np.isfinite(broken_coefficients).all()
    np.testing.assert_array_equal(broken_coefficients[0, t + 1], broken_coefficients[0, t])


def test_the_coefficient_posterior_finds_the_true_pair_of_a_long_sequence():
    rng = np.random.default_rng(1)
    coeffs, state, tokens = np.array([3, 5]), [2, 6], []
    for _ in range(64):
        new = (state[-1] + 1) % 7 if rng.random() < 0.1 else int(np.dot(state, coeffs)) % 7
        tokens.append(new)
        state = state[1:] + [new]
    _, coefficients = hwa.bayes_filter(np.array([tokens]), 7, 0.1, 2)
    assert coefficients[0, 0] == pytest.approx(np.full(49, 1 / 49))  # nothing seen: uniform
    assert coefficients[0, -1].argmax() == 3 * 7 + 5 and coefficients[0, -1].max() > 0.99


def small_model(hw, **options):
    return hw.Transformer(vocab_size=7, n_layers=2, hidden_dim=16, ff_dim=24, num_heads=4, head_dim=4,
                          **options).eval()


def test_residual_stream_ends_where_the_output_projection_starts(hw):
    model = small_model(hw)
    tokens = torch.randint(0, 7, (5, 9))
    stream = hwa.residual_stream(model, tokens, batch_size=2)
    assert stream.shape == (3, 5, 9, 16)
    torch.testing.assert_close(stream[0], model.embedding(tokens))
    torch.testing.assert_close(model.output_proj(model.final_norm(stream[-1])), model(tokens))


def test_residual_stream_keeps_no_autograd_graph_so_a_large_probe_set_holds_only_its_activations(hw):
    stream = hwa.residual_stream(small_model(hw), torch.randint(0, 7, (4, 9)), batch_size=2)
    assert not stream.requires_grad and stream.grad_fn is None


@pytest.mark.parametrize("options", [{"num_kv_heads": 2}, {"use_sliding_window_alternating": True, "window_size": 2},
                                     {}])
def test_attention_weights_reproduce_the_graded_attention(hw, options):
    """weights . V (KV heads repeated) through o_proj is exactly what each attention layer outputs."""
    model = small_model(hw, **options)
    tokens = torch.randint(0, 7, (3, 10))
    maps = hwa.attention_weights(model, tokens)
    h = model.embedding(tokens)
    for layer, weights in zip(model.layers, maps, strict=True):
        attention, x = layer.attention, layer.attention_norm(h)
        num_kv_heads = getattr(attention, "num_kv_heads", attention.num_heads)
        v = attention.v_proj(x).view(3, 10, num_kv_heads, 4).transpose(1, 2)
        heads = weights @ v.repeat_interleave(attention.num_heads // num_kv_heads, dim=1)  # (B, H, T, D)
        torch.testing.assert_close(attention.o_proj(heads.transpose(1, 2).reshape(3, 10, 16)), attention(x))
        assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 10))
        h = layer(h)


def test_sliding_window_weights_vanish_outside_the_band(hw):
    model = small_model(hw, use_sliding_window_alternating=True, window_size=2)
    full, sliding = hwa.attention_weights(model, torch.randint(0, 7, (2, 8)))
    query, key = torch.arange(8).view(-1, 1), torch.arange(8).view(1, -1)
    assert (full[..., key > query] == 0).all() and (full[..., key <= query] > 0).all()
    band = (key <= query) & (query - key <= 2)
    assert (sliding[..., ~band] == 0).all() and (sliding[..., band] > 0).all()


def test_offset_profile_agrees_with_a_plain_loop():
    weights = torch.rand(3, 2, 6, 6)
    profile = hwa.offset_profile(weights)
    for head, offset in itertools.product(range(2), range(6)):
        values = [weights[n, head, query, query - offset] for n in range(3) for query in range(offset, 6)]
        assert profile[head, offset] == pytest.approx(float(sum(values) / len(values)), rel=1e-5)


def test_attention_by_offset_averages_batches_by_their_size(hw):
    model = small_model(hw)
    tokens = torch.randint(0, 7, (7, 6))
    whole = torch.stack([hwa.offset_profile(w) for w in hwa.attention_weights(model, tokens)]).numpy()
    np.testing.assert_allclose(hwa.attention_by_offset(model, tokens, batch_size=3), whole, rtol=1e-5, atol=1e-7)


def test_the_probe_recovers_a_planted_linear_feature():
    generator = torch.Generator().manual_seed(0)
    class_means = 6 * torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=-1)

    def planted(num):
        """Problem 0: the class moves the features along its own direction; problem 1: noise alone."""
        labels = torch.randint(0, 4, (num,), generator=generator)
        features = torch.randn(2, num, 8, generator=generator)
        features[0] += class_means[labels]
        return features, labels

    (train_x, train_y), (test_x, test_y) = planted(3000), planted(1000)
    accuracy = hwa.ridge_probe(train_x, test_x, {"class": (train_y, test_y, 4)})["class"]
    assert accuracy[0] > 0.95
    assert abs(accuracy[1] - 0.25) < 0.06  # chance


def test_the_probe_stays_at_chance_on_noise():
    generator = torch.Generator().manual_seed(1)
    features, test_features = torch.randn(3, 4000, 16, generator=generator), torch.randn(3, 4000, 16,
                                                                                          generator=generator)
    labels, test_labels = torch.randint(0, 7, (4000,), generator=generator), torch.randint(0, 7, (4000,),
                                                                                           generator=generator)
    accuracy = hwa.ridge_probe(features, test_features, {"noise": (labels, test_labels, 7)})["noise"]
    assert np.all(np.abs(accuracy - 1 / 7) < 0.025)  # chance, within about 4 standard errors


def test_probes_of_several_targets_in_one_solve_equal_separate_probes():
    generator = torch.Generator().manual_seed(2)
    features, test_features = torch.randn(2, 500, 6, generator=generator), torch.randn(2, 300, 6, generator=generator)
    targets = {"a": ((features[0, :, 0] > 0).long(), (test_features[0, :, 0] > 0).long(), 2),
               "b": (torch.randint(0, 5, (500,), generator=generator), torch.randint(0, 5, (300,), generator=generator),
                     5)}
    together = hwa.ridge_probe(features, test_features, targets)
    for name, target in targets.items():
        np.testing.assert_array_equal(together[name], hwa.ridge_probe(features, test_features, {name: target})[name])


@pytest.mark.parametrize("bad,message", [({"ridge": 0.0}, "ridge"), ({"ridge": float("inf")}, "ridge"),
                                         ({"classes": 3}, "labels of target 'y' must lie in 0..2")])
def test_the_probe_refuses_bad_arguments(bad, message):
    features, labels = torch.randn(1, 10, 2), torch.arange(10) % 4
    with pytest.raises(ValueError, match=message):
        hwa.ridge_probe(features, features, {"y": (labels, labels, bad.get("classes", 4))},
                        ridge=bad.get("ridge", 1e-3))


# ---- bits against the Bayes predictor -------------------------------------------------------------------------

def test_kl_is_zero_when_the_model_is_the_bayes_predictive_and_positive_otherwise():
    rng = np.random.default_rng(0)
    bayes = rng.dirichlet(np.ones(7), size=(5, 8))  # (N, T, V)
    targets = rng.integers(0, 7, size=(5, 8))
    same = hwa.bits_against_bayes(np.log(bayes), bayes, targets)
    assert np.abs(same["kl"]).max() < 1e-12
    assert np.allclose(same["cross_entropy"], same["bayes_entropy"]) and np.allclose(same["model_loss"],
                                                                                  same["bayes_loss"])
    other = rng.dirichlet(np.ones(7), size=(5, 8))
    bits = hwa.bits_against_bayes(np.log(other), bayes, targets)
    assert (bits["kl"] > 0).all()


def test_cross_entropy_minus_the_bayes_entropy_is_the_kl_on_the_same_tokens():
    rng = np.random.default_rng(1)
    bayes = rng.dirichlet(np.ones(7) * 0.3, size=(4, 6))
    bayes[0, 0] = [0.9, 0.1, 0, 0, 0, 0, 0]  # impossible tokens: p log p counts as 0
    logits = torch.randn(4, 6, 7)
    bits = hwa.bits_against_bayes(torch.log_softmax(logits, -1).double().numpy(), bayes,
                                          rng.integers(0, 7, size=(4, 6)))
    assert np.allclose(bits["cross_entropy"] - bits["bayes_entropy"], bits["kl"], atol=1e-12)
    assert np.isfinite(bits["kl"]).all()


def test_bits_not_nats_on_a_hand_computed_two_token_example():
    bayes = np.array([[[0.5, 0.5]]])
    model = np.log(np.array([[[0.25, 0.75]]]))
    bits = hwa.bits_against_bayes(model, bayes, np.array([[0]]))
    # KL = 0.5 log2(0.5/0.25) + 0.5 log2(0.5/0.75) = 0.5 - 0.5 log2(1.5); the Bayes entropy of a fair coin is 1 bit
    assert bits["kl"][0, 0] == pytest.approx(0.5 - 0.5 * np.log2(1.5), abs=1e-12)
    assert bits["bayes_entropy"][0, 0] == pytest.approx(1.0)
    assert bits["model_loss"][0, 0] == pytest.approx(2.0)  # -log2 0.25
    assert bits["model_entropy"][0, 0] == pytest.approx(-(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75)))


def test_token_branches_name_the_rule_that_can_have_emitted_each_token():
    # coefficients (2, 3), a vocabulary of 7 tokens: next = 2 * older + 3 * newer
    tokens = np.array([[1, 2, 1, 2, 3, 5]])  # 2*1+3*2=8%7=1 (recurrence), 2*2+3*1=7%7=0 but 2 = 1+1 ("+1"), ...
    branches = hwa.token_branches(tokens, np.array([[2, 3]]), 7)
    expected = []
    for t in range(2, 6):
        recurrence = (2 * tokens[0, t - 2] + 3 * tokens[0, t - 1]) % 7 == tokens[0, t]
        plus_one = (tokens[0, t - 1] + 1) % 7 == tokens[0, t]
        expected.append(2 if recurrence and plus_one else 0 if recurrence else 1 if plus_one else 3)
    assert branches.tolist() == [expected]
    assert branches[0, 0] == 0 and branches[0, 1] == 1


def test_the_budget_fit_recovers_a_planted_power_law_with_a_floor():
    budget = np.array([1e4, 2e4, 4e4, 8e4, 1.6e5])
    gap = 3.0 * budget ** -0.5 + 0.004
    fit = hwa.fit_floor_power_law(budget, gap)
    assert fit["exponent"] == pytest.approx(0.5, rel=0.02) and fit["floor"] == pytest.approx(0.004, abs=2e-4)
    assert hwa.budget_for_gap(fit, 0.004 + 3.0 * 1e6 ** -0.5) == pytest.approx(1e6, rel=0.05)
    assert hwa.budget_for_gap(fit, 0.003) == float("inf")  # below the floor: no budget reaches it
    no_floor = hwa.fit_floor_power_law(budget, 2.0 * budget ** -0.3)
    assert no_floor["exponent"] == pytest.approx(0.3, rel=0.02) and no_floor["floor"] < 1e-4
    with pytest.raises(ValueError, match="at least 4 budgets"):
        hwa.fit_floor_power_law([1, 2, 4], [0.1, 0.05, 0.03])


def planted_study(shift=-0.003, tested_gap=None):
    """A study summary whose data budgets follow gap = 3·N^-0.5 + 0.004 exactly, with one wider model whose gap
    at the prescribed budget is `shift` from the prescribed one on each seed, and a test run of that width."""
    def spread(values):
        values = np.asarray(values, dtype=float)
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)), "per_seed": values.tolist()}

    def config(group, name, sequences, gap, shift_per_seed, model, epochs=8):
        return {"group": group, "name": name, "train_sequences": sequences, "epochs": epochs, "model": model,
                "parameters": 100 * model["hidden_dim"], "gap_to_ceiling": spread(gap), "kl_bits": None,
                "gap_difference_from_prescribed": {"gap_to_ceiling": spread(shift_per_seed), "kl_bits": None}}

    law = lambda n: 3.0 * n ** -0.5 + 0.004  # noqa: E731
    narrow, wide = {"hidden_dim": 64}, {"hidden_dim": 128}
    configs = [config("variants", "dense (prescribed)", 10000, [law(1e4)] * 2, [0.0, 0.0], narrow)]
    configs += [config("data", f"{n} sequences", n, [law(n)] * 2, [law(n) - law(1e4)] * 2, narrow)
                for n in (20000, 40000, 80000)]
    configs.append(config("capacity", "wide", 10000, [law(1e4) + shift] * 2, [shift - 0.0005, shift + 0.0005], wide))
    tested = law(50000) + shift if tested_gap is None else tested_gap
    configs.append(config("prediction", "wide, 50000", 50000, [tested - 0.0002, tested + 0.0002], [0, 0], wide))
    return {"configs": configs}


def test_a_wider_model_moves_the_data_fit_by_its_difference_on_the_same_seeds():
    rows = {row["name"]: row for row in hwa.width_fits(planted_study(shift=-0.003), "gap_to_ceiling")}
    narrow, wide = rows["dense (prescribed)"], rows["wide"]
    assert narrow["fit"]["floor"] == pytest.approx(0.004, abs=2e-4)
    assert wide["fit"]["floor"] == pytest.approx(narrow["fit"]["floor"] - 0.003)
    assert (wide["fit"]["scale"], wide["fit"]["exponent"]) == (narrow["fit"]["scale"], narrow["fit"]["exponent"])
    # the wider model's floor is below a target the narrow one cannot reach: only it gets a finite budget
    assert hwa.budget_for_gap(narrow["fit"], 0.003) == float("inf")
    assert hwa.budget_for_gap(wide["fit"], 0.003) == pytest.approx((3.0 / 0.002) ** 2, rel=0.1)
    assert hwa.width_fits(planted_study(), "kl_bits") == []  # no data budget measured it: nothing to fit


def test_a_prediction_holds_when_the_test_run_lands_on_it_and_fails_when_it_does_not():
    held, = hwa.prediction_tests(planted_study(), "gap_to_ceiling")
    assert held["predicted"] == pytest.approx(3.0 * 50000 ** -0.5 + 0.001, abs=2e-4) and held["held"]
    # the margin: twice the combined standard error of the width's shift and of the test run's two seeds
    assert held["margin"] == pytest.approx(2 * np.sqrt(np.std([-0.0035, -0.0025], ddof=1) ** 2 / 2
                                                       + np.std([-0.0002, 0.0002], ddof=1) ** 2 / 2))
    missed, = hwa.prediction_tests(planted_study(tested_gap=3.0 * 50000 ** -0.5 + 0.004), "gap_to_ceiling")
    assert not missed["held"] and missed["measured"]["mean"] - missed["predicted"] > missed["margin"]


# ---- the homework's own Bayes ceiling, and where its curve levels off --------------------------------------------

def homework_sequences(hw, num, length, seed):
    """`num` sequences of `length` tokens drawn by the homework's generator (NumPy's global state, seeded and then
    restored): [num, length]."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        rows = []
        for _ in range(num):
            generator = hw.SeqGen(*hw.generate_recursive(hw.INITIAL, hw.VOCAB_SIZE, hw.NEXT_PROB))
            rows.append([next(generator) for _ in range(length)])
        return np.array(rows)
    finally:
        np.random.set_state(state)


def exact_predictive(sequence, vocab_size, next_prob, n_first):
    """The posterior predictive from the formula, in exact arithmetic: for every hypothesis (initial values and
    coefficients, each uniform on 0..vocab_size-1) its likelihood as a product over the tokens so far, and
    P(token t = v | tokens < t) up to a common factor as the sum over hypotheses of likelihood * P(v | hypothesis).
    Returns [len(sequence)][vocab_size] Fractions."""
    jump = Fraction(str(next_prob))
    predictive = [[Fraction(0)] * vocab_size for _ in sequence]
    for hypothesis in itertools.product(range(vocab_size), repeat=2 * n_first):
        state, coeffs = [int(v) for v in hypothesis[:n_first]], hypothesis[n_first:]
        likelihood = Fraction(1)
        for t, token in enumerate(sequence):
            recurrence = sum(s * c for s, c in zip(state, coeffs, strict=True)) % vocab_size
            plus_one = (state[-1] + 1) % vocab_size
            predictive[t][plus_one] += likelihood * jump
            predictive[t][recurrence] += likelihood * (1 - jump)
            likelihood *= jump * (token == plus_one) + (1 - jump) * (token == recurrence)
            if likelihood == 0:  # this hypothesis is out for good
                break
            state = state[1:] + [int(token)]
    return predictive


def test_the_homeworks_best_possible_accuracy_is_the_bayes_filters_argmax_accuracy_per_position(hw):
    tokens = homework_sequences(hw, 256, hw.SEQ_LEN + 1, seed=0)  # (N, SEQ_LEN + 1), as the test set's rows
    predictive = hwa.bayes_predictive(tokens, hw.VOCAB_SIZE, hw.NEXT_PROB, hw.INITIAL)  # (N, SEQ_LEN + 1, V)
    per_position = (predictive[:, 1:].argmax(-1) == tokens[:, 1:]).mean(0)  # input position p predicts token p + 1
    best = hw.best_possible_accuracy(tokens)
    assert best.shape == (hw.SEQ_LEN,)
    np.testing.assert_array_equal(best, per_position)  # exactly: the same predictor, the same hits


def test_the_homeworks_best_possible_accuracy_agrees_with_exact_enumeration(hw):
    """Against the formula in exact arithmetic, sequence by sequence: where one token is most probable, both the
    homework's predictor and the Bayes filter pick it. Where several tie exactly (it happens: two tokens with the
    same posterior mass), the floating-point predictors break the tie by rounding, not by the lowest token; any
    choice among the tied is Bayes-optimal, so the test asks for one of them."""
    tokens = homework_sequences(hw, 6, 10, seed=1)
    ties = 0
    for sequence in tokens:
        exact = exact_predictive(sequence, hw.VOCAB_SIZE, hw.NEXT_PROB, hw.INITIAL)
        chosen = hwa.bayes_predictive(sequence[None], hw.VOCAB_SIZE, hw.NEXT_PROB, hw.INITIAL)[0].argmax(-1)
        best = hw.best_possible_accuracy(sequence[None])  # (len - 1,): 1 where its prediction hit, else 0
        np.testing.assert_array_equal(best, chosen[1:] == sequence[1:])
        for t in range(1, len(sequence)):
            most = max(exact[t])
            tied = [v for v, mass in enumerate(exact[t]) if mass == most]
            if len(tied) == 1:
                assert chosen[t] == tied[0] and best[t - 1] == (tied[0] == sequence[t]), (sequence, t)
            else:
                ties += 1
                assert chosen[t] in tied, (sequence, t, tied)
    assert ties, "no exact tie among these sequences: the tie rule is not exercised"


@pytest.mark.parametrize("step", [1, 10, 25])
def test_levels_off_at_finds_the_step_of_a_step_curve(hw, step):
    curve = np.array([0.2] * step + [0.9] * (64 - step))  # accuracy per position
    assert hw.levels_off_at(curve) == step  # the first window of 5 that lies wholly on the plateau


@pytest.mark.parametrize("curve", [np.linspace(0.9, 0.5, 64), np.full(64, 0.7)], ids=["falling", "flat"])
def test_levels_off_at_gives_a_valid_position_for_a_curve_that_never_rises(hw, curve):
    position = hw.levels_off_at(curve)
    assert isinstance(position, int) and position == 0  # already at its level from the first position


def test_levels_off_at_gives_a_position_inside_any_curve_of_the_homeworks_length(hw):
    rng = np.random.default_rng(0)
    for curve in rng.random((50, 64)):  # no shape at all: noise
        position = hw.levels_off_at(curve)
        assert isinstance(position, int) and 0 <= position <= 64 - 5  # a window of 5 that starts there fits


# ---- the homework's run, as the appendix loads it --------------------------------------------------------------

def files_in(folder):
    return {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def a_saved_run(hw, folder, monkeypatch):
    """What the homework's last cell saves, into folder/build/: an untrained prescribed model with a small test
    set, and the record of what its kernel ran (the notebook's code cells)."""
    import hw3_helpers
    from hw3tools import study

    sources = study.notebook_sources()
    monkeypatch.setattr(hw3_helpers, "kernel_record", lambda: {str(i): s for i, s in enumerate(sources, start=1)})
    monkeypatch.setenv(hw3_helpers.OUTPUT_ENV, str(folder))
    settings = study.notebook_settings(sources)
    model = hw.Transformer(vocab_size=settings.model_vocab_size, **settings.model)
    model.training_log = {"step_loss": [2.0, 1.5], "epoch_loss": [1.75]}
    generators = [hw.SeqGen(np.array([i, 1]), np.array([2, i]), hw.VOCAB_SIZE, hw.NEXT_PROB) for i in (3, 0, 5)]
    test_tokens = torch.randint(0, hw.VOCAB_SIZE, (3, hw.SEQ_LEN + 1))
    run_id = hw3_helpers.save_run(model, {"device": "cpu"}, test_tokens=test_tokens, generators=generators,
                                  prompt_tokens=test_tokens[:, :4], samples={"greedy": test_tokens[:, 4:9].numpy()},
                                  train_sequences=100)
    monkeypatch.delenv(hw3_helpers.OUTPUT_ENV)
    return types.SimpleNamespace(model=model, generators=generators, test_tokens=test_tokens, run_id=run_id,
                                 sources=sources)


def test_the_appendix_loads_the_homeworks_saved_run_and_writes_nothing(hw, tmp_path, monkeypatch):
    monkeypatch.delenv("HW3_DEVICE", raising=False)
    monkeypatch.delitem(sys.modules, "homework3", raising=False)  # load_homework_run registers it; put back after
    saved = a_saved_run(hw, tmp_path, monkeypatch)
    before = files_in(tmp_path)
    run = hwa.load_homework_run(tmp_path)
    assert files_in(tmp_path) == before
    assert run.run_id == saved.run_id and run.device == torch.device("cpu")
    assert run.sources == saved.sources and sys.modules["homework3"] is run.code  # `from homework3 import ...`
    assert isinstance(run.model, run.code.Transformer) and not run.model.training
    assert run.model.training_log == saved.model.training_log
    for name, value in saved.model.state_dict().items():
        torch.testing.assert_close(run.model.state_dict()[name], value, rtol=0, atol=0)
    np.testing.assert_array_equal(run.test_tokens, saved.test_tokens.numpy())  # (N, SEQ_LEN + 1)
    assert [(tuple(g.initial), tuple(g.coeffs)) for g in run.generators] == sorted(
        (tuple(g.initial), tuple(g.coeffs)) for g in saved.generators)
    assert set(run.samples) == {"greedy"} and run.train_sequences == 100


@pytest.mark.parametrize("leave_out", ["build/metrics.json", "build/model.pt", "build"])
def test_without_a_homework_run_the_appendix_stops_in_one_line_and_writes_nothing(hw, tmp_path, monkeypatch,
                                                                                 leave_out):
    a_saved_run(hw, tmp_path, monkeypatch)
    target = tmp_path / leave_out
    if target.is_dir():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        target.rmdir()
    else:
        target.unlink()
    before = files_in(tmp_path)
    with pytest.raises(hwa.NoHomeworkRun, match="there is no homework run") as stopped:
        hwa.load_homework_run(tmp_path)
    assert files_in(tmp_path) == before and (tmp_path / "build").exists() == (leave_out != "build")
    [line] = stopped.value._render_traceback_()  # what Jupyter shows instead of a traceback
    assert "\n" not in line and line.startswith("The appendix stopped: ")
    assert "run homework3.ipynb first" in line and "`make homework`" in line


def test_weights_of_another_run_than_the_numbers_stop_the_appendix_too(hw, tmp_path, monkeypatch):
    a_saved_run(hw, tmp_path, monkeypatch)
    weights = tmp_path / "build" / "model.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")  # any other bytes: not the sha256 metrics.json records
    before = files_in(tmp_path)
    with pytest.raises(hwa.NoHomeworkRun, match="another run's weights") as stopped:
        hwa.load_homework_run(tmp_path)
    assert files_in(tmp_path) == before
    [line] = stopped.value._render_traceback_()
    assert "\n" not in line and "run homework3.ipynb again (`make homework`)" in line


def test_the_run_is_read_from_the_runners_output_folder_else_the_repository(tmp_path, monkeypatch):
    import hw3_helpers

    monkeypatch.delenv(hw3_helpers.OUTPUT_ENV, raising=False)
    assert hwa.run_root() == hwa.ROOT and (hwa.ROOT / "homework3.ipynb").is_file()
    monkeypatch.setenv(hw3_helpers.OUTPUT_ENV, str(tmp_path))
    assert hwa.run_root() == tmp_path


def test_the_analysis_runs_on_the_device_the_homework_trained_on_where_this_machine_has_it(monkeypatch):
    monkeypatch.delenv("HW3_DEVICE", raising=False)
    assert hwa.run_device("cpu") == torch.device("cpu")
    assert hwa.run_device("cuda") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert hwa.run_device("mps") == torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    monkeypatch.setenv("HW3_DEVICE", "cpu")  # chosen instead of the recorded one
    assert hwa.run_device("cuda") == torch.device("cpu")


def test_the_appendixs_numbers_are_written_beside_the_homeworks_with_its_run_id(tmp_path, monkeypatch):
    import hw3_helpers

    monkeypatch.setenv(hw3_helpers.OUTPUT_ENV, str(tmp_path))
    path = hwa.write_appendix_metrics({"kv_cache": {"speedups": [1.5]}, "bayes_optimal_accuracy": 0.88}, "0123abcd4567")
    assert path == tmp_path / "build" / "appendix_metrics.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "bayes_optimal_accuracy": 0.88, "kv_cache": {"speedups": [1.5]}, "homework_run_id": "0123abcd4567"}
