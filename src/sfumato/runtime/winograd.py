"""3x3 convolutions through Winograd's algorithm, with whichever implementation wins on this CPU.

A direct 3x3 convolution does 9 multiply-adds per output and input channel; Winograd's algorithm
transforms input tiles and weights so that an elementwise product per channel pair yields a whole
output tile: 4-5x fewer multiplications, paid for with transforms whose cost grows with the map and
with the weight. On large maps the product dominates and the convolution runs 1.5-3x faster than
oneDNN's direct kernels (VAE decoding, the UNet's 32x32 and 64x64 maps at 512 px). Two
implementations, chosen per shape and CPU (`bench/conv.py` measures both per shape;
`winograd_kernel` encodes where each won there):
- our F(4x4, 3x3) (`runtime.winograd_f4`), whose products are MKL's GEMMs: on Intel's AVX-512 CPUs
  0.5-0.84x the time of oneDNN's best kernel on maps of 32x32 and more; on AVX2 (EPYC Zen 3)
  0.64-0.73x on 32x32 maps, where NNPACK took 0.81-1.42x;
- NNPACK's F(6x6, 3x3), which torch's CPU builds ship: AVX2 kernels, weights transformed again on
  every call, so it wins only on large maps: on AVX2 from 64x64 (0.38-0.74x, ours 0.47-1.06x), on
  AMD's AVX-512 on the VAE's and SDXL's largest maps. On AMD's AVX-512 our F(4x4, 3x3) has not
  been measured yet.

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
from typing import Literal

import torch
import torch.nn.functional as F

from . import cpu
from .winograd_f4 import winograd_f4_conv2d

OWN_MIN_CHANNELS = 128  # fewest input and output channels with which our F(4x4, 3x3) pays
# Convolutions to or from this few channels (an image's 3, a latent's 4) stay off Winograd: the transforms
# are nearly all the work (AVX2 EPYC, `bench/README.md`: NNPACK took 1.25-1.6x oneDNN's plain time on
# the VAE's last convolution, 128 to 3 channels at 256-512 px, and 1.2-3.6x on the UNet's first and
# last, 4 to 320 and 320 to 4 at 64x64; the VAE encoder's first, 3 to 128 at 512x512, ran fastest
# packed). 16 to 16 channels at 512x512 still took 0.54x.
FEW_CHANNELS = 4
_pool_threads: int | None = None  # torch.get_num_threads() when this process first ran NNPACK

# Input bytes per NNPACK call. NNPACK transforms a call's whole input and output at once: its
# workspace is ~3.6x the input (467 MB for one 128-channel 512x512 map), and torch keeps it for the
# thread's lifetime. Larger samples go in bands of rows. A 512 px SD VAE decode peaked at 2.21 GiB
# unbanded, 1.76 with 32 MiB bands, 1.61 with 16 MiB (oneDNN's direct kernels: 1.48), at about the
# same speed: the bands' copies cost what the smaller workspace saves in page faults.
BAND_BYTES = 16 * 2**20


Kernel = Literal["f4", "nnpack"]


def winograd_available() -> bool:
    """Whether a Winograd implementation was measured to win somewhere on this CPU and runs here."""
    return _own_kernel_measured() or _nnpack_available()


def _own_kernel_measured() -> bool:
    """Whether our F(4x4, 3x3) has a rule on this CPU: Intel's AVX-512 and AVX2 (x86 without AVX-512)."""
    info = cpu.cpu_info()
    return info.intel_avx512 or info.capability == "AVX2"


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


