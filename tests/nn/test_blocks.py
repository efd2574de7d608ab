"""Resnet, transformer and block registry against diffusers' building blocks."""

from __future__ import annotations

import pytest
import torch

from sfumato.nn.block_types import DOWN_BLOCKS, UP_BLOCKS, BlockSpec, lookup
from sfumato.nn.resnet import ResnetBlock2D
from sfumato.nn.transformer import Transformer2DModel

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("shift", ["default", "scale_shift"])
@pytest.mark.parametrize("cout", [8, 16])
def test_resnet_matches_diffusers(shift, cout):
    from diffusers.models.resnet import ResnetBlock2D as Ref

    torch.manual_seed(0)
    ref = Ref(
        in_channels=8,
        out_channels=cout,
        temb_channels=12,
        groups=4,
        eps=1e-5,
        time_embedding_norm=shift,
        output_scale_factor=1.5,
    ).eval()
    ours = ResnetBlock2D(8, cout, 12, groups=4, eps=1e-5, time_embedding_norm=shift, output_scale_factor=1.5)
    ours.load_state_dict(ref.state_dict())
    x, temb = torch.randn(2, 8, 6, 5), torch.randn(2, 12)
    torch.testing.assert_close(ours(x, temb), ref(x, temb))


@pytest.mark.parametrize("linear", [False, True])
def test_transformer_matches_diffusers(linear):
    from diffusers.models.transformers.transformer_2d import Transformer2DModel as Ref

    torch.manual_seed(0)
    kw = dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=16,
        num_layers=2,
        cross_attention_dim=10,
        norm_num_groups=4,
        use_linear_projection=linear,
    )
    ref = Ref(**kw).eval()
    ours = Transformer2DModel(**kw)
    ours.load_state_dict(ref.state_dict())
    x, ctx = torch.randn(2, 16, 4, 3), torch.randn(2, 5, 10)
    torch.testing.assert_close(ours(x, ctx), ref(x, encoder_hidden_states=ctx).sample)


def test_up_block_channels_follow_the_skips():
    spec = BlockSpec(temb_channels=8, groups=4)
    up = UP_BLOCKS["UpBlock2D"](spec, 16, 32, 24, 3, True)
    # first resnet: previous output (32) + skip of the same level (24); last: 24 + skip of the level below (16)
    assert [r.conv1.in_channels for r in up.resnets] == [32 + 24, 24 + 24, 24 + 16]
    x = up(torch.randn(1, 32, 4, 4), tuple(torch.randn(1, c, 4, 4) for c in (16, 24, 24)), torch.randn(1, 8))
    assert x.shape == (1, 24, 8, 8)


def test_down_block_returns_every_skip():
    down = DOWN_BLOCKS["DownBlock2D"](BlockSpec(temb_channels=8, groups=4), 8, 16, 2, True)
    x, skips = down(torch.randn(1, 8, 8, 8), torch.randn(1, 8))
    assert x.shape == (1, 16, 4, 4)
    assert [tuple(s.shape[1:]) for s in skips] == [(16, 8, 8), (16, 8, 8), (16, 4, 4)]


def test_unknown_block_type_lists_the_supported_ones():
    with pytest.raises(
        NotImplementedError, match=r"down_block_types: block type 'KDownBlock2D'.*DownBlock2D"
    ):
        lookup(DOWN_BLOCKS, "KDownBlock2D", "down_block_types")
    assert lookup(DOWN_BLOCKS, "UNetResDownBlock2D", "x") is DOWN_BLOCKS["DownBlock2D"]
