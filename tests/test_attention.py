"""Attention against torch's scaled_dot_product_attention, a per-head loop, and its masking properties."""
import pytest
import torch
import torch.nn.functional as F
from test_rope import rope_by_formula

SHAPES = [  # (num_heads, num_kv_heads, seq_len, head_dim)
    (4, 4, 7, 8), (4, 2, 9, 8), (8, 2, 16, 4), (6, 1, 5, 16), (4, 1, 1, 8),
]


def sdpa_reference(q, k, v, key_weights, mask):
    """torch's attention on RoPE'd inputs, KV heads repeated for their query heads, the key weight on K."""
    group = q.shape[1] // k.shape[1]
    q, k = rope_by_formula(q), rope_by_formula(k)
    k = k.repeat_interleave(group, dim=1) * key_weights.view(1, -1, 1, 1)
    v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # default scale: 1/sqrt(head_dim)


def random_inputs(num_heads, num_kv_heads, seq_len, head_dim, batch=2):
    return (torch.randn(batch, num_heads, seq_len, head_dim), torch.randn(batch, num_kv_heads, seq_len, head_dim),
            torch.randn(batch, num_kv_heads, seq_len, head_dim), torch.randn(num_heads))


@pytest.mark.parametrize("shape", SHAPES)
def test_causal_attention_matches_sdpa(hw, shape):
    q, k, v, w = random_inputs(*shape)
    seq_len, head_dim = shape[2], shape[3]
    rope = hw.RotaryPositionalEmbedding(head_dim)
    out = hw.calculate_attention(q, k, v, w, rope, head_dim ** -0.5, q.device)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    torch.testing.assert_close(out, sdpa_reference(q, k, v, w, causal), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("window", [0, 1, 3, 100])
def test_sliding_attention_matches_sdpa_with_a_band_mask(hw, shape, window):
    q, k, v, w = random_inputs(*shape)
    seq_len, head_dim = shape[2], shape[3]
    rope = hw.RotaryPositionalEmbedding(head_dim)
    out = hw.calculate_sliding_attention(q, k, v, w, rope, head_dim ** -0.5, q.device, window)
    i, j = torch.arange(seq_len).view(-1, 1), torch.arange(seq_len).view(1, -1)
    band = (j <= i) & (i - j <= window)
    torch.testing.assert_close(out, sdpa_reference(q, k, v, w, band), atol=1e-5, rtol=1e-4)


def visible_keys(attention_fn, seq_len, query):
    """The key positions whose values reach the output of `query`, found by perturbing each value alone."""
    q, k, v, w = random_inputs(2, 2, seq_len, 8, batch=1)
    base = attention_fn(q, k, v, w)
    seen = []
    for key in range(seq_len):
        v2 = v.clone()
        v2[:, :, key] += 1.0
        if not torch.allclose(attention_fn(q, k, v2, w)[:, :, query], base[:, :, query]):
            seen.append(key)
    return seen


def test_causal_attention_sees_exactly_the_past_and_present(hw):
    rope = hw.RotaryPositionalEmbedding(8)

    def attend(q, k, v, w):
        return hw.calculate_attention(q, k, v, w, rope, 8 ** -0.5, q.device)

    for query in (0, 5, 11):
        assert visible_keys(attend, 12, query) == list(range(query + 1))


@pytest.mark.parametrize("window", [0, 2, 5])
def test_sliding_window_reaches_exactly_window_plus_one_keys(hw, window):
    rope = hw.RotaryPositionalEmbedding(8)

    def attend(q, k, v, w):
        return hw.calculate_sliding_attention(q, k, v, w, rope, 8 ** -0.5, q.device, window)

    for query in (0, 3, 11):
        assert visible_keys(attend, 12, query) == list(range(max(0, query - window), query + 1))


def test_additive_mask_equals_boolean_mask(hw):
    q, k, v, w = random_inputs(4, 2, 6, 8)
    rope = hw.RotaryPositionalEmbedding(8)
    allowed = torch.rand(6, 6) > 0.5
    allowed |= torch.eye(6, dtype=torch.bool)
    additive = torch.zeros(6, 6).masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(
        hw.calculate_attention(q, k, v, w, rope, 0.3, q.device, mask=allowed),
        hw.calculate_attention(q, k, v, w, rope, 0.3, q.device, mask=additive),
    )


def test_a_mask_row_with_no_visible_key_is_refused(hw):
    q, k, v, w = random_inputs(2, 2, 3, 8)
    mask = torch.ones(3, 3, dtype=torch.bool).tril()
    mask[1] = False
    with pytest.raises(ValueError, match="mask"):
        hw.calculate_attention(q, k, v, w, hw.RotaryPositionalEmbedding(8), 0.3, q.device, mask=mask)


def test_key_weights_of_the_wrong_shape_are_refused(hw):
    q, k, v, _ = random_inputs(4, 2, 3, 8)
    with pytest.raises(ValueError, match="key_weights"):
        hw.calculate_attention(q, k, v, torch.ones(2), hw.RotaryPositionalEmbedding(8), 0.3, q.device)


def test_negative_window_is_refused(hw):
    q, k, v, w = random_inputs(2, 2, 3, 8)
    with pytest.raises(ValueError, match="window_size"):
        hw.calculate_sliding_attention(q, k, v, w, hw.RotaryPositionalEmbedding(8), 0.3, q.device, -1)


def attention_head_by_head(module, x, window=None):
    """The module's forward written as a loop over query heads, straight from the formula."""
    batch, seq_len, _ = x.shape
    d = module.head_dim
    group = module.num_heads // getattr(module, "num_kv_heads", module.num_heads)
    q = module.q_proj(x).view(batch, seq_len, -1, d).transpose(1, 2)
    k = module.k_proj(x).view(batch, seq_len, -1, d).transpose(1, 2)
    v = module.v_proj(x).view(batch, seq_len, -1, d).transpose(1, 2)
    i, j = torch.arange(seq_len).view(-1, 1), torch.arange(seq_len).view(1, -1)
    allowed = (j <= i) if window is None else (j <= i) & (i - j <= window)
    heads = []
    for h in range(module.num_heads):
        q_h = rope_by_formula(q[:, h])
        k_h = module.key_weights[h] * rope_by_formula(k[:, h // group])
        scores = (q_h @ k_h.transpose(-1, -2)) / d ** 0.5
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        heads.append(weights @ v[:, h // group])
    return module.o_proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, None), (4, 2), (4, 1), (6, 3)])
def test_grouped_query_attention_module_matches_a_loop_over_heads(hw, num_heads, num_kv_heads):
    module = hw.GroupedQueryAttention(32, num_heads, 8, num_kv_heads)
    with torch.no_grad():
        module.key_weights.uniform_(0.5, 2.0)
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(module(x), attention_head_by_head(module, x), atol=1e-5, rtol=1e-4)
    assert module.key_weights.shape == (num_heads,) and module.key_weights.requires_grad


def test_sliding_window_module_matches_a_loop_over_heads(hw):
    module = hw.SWAttention(32, 4, 8, window_size=3)
    with torch.no_grad():
        module.key_weights.uniform_(0.5, 2.0)
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(module(x), attention_head_by_head(module, x, window=3), atol=1e-5, rtol=1e-4)


def test_kv_heads_shrink_the_key_and_value_projections(hw):
    module = hw.GroupedQueryAttention(32, 8, 4, num_kv_heads=2)
    assert module.k_proj.out_features == module.v_proj.out_features == 2 * 4
    assert module.q_proj.out_features == 8 * 4


def test_key_weights_receive_gradients(hw):
    module = hw.GroupedQueryAttention(16, 4, 4, num_kv_heads=2)
    module(torch.randn(2, 5, 16)).square().sum().backward()
    assert module.key_weights.grad is not None and module.key_weights.grad.abs().sum() > 0
