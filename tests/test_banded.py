"""The appendix notebook's banded sliding-window attention equals the graded one, in memory linear in length."""
import pytest
import torch


@pytest.mark.parametrize("seq_len,window,block,num_kv_heads", [
    (50, 7, 16, 4),    # length not a multiple of the block
    (64, 0, 8, 2),     # window 0: each query sees itself only
    (40, 100, 16, 1),  # window longer than the sequence: plain causal attention
    (33, 16, 16, 2),   # window equal to the block
    (5, 3, 128, 4),    # a block longer than the whole sequence
])
def test_banded_equals_graded_sliding_attention(hw, appendix_code, seq_len, window, block, num_kv_heads):
    q = torch.randn(2, 4, seq_len, 8)
    k, v = torch.randn(2, num_kv_heads, seq_len, 8), torch.randn(2, num_kv_heads, seq_len, 8)
    weights, rope = torch.rand(4) + 0.5, hw.RotaryPositionalEmbedding(8)
    expected = hw.calculate_sliding_attention(q, k, v, weights, rope, 8 ** -0.5, q.device, window)
    banded = appendix_code.banded_sliding_attention(q, k, v, weights, rope, 8 ** -0.5, window, block=block)
    torch.testing.assert_close(banded, expected, atol=1e-5, rtol=1e-4)


def test_banded_scores_never_exceed_block_by_block_plus_window(hw, appendix_code, monkeypatch):
    shapes = []
    einsum = torch.einsum

    def recording_einsum(equation, *operands):
        result = einsum(equation, *operands)
        if equation.endswith("->bngqk"):
            shapes.append(tuple(result.shape[-2:]))
        return result

    monkeypatch.setattr(torch, "einsum", recording_einsum)
    q = k = v = torch.randn(1, 2, 300, 8)
    appendix_code.banded_sliding_attention(q, k, v, torch.ones(2), hw.RotaryPositionalEmbedding(8), 0.3, 10, block=32)
    assert shapes and max(rows * cols for rows, cols in shapes) <= 32 * (32 + 10)
