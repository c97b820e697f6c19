"""The appendix notebook's generate_with_cache against the homework's graded generate."""
import functools

import pytest
import torch


@pytest.mark.parametrize("options", [
    {},
    {"num_kv_heads": 2},
    {"use_sliding_window_alternating": True, "window_size": 3},  # 6 + 20 tokens: well past the window
    {"use_sliding_window_alternating": True, "window_size": 3, "num_kv_heads": 2, "use_moe": True,
     "num_experts": 4, "top_k": 2},
])
def test_cached_greedy_tokens_equal_generate(hw, appendix_code, options):
    model = hw.Transformer(vocab_size=9, n_layers=4, hidden_dim=32, ff_dim=48, num_heads=4, head_dim=8, **options)
    prompt = torch.randint(0, 9, (3, 6))
    assert torch.equal(appendix_code.generate_with_cache(model, prompt, 20), hw.generate(model, prompt, 20))


def test_cached_sampling_draws_the_same_tokens_from_the_same_seed(hw, appendix_code):
    model = hw.Transformer(vocab_size=9, n_layers=2, hidden_dim=32, ff_dim=48, num_heads=4, head_dim=8)
    prompt = torch.randint(0, 9, (4, 5))
    choice = functools.partial(hw.token_choice_adv, top_p=0.9, t=1.3)
    torch.manual_seed(3)
    cached = appendix_code.generate_with_cache(model, prompt, 12, token_choice=choice)
    torch.manual_seed(3)
    assert torch.equal(cached, hw.generate(model, prompt, 12, token_choice=choice))


def test_zero_new_tokens_is_an_empty_tensor_and_negative_is_refused(hw, appendix_code):
    model = hw.Transformer(vocab_size=9, n_layers=1, hidden_dim=16, ff_dim=16, num_heads=2, head_dim=8)
    assert appendix_code.generate_with_cache(model, torch.zeros(2, 3, dtype=torch.long), 0).shape == (2, 0)
    with pytest.raises(ValueError, match="gen_length"):
        appendix_code.generate_with_cache(model, torch.zeros(2, 3, dtype=torch.long), -1)
