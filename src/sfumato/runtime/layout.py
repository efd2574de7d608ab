"""bfloat16 convolutions on large maps computed channels-last, NCHW in and NCHW out (exact mode).

Given an NCHW bfloat16 input, torch's oneDNN convolution computes channels-last inside and copies its
output back to NCHW with a strided copy that ran at 0.5-0.7 GB/s on maps larger than the cache (a
Xeon with AMX: 54 ms of a 123 ms convolution of 256 channels at 256x256, whose arithmetic took
42 ms). The same convolution of a channels-last copy of the input, its output copied back tile by
tile (`to_channels_first`, 4-6x faster than one strided copy), took 80 ms, with the same values bit
for bit: only the layout of the operands changes, not the kernel or its summation order. A
GroupNorm, though, sums a channels-last input in another order, so the output goes back to NCHW
for the ops that follow, as exact mode's results must equal diffusers' bit for bit.

Where it pays (`channels_last_pays`, measured interleaved on that Xeon, output channels-last
against plain): on maps of 64x64 and more when a convolution does not narrow many channels (0.47-0.78x
the time for the VAE's 128-512 channels, 3x3 and 1x1, and the UNet's 320 at 128x128; 0.64-1.03x
for the UNet's 320 at 64x64), but not when it halves 512 or more channels (512 to 256 at 128x128
and 256x256: 0.96-1.1x; 640 to 320 at 64x64 and 128x128: 1.25-2x) nor on maps of 32x32 and less
(1.2-1.4x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# smallest map (pixels) and widest narrowing input (channels) on which the route pays
_MIN_AREA = 64 * 64
_MAX_NARROWED = 256
_TILE_BYTES = 512 << 10  # one tile of the copy back: in L2 with room for its output rows


def channels_last_pays(in_channels: int, out_channels: int, height: int, width: int) -> bool:
    """Whether a bfloat16 convolution of this shape runs faster channels-last (see the module docstring)."""
    return height * width >= _MIN_AREA and (in_channels <= out_channels or in_channels <= _MAX_NARROWED)


def conv2d_channels_last(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, ...]
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` (stride 1) of an NCHW `x`, computed channels-last,
    returned NCHW with the same values."""
    out = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, padding=padding)
    return to_channels_first(out)


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    """An NCHW-contiguous copy of a channels-last `x`, made a tile of pixels at a time.

    One strided copy writes each output cache line from pixels a whole channel apart, which misses
    the cache on every element of a large map; a tile of ~512 KiB of pixels, all channels, stays in
    L2 while its rows are written.
    """
    n, channels, height, width = x.shape
    pixels = height * width
    out = torch.empty((n, channels, height, width), dtype=x.dtype, device=x.device)
    source = x.permute(0, 2, 3, 1).reshape(n, pixels, channels)  # a view of channels-last memory
    target = out.view(n, channels, pixels)
    step = max(64, _TILE_BYTES // (channels * x.element_size()))
    for start in range(0, pixels, step):
        target[:, :, start : start + step].copy_(source[:, start : start + step].transpose(1, 2))
    return out
