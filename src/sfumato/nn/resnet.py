"""The residual block of DDPM / Stable Diffusion UNets and VAEs (`ResnetBlock2D` in checkpoints)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .activations import get_activation

TimeScaleShift = Literal["default", "scale_shift"]


class ResnetBlock2D(nn.Module):
    """GroupNorm → act → conv → (+ time embedding, or FiLM scale/shift) → GroupNorm → act → conv, plus skip.

    `time_embedding_norm="scale_shift"` makes `time_emb_proj` output 2C values (scale, shift) applied
    after `norm2`; the sum with the skip is divided by `output_scale_factor`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        temb_channels: int | None = 512,
        groups: int = 32,
        eps: float = 1e-6,
        dropout: float = 0.0,
        non_linearity: str = "silu",
        time_embedding_norm: TimeScaleShift = "default",
        output_scale_factor: float = 1.0,
        skip_time_act: bool = False,
    ):
        super().__init__()
        if time_embedding_norm not in ("default", "scale_shift"):
            raise NotImplementedError(f"resnet_time_scale_shift={time_embedding_norm!r} is not supported")
        out_channels = out_channels or in_channels
        self.time_embedding_norm = time_embedding_norm
        self.output_scale_factor = output_scale_factor
        self.skip_time_act = skip_time_act
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = None
        if temb_channels is not None:
            factor = 2 if time_embedding_norm == "scale_shift" else 1
            self.time_emb_proj = nn.Linear(temb_channels, factor * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = get_activation(non_linearity)
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        # Without autograd, activations and sums reuse their input's buffer: a 512 px VAE decode
        # otherwise zero-fills and page-faults gigabytes of fresh activations. Same arithmetic.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(self._act(self.norm1(x), inplace))
        if self.time_emb_proj is not None and temb is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            temb = self.time_emb_proj(temb)[:, :, None, None]  # (B, C or 2C, 1, 1)
        else:
            temb = None
        if self.time_embedding_norm == "scale_shift":
            if temb is None:
                raise ValueError("a ResnetBlock2D with time scale/shift needs a time embedding")
            scale, shift = temb.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            if temb is not None:
                h = h.add_(temb) if inplace else h + temb
            h = self.norm2(h)
        h = self.conv2(self.dropout(self._act(h, inplace)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        out = h.add_(x) if inplace else x + h  # float addition commutes: same result either way
        if self.output_scale_factor == 1:
            return out
        return out.div_(self.output_scale_factor) if inplace else out / self.output_scale_factor

    def _act(self, h: Tensor, inplace: bool) -> Tensor:
        if inplace and type(self.nonlinearity) is nn.SiLU:
            return F.silu(h, inplace=True)
        return self.nonlinearity(h)
