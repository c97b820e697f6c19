"""Mixture of experts: the router's top-k softmax, a dense reference, and which tokens each expert saw."""
import pytest
import torch


def test_router_keeps_the_top_k_logits_and_softmaxes_them(hw):
    router = hw.Router(16, num_experts=6, top_k=2)
    x = torch.randn(3, 5, 16)
    weights, indices = router(x)
    assert weights.shape == indices.shape == (3, 5, 2)
    logits = router.gate(x)
    expected_indices = logits.topk(2, dim=-1).indices
    assert torch.equal(indices, expected_indices)
    # Mixtral's G(x) = softmax(TopK(x W_g)), the dropped logits at -inf.
    dropped = torch.full_like(logits, float("-inf")).scatter(-1, expected_indices, logits.gather(-1, expected_indices))
    torch.testing.assert_close(weights, dropped.softmax(-1).gather(-1, expected_indices))


@pytest.mark.parametrize("top_k", [0, 5, -1])
def test_router_refuses_a_top_k_outside_1_to_num_experts(hw, top_k):
    with pytest.raises(ValueError, match="top_k"):
        hw.Router(8, num_experts=4, top_k=top_k)


def dense_reference(moe, x):
    """Every expert on every token, then each token's top-k outputs mixed with the router weights."""
    weights, indices = moe.router(x)
    all_outputs = torch.stack([expert(x) for expert in moe.experts], dim=-2)  # (B, T, E, hidden)
    chosen = all_outputs.gather(-2, indices.unsqueeze(-1).expand(*indices.shape, x.shape[-1]))
    return (weights.unsqueeze(-1) * chosen).sum(dim=-2)


@pytest.mark.parametrize("num_experts,top_k", [(4, 1), (4, 2), (8, 2), (3, 3)])
def test_moe_matches_the_dense_reference(hw, num_experts, top_k):
    moe = hw.MixtureOfExperts(16, 32, num_experts=num_experts, top_k=top_k)
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(moe(x), dense_reference(moe, x), atol=1e-6, rtol=1e-5)


def test_each_expert_runs_only_on_the_tokens_routed_to_it(hw):
    moe = hw.MixtureOfExperts(16, 32, num_experts=4, top_k=2)
    x = torch.randn(2, 11, 16)
    seen = {}
    for expert_id, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda mod, inp, out, e=expert_id: seen.setdefault(e, inp[0].reshape(-1, 16)))
    moe(x)
    _, indices = moe.router(x)
    tokens = x.reshape(-1, 16)
    for expert_id in range(4):
        routed = (indices.reshape(-1, 2) == expert_id).any(dim=-1)
        if routed.any():
            assert torch.equal(seen[expert_id], tokens[routed]), f"expert {expert_id} saw other tokens"
        else:
            assert expert_id not in seen, f"expert {expert_id} ran with no token routed to it"
    total_rows = sum(rows.shape[0] for rows in seen.values())
    assert total_rows == tokens.shape[0] * 2  # top_k rows per token, not num_experts


def test_gradients_reach_the_router_and_the_chosen_experts(hw):
    moe = hw.MixtureOfExperts(8, 16, num_experts=4, top_k=2)
    moe(torch.randn(2, 20, 8)).square().sum().backward()
    assert moe.router.gate.weight.grad.abs().sum() > 0
    assert any(expert.w1.weight.grad is not None for expert in moe.experts)


def test_swiglu_is_w2_of_silu_w1_times_v(hw):
    ffn = hw.SwiGLUFeedForward(8, 24)
    x = torch.randn(2, 3, 8)
    h1, hv = x @ ffn.w1.weight.T, x @ ffn.v.weight.T
    expected = (h1 * torch.sigmoid(h1) * hv) @ ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), expected)
