"""RoPE against the rotation formula written out by hand, and the property RoPE exists for."""
import math

import pytest
import torch


def rope_by_formula(x, start_pos=0, base=10000.0):
    """Rotate pair (i, i + d/2) of the token at position m by m * base^(-2i/d), one scalar at a time."""
    *_, seq_len, dim = x.shape
    half = dim // 2
    out = torch.empty_like(x, dtype=torch.float64)
    for m in range(seq_len):
        for i in range(half):
            angle = (start_pos + m) * base ** (-2 * i / dim)
            a, b = x[..., m, i].double(), x[..., m, i + half].double()
            out[..., m, i] = a * math.cos(angle) - b * math.sin(angle)
            out[..., m, i + half] = a * math.sin(angle) + b * math.cos(angle)
    return out.to(x.dtype)


@pytest.mark.parametrize("head_dim,start_pos", [(4, 0), (8, 3), (16, 100), (16, 2000)])
def test_matches_the_rotation_formula(hw, head_dim, start_pos):
    rope = hw.RotaryPositionalEmbedding(head_dim, max_seq_len=2048)
    x = torch.randn(2, 3, 5, head_dim)
    torch.testing.assert_close(rope(x, start_pos=start_pos), rope_by_formula(x, start_pos), atol=1e-5, rtol=1e-5)


def test_tables_are_precomputed_at_construction(hw):
    rope = hw.RotaryPositionalEmbedding(8, max_seq_len=32)
    assert rope.cos_cached.shape == rope.sin_cached.shape == (32, 8)


def test_scores_depend_only_on_relative_position(hw):
    rope = hw.RotaryPositionalEmbedding(16, max_seq_len=256)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(query_pos, key_pos):
        return (rope(q, start_pos=query_pos) * rope(k, start_pos=key_pos)).sum()

    for shift in (1, 7, 150):
        torch.testing.assert_close(score(10 + shift, 4 + shift), score(10, 4), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(10, 4), score(10, 5))


def test_rotation_preserves_norms(hw):
    rope = hw.RotaryPositionalEmbedding(16)
    x = torch.randn(2, 4, 50, 16)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))


def test_start_pos_continues_the_sequence(hw):
    rope = hw.RotaryPositionalEmbedding(8, max_seq_len=64)
    x = torch.randn(1, 2, 10, 8)
    torch.testing.assert_close(rope(x[:, :, 6:], start_pos=6), rope(x)[:, :, 6:])


def test_sequences_longer_than_the_cache_are_rotated_correctly(hw):
    short = hw.RotaryPositionalEmbedding(8, max_seq_len=4)
    x = torch.randn(1, 1, 20, 8)
    torch.testing.assert_close(short(x, start_pos=3), rope_by_formula(x, start_pos=3), atol=1e-5, rtol=1e-5)
    assert short.max_seq_len >= 23


@pytest.mark.parametrize("bad", [-1, -100])
def test_negative_start_pos_is_refused(hw, bad):
    with pytest.raises(ValueError, match="start_pos"):
        hw.RotaryPositionalEmbedding(8)(torch.randn(1, 1, 2, 8), start_pos=bad)


def test_odd_head_dim_is_refused(hw):
    with pytest.raises(AssertionError, match="even"):
        hw.RotaryPositionalEmbedding(5)
