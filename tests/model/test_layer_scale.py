"""EncoderConfig.layer_scale / CrossModalConfig.layer_scale: residual branches scaled by learned gains."""

import torch

from lmp_model.config import CrossModalConfig, EncoderConfig
from lmp_model.modules.transformer import Block, Stack, attention_mask


def test_layer_scale_starts_each_layer_near_identity_and_learns_its_gain():
    torch.manual_seed(0)
    cfg = EncoderConfig(d=16, layers=2, heads=2, dropout=0.0, layer_scale=1e-6)
    stack = Stack(16, cfg)
    x = torch.randn(3, 5, 16)
    mask = attention_mask(torch.ones(3, 5, dtype=torch.bool))
    y = stack(x, mask)
    assert torch.allclose(y, stack.norm(x), atol=1e-4)  # every branch is ~0: the output is LN(input)
    assert all(layer.scale.shape == (2, 16) for layer in stack.layers)
    assert torch.all(stack.layers[0].scale == 1e-6)
    y.pow(2).sum().backward()
    assert stack.layers[0].scale.grad.abs().sum() > 0


def test_layer_scale_off_is_the_plain_residual_and_cross_blocks_get_three_gains():
    torch.manual_seed(0)
    plain = Block(16, EncoderConfig(d=16, heads=2, dropout=0.0))
    assert plain.scale is None
    torch.manual_seed(0)
    one = Block(16, EncoderConfig(d=16, heads=2, dropout=0.0, layer_scale=1.0))
    x = torch.randn(2, 4, 16)
    mask = attention_mask(torch.ones(2, 4, dtype=torch.bool))
    assert torch.allclose(plain(x, mask), one(x, mask), atol=1e-6)  # gains of 1 change nothing
    cross = Block(16, CrossModalConfig(heads=2, dropout=0.0, layer_scale=0.1), cross=True)
    assert cross.scale.shape == (3, 16) and torch.all(cross.scale == 0.1)
