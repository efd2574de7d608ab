"""Config block-type names (`"CrossAttnDownBlock2D"`, …) → builders of `DownStage`/`MidStage`/`UpStage`.

A `BlockSpec` carries the settings a model shares between its blocks; each builder reads the
ones it needs, so the UNets and the VAE assemble themselves from the same three tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .attention import Attention
from .blocks import DownStage, MidStage, UpStage
from .resampling import Downsample2D, Upsample2D
from .resnet import ResnetBlock2D
from .transformer import Transformer2DModel


@dataclass
class BlockSpec:
    """Settings of one block. `heads` is the transformer head count; `attention_head_dim` the
    per-head width of the spatial attention of DDPM-style blocks."""

    temb_channels: int | None = None
    eps: float = 1e-5
    act_fn: str = "silu"
    groups: int | None = 32
    dropout: float = 0.0
    time_scale_shift: str = "default"
    output_scale_factor: float = 1.0
    downsample_padding: int = 1
    # spatial attention (AttnDownBlock2D, UNetMidBlock2D)
    attention_head_dim: int | None = None
    attn_groups: int | None = None
    add_attention: bool = True
    # transformers (CrossAttn*)
    heads: int = 1
    transformer_layers: int | Sequence[int] = 1
    cross_attention_dim: int | None = None
    use_linear_projection: bool = False
    only_cross_attention: bool = False

    def resnet(self, cin: int, cout: int, output_scale_factor: float = 1.0) -> ResnetBlock2D:
        return ResnetBlock2D(
            cin,
            cout,
            self.temb_channels,
            self.groups,
            self.eps,
            self.dropout,
            self.act_fn,
            self.time_scale_shift,
            output_scale_factor,
        )

    def spatial_attention(self, channels: int, groups: int | None, rescale: float = 1.0) -> Attention:
        head_dim = self.attention_head_dim if self.attention_head_dim is not None else channels
        return Attention(
            channels,
            heads=channels // head_dim,
            dim_head=head_dim,
            bias=True,
            norm_num_groups=groups,
            eps=self.eps,
            residual_connection=True,
            rescale_output_factor=rescale,
        )

    def transformer(self, channels: int, layer: int) -> Transformer2DModel:
        layers = self.transformer_layers
        depth = layers if isinstance(layers, int) else layers[layer]
        return Transformer2DModel(
            self.heads,
            channels // self.heads,
            channels,
            depth,
            self.cross_attention_dim,
            self.groups,
            self.use_linear_projection,
            self.only_cross_attention,
        )


DownBuilder = Callable[[BlockSpec, int, int, int, bool], DownStage]
UpBuilder = Callable[[BlockSpec, int, int, int, int, bool], UpStage]


def _down(attention: str | None, with_temb: bool = True) -> DownBuilder:
    def build(spec: BlockSpec, cin: int, cout: int, num_layers: int, add_downsample: bool) -> DownStage:
        if not with_temb:
            spec = replace(spec, temb_channels=None)
        resnets = [spec.resnet(cin if i == 0 else cout, cout) for i in range(num_layers)]
        attentions = None
        if attention == "cross":
            attentions = [spec.transformer(cout, i) for i in range(num_layers)]
        elif attention == "spatial":
            attentions = [spec.spatial_attention(cout, spec.groups) for _ in range(num_layers)]
        down = Downsample2D(cout, cout, spec.downsample_padding) if add_downsample else None
        return DownStage(resnets, attentions, down, cross_attention=attention == "cross")

    return build


def _up(attention: str | None, with_temb: bool = True) -> UpBuilder:
    def build(
        spec: BlockSpec, cin: int, prev: int | None, cout: int, num_layers: int, add_upsample: bool
    ) -> UpStage:
        if not with_temb:  # decoder blocks: no skips, no time embedding
            spec = replace(spec, temb_channels=None)
            resnets = [spec.resnet(cin if i == 0 else cout, cout) for i in range(num_layers)]
        else:
            # resnet i reads the previous output (or the block below) concatenated with a skip
            resnets = [
                spec.resnet((prev if i == 0 else cout) + (cin if i == num_layers - 1 else cout), cout)
                for i in range(num_layers)
            ]
        attentions = None
        if attention == "cross":
            attentions = [spec.transformer(cout, i) for i in range(num_layers)]
        elif attention == "spatial":
            attentions = [spec.spatial_attention(cout, spec.groups) for _ in range(num_layers)]
        up = Upsample2D(cout, cout) if add_upsample else None
        return UpStage(resnets, attentions, up, cross_attention=attention == "cross")

    return build


def _mid_spatial(spec: BlockSpec, channels: int, num_layers: int = 1) -> MidStage:
    groups = spec.groups if spec.groups is not None else min(channels // 4, 32)
    spec = replace(spec, groups=groups)
    scale = spec.output_scale_factor
    resnets = [spec.resnet(channels, channels, scale) for _ in range(num_layers + 1)]
    attentions = None
    if spec.add_attention and num_layers > 0:
        attn_groups = spec.attn_groups
        if attn_groups is None:  # diffusers: no norm before the attention with a scale/shift time embedding
            attn_groups = groups if spec.time_scale_shift == "default" else None
        attentions = [spec.spatial_attention(channels, attn_groups, scale) for _ in range(num_layers)]
    return MidStage(resnets, attentions, cross_attention=False)


def _mid_cross(spec: BlockSpec, channels: int, num_layers: int = 1) -> MidStage:
    groups = spec.groups if spec.groups is not None else min(channels // 4, 32)
    spec = replace(spec, groups=groups)
    scale = spec.output_scale_factor
    resnets = [spec.resnet(channels, channels, scale) for _ in range(num_layers + 1)]
    attentions = [spec.transformer(channels, i) for i in range(num_layers)]
    return MidStage(resnets, attentions, cross_attention=True)


DOWN_BLOCKS: dict[str, DownBuilder] = {
    "DownBlock2D": _down(None),
    "CrossAttnDownBlock2D": _down("cross"),
    "AttnDownBlock2D": _down("spatial"),
    "DownEncoderBlock2D": _down(None, with_temb=False),
    "AttnDownEncoderBlock2D": _down("spatial", with_temb=False),
}
UP_BLOCKS: dict[str, UpBuilder] = {
    "UpBlock2D": _up(None),
    "CrossAttnUpBlock2D": _up("cross"),
    "AttnUpBlock2D": _up("spatial"),
    "UpDecoderBlock2D": _up(None, with_temb=False),
    "AttnUpDecoderBlock2D": _up("spatial", with_temb=False),
}
MID_BLOCKS: dict[str, Callable[..., MidStage]] = {
    "UNetMidBlock2D": _mid_spatial,
    "UNetMidBlock2DCrossAttn": _mid_cross,
}


def lookup(table: dict[str, Callable], name: str, option: str) -> Callable:
    """The builder for a block-type name from a config (diffusers' `UNetRes` prefix accepted)."""
    key = name.removeprefix("UNetRes")
    if key not in table:
        raise NotImplementedError(
            f"{option}: block type {name!r} is not supported; supported: {sorted(table)}"
        )
    return table[key]
