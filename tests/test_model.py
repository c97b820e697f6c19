"""The whole model: causality, the pre-norm residual structure, layer layout, and input checks."""
import pytest
import torch

VOCAB = 11


def small_model(hw, **options):
    return hw.Transformer(vocab_size=VOCAB, n_layers=4, hidden_dim=32, ff_dim=48, num_heads=4, head_dim=8,
                          **options)


@pytest.mark.parametrize("options", [
    {}, {"num_kv_heads": 2}, {"use_moe": True, "num_experts": 4, "top_k": 2},
    {"use_sliding_window_alternating": True, "window_size": 3},
])
def test_no_position_sees_the_future(hw, options):
    model = small_model(hw, **options).eval()
    x = torch.randint(0, VOCAB, (2, 12))
    base = model(x)
    for pos in (0, 5, 11):
        changed = x.clone()
        changed[:, pos] = (changed[:, pos] + 1) % VOCAB
        out = model(changed)
        torch.testing.assert_close(out[:, :pos], base[:, :pos])
        assert not torch.allclose(out[:, pos], base[:, pos])


def test_sliding_window_blocks_sit_at_odd_indices(hw):
    model = small_model(hw, use_sliding_window_alternating=True, window_size=5, num_kv_heads=2)
    kinds = [type(layer.attention).__name__ for layer in model.layers]
    assert kinds == ["GroupedQueryAttention", "SWAttention"] * 2
    assert all(layer.attention.window_size == 5 for layer in model.layers[1::2])
    assert model.layers[0].attention.num_kv_heads == 2


def test_a_sliding_window_block_sees_exactly_its_window(hw):
    block = hw.SWAttention(16, 2, 8, window_size=2)
    x = torch.randn(1, 10, 16)
    base = block(x)
    changed = x.clone()
    changed[:, 4] += 1.0
    moved = [pos for pos in range(10) if not torch.allclose(block(changed)[:, pos], base[:, pos])]
    assert moved == [4, 5, 6]


def test_moe_and_dense_layouts(hw):
    assert all(isinstance(layer.ffn, hw.MixtureOfExperts) for layer in small_model(hw, use_moe=True).layers)
    assert all(isinstance(layer.ffn, hw.SwiGLUFeedForward) for layer in small_model(hw).layers)


class Recorder(torch.nn.Module):
    """Stands in for a sublayer: remembers its input and returns a fixed function of it."""

    def __init__(self, scale):
        super().__init__()
        self.scale, self.inputs = scale, []

    def forward(self, x):
        self.inputs.append(x)
        return self.scale * torch.tanh(x)


def test_block_is_pre_norm_with_residuals(hw):
    block = hw.TransformerBlock(16, 32, 2, 8)
    with torch.no_grad():
        block.attention_norm.weight.uniform_(0.5, 1.5)
        block.ffn_norm.weight.uniform_(0.5, 1.5)
    block.attention, block.ffn = Recorder(0.7), Recorder(-1.3)
    x = 3.0 * torch.randn(2, 5, 16)

    def rms_norm(t, gain):
        return t / t.pow(2).mean(-1, keepdim=True).add(torch.finfo(t.dtype).eps).sqrt() * gain

    after_attention = x + 0.7 * torch.tanh(rms_norm(x, block.attention_norm.weight))
    expected = after_attention - 1.3 * torch.tanh(rms_norm(after_attention, block.ffn_norm.weight))
    torch.testing.assert_close(block(x), expected)
    torch.testing.assert_close(block.attention.inputs[0], rms_norm(x, block.attention_norm.weight))


def test_model_is_embedding_blocks_final_norm_projection(hw):
    model = small_model(hw).eval()
    x = torch.randint(0, VOCAB, (2, 6))
    h = model.embedding(x)
    for layer in model.layers:
        h = layer(h)
    torch.testing.assert_close(model(x), model.output_proj(model.final_norm(h)))


@pytest.mark.parametrize("bad", [-1, VOCAB, 100])
def test_token_ids_outside_the_vocabulary_are_refused(hw, bad):
    x = torch.zeros(1, 4, dtype=torch.long)
    x[0, 2] = bad
    with pytest.raises(ValueError, match="vocab_size"):
        small_model(hw)(x)

