"""FreeU (Si et al., 2023, arXiv:2309.11497): re-weighting what a UNet's decoder adds up, without training.

In the first two up stages (the two lowest resolutions), before each skip is joined to the
backbone's features:
- the first half of the backbone's channels is multiplied by `backbone` (b1, b2 > 1: more of the
  denoising backbone);
- the skip's lowest spatial frequencies are multiplied by `skip` (s1, s2 < 1: less of the
  low-frequency content the encoder passes across).

"Lowest frequencies" is the 2x2 block that a centred mask of half-width 1 covers in the shifted
spectrum, as in diffusers: the frequencies 0 and -1 along each axis. Scaling those four bins of the
unshifted spectrum is the same operation without the two shifts. The transform runs in float32 for
half-precision inputs (CPU FFTs do not take them) and returns the input's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor


def freeu(x: Tensor, skip: Tensor, backbone: float, skip_scale: float) -> tuple[Tensor, Tensor]:
    """(`x` with its first half of channels times `backbone`, `skip` with its lowest frequencies times `skip_scale`)."""
    # a new tensor, not `x` scaled in place: without a mid block `x` is also the last skip
    factors = x.new_ones(x.shape[1], 1, 1)
    factors[: x.shape[1] // 2] = backbone
    return x * factors, scale_low_frequencies(skip, skip_scale)


def scale_low_frequencies(x: Tensor, scale: float) -> Tensor:
    """`x` (..., H, W) with the spatial frequencies {0, -1} x {0, -1} multiplied by `scale`."""
    height, width = x.shape[-2:]
    exact = x.dtype in (torch.float32, torch.float64)
    spectrum = torch.fft.fft2(x if exact else x.float())
    for row in {0, height - 1}:  # one bin when the axis has length 1
        for col in {0, width - 1}:
            spectrum[..., row, col] *= scale
    return torch.fft.ifft2(spectrum).real.to(x.dtype)
