"""Downsampling (strided conv) and upsampling (nearest ×2 then conv) by a factor of two."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Downsample2D(nn.Module):
    """3×3 conv with stride 2; `padding=0` pads right/bottom by one (the original DDPM/VAE convention)."""

    def __init__(self, channels: int, out_channels: int | None = None, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, out_channels or channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour ×2 (or to `output_size`, for inputs not divisible by the UNet's factor) + 3×3 conv."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, output_size: tuple[int, int] | torch.Size | None = None) -> Tensor:
        if output_size is None:
            # runtime.packing's convolutions can enlarge their input band by band (same numbers,
            # without the 4x larger map): the VAE's largest tensors at 512 px
            fused = getattr(self.conv, "forward_upsampled", None)
            out = fused(x, 2) if fused is not None else None
            if out is not None:
                return out
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(output_size), mode="nearest")
        return self.conv(x)