def winograd_kernel(c_in: int, c_out: int, height: int, width: int) -> Kernel | None:
    """The Winograd implementation that beats oneDNN for a 3x3, stride-1 float32 convolution of this
    shape on this CPU; None where oneDNN's direct kernels are the fastest.

    From `bench/conv.py`, against oneDNN's best kernel (plain, channels-last or packed) for the shape:
    - Intel AVX-512 (a Xeon with AMX, 2026-12-04): ours took 0.50-0.84x on every map of 32x32 and more
      at every channel count of SD1.5's UNet and VAE, 0.60-0.72x on 16x16 maps with 1280 channels or
      more; it lost on 16x16 with 640 channels (1.08x packed oneDNN) and on 8x8 and 4x4 (2.2x and
      4.9x: there the transformed weight, 4x the weight, is read for few tiles), and with fewer than
      `OWN_MIN_CHANNELS` channels on either side, where the transforms outweigh the products (the
      VAE's last convolution, 128 to 3 channels at 512x512: 73.6 ms against 58.5; 64 to 64 at
      128x128: 4.3 against 3.5).
    - AVX2 (EPYC Zen 3, 2026-12-06): on 32x32 maps ours took 0.64-0.73x (320-1920 input channels,
      the UNet's batch of 2 and the VAE's single sample), NNPACK 0.81-1.42x; from 64x64 on NNPACK
      took 0.38-0.74x and ours 0.47-1.06x (a tie only at 320 channels on 64x64), so NNPACK keeps
      those. Both lost on 16x16 and smaller (ours 1.13-12.9x, NNPACK 2.4-30x). On 2026-11-23 and
      12-02 NNPACK's 32x32 figures were 0.7-1.0x on a quiet host and 1.2-1.55x on a busy one.
    - AVX-512 on AMD (EPYC Zen 5, NNPACK; oneDNN ~2x faster there): NNPACK won only on the VAE
      decoder's maps (0.71-0.75x at 64x64 with 512 channels and at 128x128; 0.66-0.9x of NCHW oneDNN
      on the larger ones) and on SDXL's 1024 px UNet maps (320 channels at 128x128 0.78x, 640 at
      64x64 0.69x); it lost on SD1.5's UNet at 512 px (320 channels at 64x64 1.0-1.3x, 640 at 32x32
      1.6x).
    """
    info = cpu.cpu_info()
    area, fewest = height * width, min(c_in, c_out)
    if fewest <= FEW_CHANNELS:
        return None
    if info.intel_avx512:
        if fewest < OWN_MIN_CHANNELS:
            return None
        return "f4" if area >= 32 * 32 or (area >= 16 * 16 and fewest >= 1280) else None
    if info.capability.startswith("AVX512"):
        nnpack = area >= 128 * 128 or (area >= 64 * 64 and fewest >= 512)
    else:
        nnpack = area >= 64 * 64
        if not nnpack and info.capability == "AVX2" and area >= 32 * 32 and fewest >= OWN_MIN_CHANNELS:
            return "f4"
    return "nnpack" if nnpack and _nnpack_available() else None


def winograd_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    upsample: int = 1,
    *,
    kernel: Kernel,
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` for a 3x3 stride-1 float32 convolution, by Winograd
    through `kernel` (`winograd_kernel` names the one that wins for the shape).

    With `upsample=k`, the convolution of `x` enlarged k times by nearest-neighbour interpolation,
    band by band, so the enlarged map (the largest tensor of a VAE decode) never exists whole.
    """
    if kernel == "f4":
        return winograd_f4_conv2d(x, weight, bias, padding, upsample)
    return nnpack_conv2d(x, weight, bias, padding, upsample)


def nnpack_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    upsample: int = 1,
) -> torch.Tensor:
    """`winograd_conv2d` through NNPACK's F(6x6, 3x3), whatever the CPU.

    NNPACK gets one call per sample: torch's batched NNPACK path uses a slower algorithm (measured
    1.7-3.4x), and per-sample calls make each sample's result independent of the batch it came in.
    Samples larger than `BAND_BYTES` go in bands of rows; the results are bit for bit those of one
    call. (Our F(4x4, 3x3) plans its own bands, `runtime.winograd_f4`.)
    """
    global _pool_threads
    if not _nnpack_available():  # also initialises NNPACK, without which its convolution fails
        raise RuntimeError("this torch build has no working NNPACK (x86-64 with AVX2 or ARM with NEON)")
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


def winograd_usable(x: torch.Tensor, weight: torch.Tensor, kernel: Kernel) -> bool:
    """Whether `winograd_conv2d` may run for this input now through `kernel`: float32 on CPU (and, for
    NNPACK, its pool still right-sized)."""
    if not (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
    ):
        return False
    if kernel == "f4":
        return True
    return (_pool_threads is None or _pool_threads == torch.get_num_threads()) and _nnpack_available()
