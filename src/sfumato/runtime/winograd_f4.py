"""Winograd's F(4x4, 3x3) of our own: the transforms and the product as torch matrix products.

A 3x3 convolution over a 4x4 output tile reads a 6x6 input tile. Winograd transforms the input
tile (B^T d B) and each 3x3 weight (G g G^T) to 6x6, multiplies them elementwise and sums over
input channels, and transforms the 6x6 sums back (A^T m A): 36 multiplications per channel pair
and tile instead of 144. Summed over channels, each of the 36 tile positions is one matrix product
(output channels x input channels) @ (input channels x tiles), run by MKL near the CPU's peak; the
transforms are small dense products too (36x36 and 16x36, each the Kronecker square of the 1-D
one), so everything runs in torch's own kernels, with the CPU's widest vectors.

Why not NNPACK's F(6x6, 3x3) (`runtime.winograd`) everywhere: its kernels are AVX2, and it
transforms the weights again on every call. On an AVX-512 Xeon this one took 0.50-0.84x the time of
oneDNN's best kernel on the VAE's maps where NNPACK took 0.89-1.33x, and 0.60-0.84x on the UNet's
maps of 32x32 and more, where NNPACK took 1.0-2.4x (`bench/conv.py`).

Interpolation points 0, 1, -1, 2, -1/2 and infinity: the error of a float32 result is ~5e-6 of
the output's largest value, against ~1e-5 with 0, +-1, +-2 (the textbook choice) and ~1.7e-5 for
NNPACK; oneDNN's direct kernels give ~3e-7 (float64 reference).

The map is cut into bands of tile rows whose transformed input is about `BAND_BYTES`, so the
intermediate products stay in cache and memory stays flat: a whole 512x512 map with 128 channels at
once took 1.8x oneDNN's time, in 8 MB bands 0.62-0.73x. The buffers are kept from call to call, per
thread (at most ~190 MB for SD1.5's shapes; `release_scratch` frees them).
"""

from __future__ import annotations

import functools
import math
import threading

import torch

TILE = 4  # output rows and columns per tile
SPAN = TILE + 2  # input rows and columns per tile
POINTS = (0.0, 1.0, -1.0, 2.0, -0.5)  # plus the point at infinity
BAND_BYTES = 8 * 2**20  # transformed input per band (measured: 8 MB best on the VAE's 256-512 px maps)
WHOLE_BYTES = 32 * 2**20  # up to this, the whole batch's transformed input in one band
WEIGHT_BYTES = 64 * 2**20  # transformed weight made at once up to this, else in chunks


@functools.cache
def _transforms_1d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A^T (4x6), G (6x3) and B^T (6x6) of Toom-Cook's F(4, 3) at `POINTS`, in float64.

    A^T evaluates the output polynomial, G interpolates the kernel; B^T is what makes
    A^T [(G g) * (B^T d)] the correlation of d with g for every g and d: a linear system, solved.
    """
    n, r = SPAN, 3
    a_t = torch.zeros(TILE, n, dtype=torch.float64)
    g = torch.zeros(n, r, dtype=torch.float64)
    for j, p in enumerate(POINTS):
        a_t[:, j] = torch.tensor([p**i for i in range(TILE)], dtype=torch.float64)
        scale = 1.0
        for q in POINTS:
            if q != p:
                scale *= p - q
        g[j] = torch.tensor([p**k / scale for k in range(r)], dtype=torch.float64)
    a_t[TILE - 1, n - 1] = 1.0
    g[n - 1, r - 1] = 1.0
    # sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k] for each output i, kernel tap k and input l
    system = torch.zeros(TILE, r, n, n, n, dtype=torch.float64)  # (i, k, l) x (j, l')
    target = torch.zeros(TILE, r, n, dtype=torch.float64)
    for i in range(TILE):
        for k in range(r):
            for tap in range(n):
                system[i, k, tap, :, tap] = a_t[i] * g[:, k]
                target[i, k, tap] = float(tap == i + k)
    b_t = torch.linalg.lstsq(system.reshape(-1, n * n), target.reshape(-1, 1)).solution.reshape(n, n)
    b_t = torch.round(b_t * 8) / 8  # its entries are halves; the solver leaves ~1e-16 beside them
    return a_t, g, b_t


@functools.cache
def _transforms_2d(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as Kronecker squares: (A^T x A^T) 16x36, (G x G) 36x9, (B^T x B^T) 36x36.

    Made as normal tensors even on a first call under `torch.inference_mode()`: they are kept."""
    with torch.inference_mode(False):
        a_t, g, b_t = _transforms_1d()
        return tuple(torch.kron(m, m).to(dtype) for m in (a_t, g, b_t))  # type: ignore[return-value]


