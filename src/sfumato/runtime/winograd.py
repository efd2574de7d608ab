"""3x3 convolutions through Winograd's algorithm, with whichever implementation wins on this CPU.

A direct 3x3 convolution does 9 multiply-adds per output and input channel; Winograd's algorithm
transforms input tiles and weights so that an elementwise product per channel pair yields a whole
output tile: 4-5x fewer multiplications, paid for with transforms whose cost grows with the map and
with the weight. On large maps the product dominates and the convolution runs 1.5-3x faster than
oneDNN's direct kernels (VAE decoding, the UNet's 32x32 and 64x64 maps at 512 px). Two
implementations, chosen by CPU (`bench/conv.py` measures both per shape; `winograd_suits` encodes
where Winograd won there):
- on Intel's AVX-512 CPUs, our F(4x4, 3x3) (`runtime.winograd_f4`), whose products are MKL's
  AVX-512 GEMMs: 0.5-0.84x the time of oneDNN's best kernel on maps of 32x32 and more;
- elsewhere NNPACK's F(6x6, 3x3), which torch's CPU builds ship: AVX2 kernels, weights transformed
  again on every call, so it wins only on large maps. On AMD's CPUs our F(4x4, 3x3) has not been
  measured yet; NNPACK keeps the place it won there.

Results differ from a direct convolution by float rounding: ~5e-6 (ours) and ~1e-5 (NNPACK) of the
output's largest value against ~3e-7 for oneDNN (float64 reference), far inside the 1/255 image
tolerance of the exact mode. float32 only.

torch calls NNPACK with one thread pool, sized by `torch.get_num_threads()` when it is first used
and never resized. A convolution takes that path only while the thread count is still the one the
pool was made with, so a later `torch.set_num_threads` is honoured (by oneDNN) as usual.
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.nn.functional as F

from . import cpu
from .winograd_f4 import winograd_f4_conv2d

OWN_MIN_CHANNELS = 128  # fewest input and output channels with which our F(4x4, 3x3) pays
_pool_threads: int | None = None  # torch.get_num_threads() when this process first ran NNPACK

# Input bytes per NNPACK call. NNPACK transforms a call's whole input and output at once: its
# workspace is ~3.6x the input (467 MB for one 128-channel 512x512 map), and torch keeps it for the
# thread's lifetime. Larger samples go in bands of rows. A 512 px SD VAE decode peaked at 2.21 GiB
# unbanded, 1.76 with 32 MiB bands, 1.61 with 16 MiB (oneDNN's direct kernels: 1.48), at about the
# same speed: the bands' copies cost what the smaller workspace saves in page faults.
BAND_BYTES = 16 * 2**20


def winograd_available() -> bool:
    """Whether a Winograd implementation runs here: ours (`_own_kernel`) or NNPACK."""
    return _own_kernel() or _nnpack_available()


def _own_kernel() -> bool:
    """Whether our F(4x4, 3x3) is the implementation: Intel's AVX-512 CPUs, where it was measured."""
    return cpu.cpu_info().intel_avx512


@functools.cache
def _nnpack_available() -> bool:
    """Whether this torch build has a working NNPACK (x86-64 with AVX2 or ARM with NEON).

    `torch._nnpack_available()` also initialises NNPACK; without that call its convolution fails.
    """
    return (
        platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
        and hasattr(torch, "_nnpack_spatial_convolution")
        and torch._nnpack_available()
    )


def winograd_suits(c_in: int, c_out: int, height: int, width: int) -> bool:
    """Whether Winograd beats oneDNN for a 3x3, stride-1 float32 convolution of this shape on this CPU.

    From `bench/conv.py`, against oneDNN's best kernel (plain or packed) for the shape:
    - Intel AVX-512 (a Xeon with AMX, our F(4x4, 3x3), 2026-12-04): 0.50-0.84x on every map of
      32x32 and more at every channel count of SD1.5's UNet and VAE, 0.60-0.72x on 16x16 maps with
      1280 channels or more; it lost on 16x16 with 640 channels (1.08x packed oneDNN) and on 8x8
      and 4x4 (2.2x and 4.9x: there the transformed weight, 4x the weight, is read for few tiles),
      and with fewer than `OWN_MIN_CHANNELS` channels on either side, where the transforms outweigh
      the products (the VAE's last convolution, 128 to 3 channels at 512x512: 73.6 ms against 58.5;
      64 to 64 at 128x128: 4.3 against 3.5).
    - AVX2 (EPYC Zen 3, NNPACK): Winograd took 0.3-0.8x oneDNN's time on maps of 64x64 and more at
      every channel count of SD1.5's UNet and VAE; it lost on every smaller map, where the weight
      transform redone on each call outweighs the product: 1.2-2.7x on 32x32 with 320 channels, and
      on 32x32 with 512-1920 channels 0.7-1.0x on a quiet host (2026-11-23) but 1.2-1.55x against
      packed oneDNN on a busy one (2026-12-02, interleaved). oneDNN keeps those: the gain at stake was
      small, and its compute-bound kernels suffer less from a busy host.
    - AVX-512 on AMD (EPYC Zen 5, NNPACK; oneDNN ~2x faster there): Winograd won only on the VAE
      decoder's maps (0.71-0.75x at 64x64 with 512 channels and at 128x128; 0.66-0.9x of NCHW oneDNN
      on the larger ones) and on SDXL's 1024 px UNet maps (320 channels at 128x128 0.78x, 640 at
      64x64 0.69x); it lost on SD1.5's UNet at 512 px (320 channels at 64x64 1.0-1.3x, 640 at 32x32
      1.6x).
    """
    area = height * width
    if _own_kernel():
        if min(c_in, c_out) < OWN_MIN_CHANNELS:
            return False
        return area >= 32 * 32 or (area >= 16 * 16 and min(c_in, c_out) >= 1280)
    if cpu.cpu_info().capability.startswith("AVX512"):
        return area >= 128 * 128 or (area >= 64 * 64 and min(c_in, c_out) >= 512)
    return area >= 64 * 64


