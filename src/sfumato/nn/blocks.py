"""The three UNet / VAE stage shapes: down (resnets → skips → downsample), mid, and up (skips in).

Every config block type (`CrossAttnDownBlock2D`, `UpDecoderBlock2D`, …) is one of these three
containers filled with different layers; `block_types.py` holds the name → builder table. Module
names (`resnets`, `attentions`, `downsamplers`, `upsamplers`) equal the checkpoint keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .freeu import freeu


@dataclass
class CrossAttnInputs:
    """What the transformer layers read besides the feature map: text context and attention biases."""

    context: Tensor | None = None  # (B, M, cross_attention_dim)
    self_bias: Tensor | None = None  # (B, 1, 1, HW) additive, for the self-attention
    cross_bias: Tensor | None = None  # (B, 1, 1, M) additive, for the cross-attention


class _Stage(nn.Module):
    """Shared forward helpers: optional gradient checkpointing and attention dispatch."""

    gradient_checkpointing: bool = False

    def __init__(self, resnets: list[nn.Module], attentions: list[nn.Module] | None, cross_attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        if attentions is not None:
            self.attentions = nn.ModuleList(attentions)
        else:
            self.attentions = None
        self.has_cross_attention = cross_attention

    def _call(self, module: nn.Module, *args: object) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(module, *args, use_reentrant=False)
        return module(*args)

    def _resnet(self, i: int, x: Tensor, temb: Tensor | None) -> Tensor:
        return self._call(self.resnets[i], x, temb)

    def _attend(self, i: int, x: Tensor, cond: CrossAttnInputs | None, widen_to: int | None = None) -> Tensor:
        attn = self.attentions[i]
        if not self.has_cross_attention:
            return self._call(attn, x)
        cond = cond or CrossAttnInputs()
        if widen_to is not None:  # `DownStage.forward`'s shared_batch
            return self._call(attn, x, cond.context, cond.self_bias, cond.cross_bias, widen_to)
        return self._call(attn, x, cond.context, cond.self_bias, cond.cross_bias)


class DownStage(_Stage):
    """resnet (→ attention) × n, each output kept as a skip; then an optional downsampler (also a skip)."""

    def __init__(
        self,
        resnets: list[nn.Module],
        attentions: list[nn.Module] | None = None,
        downsampler: nn.Module | None = None,
        cross_attention: bool = False,
    ):
        super().__init__(resnets, attentions, cross_attention)
        self.downsamplers = nn.ModuleList([downsampler]) if downsampler is not None else None

    def forward(
        self,
        x: Tensor,
        temb: Tensor | None = None,
        cond: CrossAttnInputs | None = None,
        additional_residual: Tensor | None = None,
        shared_batch: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """`shared_batch`: `x` holds the first 1/k of a batch of that size whose k parts are equal up
        to the text context, and `temb` the whole batch's (equal parts too); the first resnet and the
        first attention's self-attention run on that part alone (`Transformer2DModel.forward`)."""
        skips = []
        for i in range(len(self.resnets)):
            widen_to = shared_batch if i == 0 else None
            part_temb = temb[: x.shape[0]] if widen_to is not None and temb is not None else temb
            x = self._resnet(i, x, part_temb)
            if self.attentions is not None:
                x = self._attend(i, x, cond, widen_to)
            if additional_residual is not None and i == len(self.resnets) - 1:
                x = x + additional_residual  # T2I-Adapter features enter after the last layer
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, tuple(skips)


class MidStage(_Stage):
    """resnet, then (attention → resnet) × n."""

    def forward(self, x: Tensor, temb: Tensor | None = None, cond: CrossAttnInputs | None = None) -> Tensor:
        x = self._resnet(0, x, temb)
        for i in range(1, len(self.resnets)):
            if self.attentions is not None:
                x = self._attend(i - 1, x, cond)
            x = self._resnet(i, x, temb)
        return x


class UpStage(_Stage):
    """(concat a skip →) resnet (→ attention) × n, then an optional upsampler.

    `freeu`: (backbone factor, skip factor) applied before each skip is joined (`nn.freeu`), set by
    `UNet2DConditionModel.enable_freeu` on the first two up stages; None (the default) leaves both as they are.
    """

    freeu: tuple[float, float] | None = None

    def __init__(
        self,
        resnets: list[nn.Module],
        attentions: list[nn.Module] | None = None,
        upsampler: nn.Module | None = None,
        cross_attention: bool = False,
    ):
        super().__init__(resnets, attentions, cross_attention)
        self.upsamplers = nn.ModuleList([upsampler]) if upsampler is not None else None

    def forward(
        self,
        x: Tensor,
        skips: tuple[Tensor, ...] = (),
        temb: Tensor | None = None,
        cond: CrossAttnInputs | None = None,
        upsample_size: tuple[int, int] | None = None,
    ) -> Tensor:
        skips = list(skips)
        for i in range(len(self.resnets)):
            if skips:
                skip = skips.pop()
                if self.freeu is not None:
                    x, skip = freeu(x, skip, *self.freeu)
                x = torch.cat([x, skip], dim=1)
            x = self._resnet(i, x, temb)
            if self.attentions is not None:
                x = self._attend(i, x, cond)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x