def transform_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (K, C, 3, 3) weight as the 36 (K, C) matrices of the transform domain, (36, K, C)."""
    k, c = weight.shape[:2]
    kron_g = _transforms_2d(weight.dtype)[1].to(weight.device)
    return (kron_g @ weight.reshape(k * c, 9).T).view(SPAN * SPAN, k, c)


def winograd_f4_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    upsample: int = 1,
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` for a 3x3 stride-1 convolution, by F(4x4, 3x3).

    With `upsample=k`, the convolution of `x` enlarged k times by nearest-neighbour interpolation,
    band by band, so the enlarged map never exists whole. Intermediate buffers are kept for the
    next call (`_Scratch`); each sample's values do not depend on the others in the batch beyond
    float rounding.
    """
    batch, channels, height, width = x.shape
    height, width = height * upsample, width * upsample
    out_channels = weight.shape[0]
    pad_h, pad_w = padding
    out_h, out_w = height + 2 * pad_h - 2, width + 2 * pad_w - 2
    samples, rows, chunk = _plan(batch, channels, out_channels, out_h, out_w, x.element_size())
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    band_w = TILE * tiles_w + 2
    kron_a, kron_g, kron_b = (m.to(x.device) for m in _transforms_2d(x.dtype))
    flat_weight = weight.reshape(out_channels, channels * 9)

    scratch = _scratch(x)
    whole_weight = None
    if chunk == out_channels:  # transformed once for every band
        whole_weight = _transform(
            flat_weight, kron_g, scratch.get("weight", (SPAN * SPAN, out_channels, channels))
        )
    band = scratch.get("band", (samples, channels, TILE * rows + 2, band_w))
    band[..., :pad_w].zero_()  # the columns beside the map (the scratch held another shape before)
    band[..., pad_w + width :].zero_()
    out = x.new_empty(batch, out_channels, out_h, out_w)
    for first in range(0, batch, samples):
        count = min(samples, batch - first)
        for top_tile in range(0, tiles_h, rows):
            n_rows = min(rows, tiles_h - top_tile)
            top = TILE * top_tile - pad_h  # input row of the band's first row
            span = TILE * n_rows + 2
            lo, hi = max(top, 0), min(top + span, height)
            buf = band[:count, :, :span]
            if lo > top:
                buf[:, :, : lo - top].zero_()
            if hi < top + span:
                buf[:, :, max(hi - top, 0) :].zero_()
            if hi > lo:
                target = buf[:, :, lo - top : hi - top, pad_w : pad_w + width]
                _copy_enlarged(target, x[first : first + count], lo, upsample)
            tiles = count * n_rows * tiles_w
            s0, s1, s2, _ = buf.stride()
            gathered = scratch.get("gathered", (SPAN, SPAN, channels, count, n_rows, tiles_w))
            gathered.copy_(buf.as_strided(gathered.shape, (s2, 1, s1, s0, TILE * s2, TILE)))
            spectrum = scratch.get("spectrum", (SPAN * SPAN, channels * tiles))
            torch.mm(kron_b, gathered.view(SPAN * SPAN, channels * tiles), out=spectrum)
            for k0 in range(0, out_channels, chunk):
                k1 = min(k0 + chunk, out_channels)
                u = whole_weight
                if u is None:  # a chunk of output channels at a time (a big weight on a small map)
                    u = _transform(
                        flat_weight[k0:k1], kron_g, scratch.get("weight", (SPAN * SPAN, k1 - k0, channels))
                    )
                product = scratch.get("product", (SPAN * SPAN, k1 - k0, tiles))
                torch.bmm(u, spectrum.view(SPAN * SPAN, channels, tiles), out=product)
                result = scratch.get("result", (TILE * TILE, (k1 - k0) * tiles))
                flat_product = product.view(SPAN * SPAN, (k1 - k0) * tiles)
                if bias is None:
                    torch.mm(kron_a, flat_product, out=result)
                else:
                    torch.addmm(bias[k0:k1].repeat_interleave(tiles)[None], kron_a, flat_product, out=result)
                pixels = result.view(TILE, TILE, k1 - k0, count, n_rows, tiles_w).permute(3, 2, 4, 0, 5, 1)
                o_top = TILE * top_tile
                o_rows = min(TILE * n_rows, out_h - o_top)
                target = out[first : first + count, k0:k1, o_top : o_top + o_rows]
                if o_rows == TILE * n_rows and out_w == TILE * tiles_w:  # whole tiles: one copy
                    target.view(pixels.shape).copy_(pixels)
                else:
                    pixels = pixels.reshape(count, k1 - k0, TILE * n_rows, TILE * tiles_w)
                    target.copy_(pixels[:, :, :o_rows, :out_w])
    return out