def winograd_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    upsample: int = 1,
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` for a 3x3 stride-1 float32 convolution, by Winograd.

    With `upsample=k`, the convolution of `x` enlarged k times by nearest-neighbour interpolation,
    band by band, so the enlarged map (the largest tensor of a VAE decode) never exists whole.

    NNPACK gets one call per sample: torch's batched NNPACK path uses a slower algorithm (measured
    1.7-3.4x), and per-sample calls make each sample's result independent of the batch it came in.
    Samples larger than `BAND_BYTES` go in bands of rows; the results are bit for bit those of one
    call. Our F(4x4, 3x3) plans its own bands (`runtime.winograd_f4`).
    """
    if _own_kernel():
        return winograd_f4_conv2d(x, weight, bias, padding, upsample)
    return nnpack_conv2d(x, weight, bias, padding, upsample)


def nnpack_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    upsample: int = 1,
) -> torch.Tensor:
    """`winograd_conv2d` through NNPACK's F(6x6, 3x3), whatever the CPU (see `winograd_conv2d`)."""
    global _pool_threads
    if _pool_threads is None:
        _pool_threads = torch.get_num_threads()
    weight = weight.contiguous()
    n, channels, height, width = x.shape
    height, width = height * upsample, width * upsample
    pad_h, pad_w = padding
    row_bytes = channels * width * x.element_size()
    if n == 1 and upsample == 1 and height * row_bytes <= BAND_BYTES:
        return torch._nnpack_spatial_convolution(x, weight, bias, [pad_h, pad_w], [1, 1])
    out_h, out_w = height + 2 * pad_h - 2, width + 2 * pad_w - 2
    out = x.new_empty(n, weight.shape[0], out_h, out_w)
    # output rows per band: a multiple of NNPACK's 6-row tiles, its 2 extra input rows within budget
    rows = out_h if height * row_bytes <= BAND_BYTES else max(6, (BAND_BYTES // row_bytes - 2) // 6 * 6)
    for i in range(n):
        if upsample == 1 and rows == out_h:  # the sample in one call, padded by NNPACK
            out[i : i + 1] = torch._nnpack_spatial_convolution(
                x[i : i + 1], weight, bias, [pad_h, pad_w], [1, 1]
            )
            continue
        for top in range(0, out_h, rows):
            bottom = min(top + rows, out_h)
            first, last = top - pad_h, bottom + 2 - pad_h  # the input rows these outputs read
            band = _rows(x[i : i + 1], max(first, 0), min(last, height), upsample)
            if first < 0 or last > height:  # zero rows where the band meets the padding
                band = F.pad(band, (0, 0, max(-first, 0), max(last - height, 0)))
            out[i : i + 1, :, top:bottom] = torch._nnpack_spatial_convolution(
                band, weight, bias, [0, pad_w], [1, 1]
            )
    return out


def _rows(x: torch.Tensor, start: int, stop: int, upsample: int) -> torch.Tensor:
    """Rows `start:stop` of `x` enlarged `upsample` times by nearest-neighbour interpolation."""
    if upsample == 1:
        return x[:, :, start:stop]
    source = x[:, :, start // upsample : -(-stop // upsample)]
    enlarged = F.interpolate(source, scale_factor=float(upsample), mode="nearest")
    offset = start - start // upsample * upsample
    return enlarged[:, :, offset : offset + stop - start]


def winograd_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `winograd_conv2d` may run for this input now: float32 on CPU (and NNPACK's pool still
    right-sized, where NNPACK is the implementation)."""
    if not (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
    ):
        return False
    if _own_kernel():
        return True
    return (_pool_threads is None or _pool_threads == torch.get_num_threads()) and _nnpack_available()
