"""3x3 convolutions through Winograd's algorithm: NNPACK's F(6x6, 3x3), which torch's CPU builds ship.

A direct 3x3 convolution does 9 multiply-adds per output and input channel; Winograd's F(6x6, 3x3)
transforms 8x8 input tiles so that one 64-term elementwise product per channel pair yields a 6x6
output tile: 5x fewer multiplications, paid for with transforms whose cost grows with the map and
with the weight. On large maps the product dominates and the convolution runs 2-3x faster than
oneDNN's direct kernels (VAE decoding, the UNet's 64x64 maps at 512 px); on small maps with many
channels the weight transform, redone on every call, costs more than it saves. `bench/conv.py`
measures both per shape; `winograd_suits` encodes where Winograd won there.

Results differ from a direct convolution by float rounding: ~1e-5 of the output's largest value
against ~2e-6 for oneDNN (float64 reference), far inside the 1/255 image tolerance of the exact
mode. float32 only: NNPACK has no other type.

torch calls NNPACK with one thread pool, sized by `torch.get_num_threads()` when it is first used
and never resized. A convolution takes this path only while the thread count is still the one the
pool was made with, so a later `torch.set_num_threads` is honoured (by oneDNN) as usual.
"""

from __future__ import annotations

import functools
import platform

import torch

_pool_threads: int | None = None  # torch.get_num_threads() when this process first ran NNPACK


@functools.cache
def winograd_available() -> bool:
    """Whether this torch build has a working NNPACK (x86-64 with AVX2 or ARM with NEON).

    `torch._nnpack_available()` also initialises NNPACK; without that call its convolution fails.
    """
    return (
        platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
        and hasattr(torch, "_nnpack_spatial_convolution")
        and torch._nnpack_available()
    )


def winograd_suits(c_in: int, c_out: int, height: int, width: int) -> bool:
    """Whether Winograd beats oneDNN for a 3x3, stride-1 float32 convolution of this shape.

    From `bench/conv.py` on an AVX2 EPYC: Winograd took 0.3-0.5x oneDNN's time on maps of 64x64
    and more at every channel count of SD1.5's UNet and VAE, and ~0.8x on 32x32 maps with 512-640
    channels; it lost (1.2-2.7x) on 32x32 with 320 channels and on every smaller map, where the
    weight transform redone on each call outweighs the product.
    """
    area = height * width
    return area >= 64 * 64 or (area >= 32 * 32 and min(c_in, c_out) >= 512)


def winograd_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]
) -> torch.Tensor:
    """`F.conv2d(x, weight, bias, padding=padding)` for a 3x3 stride-1 float32 convolution, via NNPACK.

    One call per sample: torch's batched NNPACK path uses a slower algorithm (measured 1.7-3.4x),
    and per-sample calls make each sample's result independent of the batch it came in.
    """
    global _pool_threads
    if _pool_threads is None:
        _pool_threads = torch.get_num_threads()
    weight = weight.contiguous()
    if x.shape[0] == 1:
        return torch._nnpack_spatial_convolution(x, weight, bias, list(padding), [1, 1])
    return torch.cat(
        [torch._nnpack_spatial_convolution(s, weight, bias, list(padding), [1, 1]) for s in x.split(1)]
    )


def winograd_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `winograd_conv2d` may run for this input now: float32 on CPU, NNPACK's pool still right-sized."""
    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.device.type == "cpu"
        and (_pool_threads is None or _pool_threads == torch.get_num_threads())
        and winograd_available()
    )
