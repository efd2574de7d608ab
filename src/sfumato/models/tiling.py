"""Overlapping-tile processing for large images: run a function per tile, cross-fade the seams.

Reproduces diffusers' VAE tiling exactly: tiles start every `stride` pixels, each tile is blended
linearly with the one above and the one to its left over `blend` output pixels (in place, so a
left neighbour is already blended with its upper neighbour), then cropped to `keep` pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _ramp(n: int, like: Tensor) -> Tensor:
    return torch.arange(n, dtype=torch.float64, device=like.device) / n  # y / n for y in 0..n-1


def blend_v(a: Tensor, b: Tensor, extent: int) -> Tensor:
    """Cross-fade the bottom rows of `a` into the top rows of `b` (in place on `b`)."""
    extent = min(a.shape[2], b.shape[2], extent)
    if extent > 0:
        w = _ramp(extent, b)[:, None]  # (extent, 1)
        b[:, :, :extent, :] = a[:, :, -extent:, :] * (1 - w).to(b.dtype) + b[:, :, :extent, :] * w.to(b.dtype)
    return b


def blend_h(a: Tensor, b: Tensor, extent: int) -> Tensor:
    """Cross-fade the right columns of `a` into the left columns of `b` (in place on `b`)."""
    extent = min(a.shape[3], b.shape[3], extent)
    if extent > 0:
        w = _ramp(extent, b)
        b[:, :, :, :extent] = a[:, :, :, -extent:] * (1 - w).to(b.dtype) + b[:, :, :, :extent] * w.to(b.dtype)
    return b


def tiled_apply(
    x: Tensor, fn: Callable[[Tensor], Tensor], tile: int, stride: int, blend: int, keep: int
) -> Tensor:
    """`fn` applied to `tile`×`tile` windows of `x` every `stride` pixels, seams blended over `blend`."""
    if stride <= 0:
        raise ValueError(f"tile stride must be positive; got tile size {tile} and stride {stride}")
    rows = [
        [fn(x[:, :, i : i + tile, j : j + tile]) for j in range(0, x.shape[3], stride)]
        for i in range(0, x.shape[2], stride)
    ]
    out_rows = []
    for i, row in enumerate(rows):
        out_row = []
        for j, t in enumerate(row):
            if i > 0:
                t = blend_v(rows[i - 1][j], t, blend)
            if j > 0:
                t = blend_h(row[j - 1], t, blend)
            out_row.append(t[:, :, :keep, :keep])
        out_rows.append(torch.cat(out_row, dim=3))
    return torch.cat(out_rows, dim=2)