def _plan(
    batch: int, channels: int, out_channels: int, out_h: int, out_w: int, itemsize: int
) -> tuple[int, int, int]:
    """(samples per band, tile rows per band, output channels per weight chunk).

    A band's transformed input stays near `BAND_BYTES`, or the whole batch is one band up to
    `WHOLE_BYTES` (small maps). The transformed weight is 4x the weight: above `WEIGHT_BYTES` it
    is made a chunk of output channels at a time, again for every band, so bands are then as large
    as `WHOLE_BYTES` allows.
    """
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    row_bytes = SPAN * SPAN * channels * tiles_w * itemsize  # one tile row, transformed
    weight_bytes = SPAN * SPAN * out_channels * channels * itemsize
    chunk = (
        out_channels
        if weight_bytes <= WEIGHT_BYTES
        else max(1, WEIGHT_BYTES // (weight_bytes // out_channels))
    )
    if row_bytes * tiles_h * batch <= WHOLE_BYTES:
        return batch, tiles_h, chunk
    budget = BAND_BYTES if chunk == out_channels else WHOLE_BYTES
    rows = max(1, min(tiles_h, budget // row_bytes))
    samples = max(1, min(batch, budget // (row_bytes * tiles_h))) if rows == tiles_h else 1
    return samples, rows, chunk


def _transform(flat_weight: torch.Tensor, kron_g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`transform_weight` of a (K, C*9) weight into `out` (36, K, C)."""
    k, c = out.shape[1:]
    torch.mm(kron_g, flat_weight.reshape(k * c, 9).T, out=out.view(SPAN * SPAN, k * c))
    return out


class _Scratch:
    """Buffers kept between calls, one flat tensor per name, grown to the largest size asked for.

    Fresh allocations this large come from `mmap` and are page-faulted on every call (a 59 MB
    transformed weight took 15.8 ms that way against 1.8 ms into a kept buffer).
    """

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        numel = math.prod(shape)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel:
            self.buffers.pop(name, None)  # the old one goes before the larger one comes
            # a normal tensor even under `torch.inference_mode()`: an inference tensor could not be
            # written by a later call made outside it (under `torch.no_grad()`, say)
            with torch.inference_mode(False):
                buffer = torch.empty(numel, dtype=self.dtype, device=self.device)
            self.buffers[name] = buffer
        return buffer[:numel].view(shape)


_local = threading.local()  # each thread its own buffers: two threads may convolve at once


def _scratch(x: torch.Tensor) -> _Scratch:
    scratch = getattr(_local, "scratch", None)
    if scratch is None or scratch.dtype != x.dtype or scratch.device != x.device:
        scratch = _local.scratch = _Scratch(x.dtype, x.device)
    return scratch


def release_scratch() -> None:
    """Free this thread's kept buffers (`_plan` bounds them: at most ~190 MB for SD1.5's shapes)."""
    _local.scratch = None


def _copy_enlarged(target: torch.Tensor, x: torch.Tensor, first_row: int, factor: int) -> None:
    """Rows `first_row:first_row + len` of `x` enlarged `factor` times (nearest) into `target`.

    One strided copy per row phase, straight into the band: `F.interpolate` first made a tensor of
    its own, at a slow per-channel pace on small maps (11 ms for 512 channels from 32x32 to 64x64,
    against 1 ms for a broadcast copy).
    """
    if factor == 1:
        target.copy_(x[:, :, first_row : first_row + target.shape[2]])
        return
    count, channels, rows, _ = target.shape
    width = x.shape[3]
    for phase in range(factor):  # the target rows that repeat source rows at this offset
        start = (phase - first_row) % factor
        if start >= rows:
            continue
        n = len(range(start, rows, factor))
        source = x[:, :, (first_row + start) // factor :][:, :, :n, :, None]
        target[:, :, start::factor].view(count, channels, n, width, factor).copy_(
            source.expand(count, channels, n, width, factor)
        )
