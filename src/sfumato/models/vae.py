"""Encoder and decoder of the KL autoencoder (Rombach et al. 2022), named like the checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import Tensor, nn

from ..nn.activations import get_activation
from ..nn.block_types import DOWN_BLOCKS, MID_BLOCKS, UP_BLOCKS, BlockSpec, lookup

_EPS = 1e-6  # the VAE's GroupNorm epsilon, fixed (not in its config)


class Encoder(nn.Module):
    """image (B, 3, H, W) → conv_in → down stages → mid (resnet, attention, resnet) → (B, 2·latent, H/f, W/f)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool = True,
    ):
        super().__init__()
        spec = BlockSpec(eps=_EPS, act_fn=act_fn, groups=norm_num_groups, downsample_padding=0)
        channels = list(block_out_channels)
        n = len(channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            lookup(DOWN_BLOCKS, name, "down_block_types")(
                spec, channels[max(i - 1, 0)], channels[i], layers_per_block, i < n - 1
            )
            for i, name in enumerate(block_types)
        )
        mid = replace(spec, add_attention=mid_block_add_attention)
        self.mid_block = MID_BLOCKS["UNetMidBlock2D"](mid, channels[-1], 1)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[-1], eps=_EPS)
        self.conv_act = get_activation(act_fn)
        self.conv_out = nn.Conv2d(channels[-1], 2 * out_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(h)
        h = self.mid_block(h)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """latents (B, latent, h, w) → conv_in → mid → up stages (deepest first) → image (B, 3, h·f, w·f)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool = True,
    ):
        super().__init__()
        spec = BlockSpec(eps=_EPS, act_fn=act_fn, groups=norm_num_groups)
        rev = list(reversed(block_out_channels))
        n = len(rev)
        self.conv_in = nn.Conv2d(in_channels, rev[0], kernel_size=3, padding=1)
        mid = replace(spec, add_attention=mid_block_add_attention)
        self.mid_block = MID_BLOCKS["UNetMidBlock2D"](mid, rev[0], 1)
        self.up_blocks = nn.ModuleList(
            lookup(UP_BLOCKS, name, "up_block_types")(
                spec, rev[max(i - 1, 0)], None, rev[i], layers_per_block + 1, i < n - 1
            )
            for i, name in enumerate(block_types)
        )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=_EPS)
        self.conv_act = get_activation(act_fn)
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid_block(self.conv_in(z))
        # the up stages may be kept in a higher precision than the rest (diffusers' upcast convention)
        h = h.to(self.up_blocks[0].resnets[0].conv1.weight.dtype)
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(
            self.conv_act(self.conv_norm_out(h))
        ).contiguous()  # NCHW even from channels-last
