"""Convolution and linear weights packed once for oneDNN's CPU kernels, not reordered on every call.

oneDNN computes with weights in a blocked layout chosen for the input's shape. Called through
`F.conv2d` / `F.linear`, it reorders the plain weight into that layout on every call: at the
UNet's small maps (4x4 and 8x8 at 256 px, 1280 channels) the reorder of a 59 MB weight costs more
than the arithmetic, and a 3x3 convolution runs at 22-50 GFLOP/s instead of ~150 (AVX2 EPYC).
`pack_weights(module)` swaps each `nn.Conv2d` / `nn.Linear` for a subclass that keeps a packed copy
for the last input shape it saw and repacks only when the shape (or the weight) changes; the
layout that suits one shape can be 20x slower for another, so one copy per shape class is not
enough and one per exact shape is the safe key.

Parameters, `state_dict()` and training are untouched: the packed copy is a plain attribute, the
module falls back to the usual forward whenever autograd needs the weight, the input is not on the
CPU, the dtype has no fast oneDNN kernel here, CPU autocast is on, or torch.compile is tracing. Results differ from `F.conv2d` by float rounding
only (another summation order, ~1e-6 relative).

Memory: a packed copy is as large as the weight. With `policy="neutral"` (the default) only weights
whose pages can be given back are packed: weights used in place from a memory-mapped safetensors
file and never written. After packing, their pages are dropped (`pages.drop_pages`), so resident
memory does not grow; a later read of `module.weight` faults the same bytes back in from the file.
A weight that is later cast, moved or written is no longer in the file: the module then runs the
plain forward again. `policy="all"` packs every weight and holds the extra copy for the others;
`policy="none"` packs nothing (the modules are switched for the Winograd path only).

`pack_weights(..., cache=...)` keeps the packed copies of weights from files on disk
(`runtime.packed_cache`, opt-in), so the next process maps them instead of packing again.

`winograd=True` also sends float32 3x3 stride-1 convolutions on large maps to Winograd's algorithm
(`runtime.winograd`: 2-3x faster there, no packed copy, ~1e-5 relative rounding); the shape of
each call decides, so one module can take either path.
"""

from __future__ import annotations

import functools
import logging
import platform
import threading
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu
from .layout import channels_last_pays, conv2d_channels_last
from .pages import drop_pages, file_mappings, in_file_mapping, populate
from .winograd import (
    FEW_CHANNELS,
    Kernel,
    winograd_available,
    winograd_conv2d,
    winograd_kernel,
    winograd_usable,
)

if TYPE_CHECKING:
    from .packed_cache import PackedCache

logger = logging.getLogger(__name__)

Policy = Literal["neutral", "all", "none"]


@functools.cache  # asked on every long attention call (runtime.attention)
def mkldnn_packing_available() -> bool:
    """Whether this torch build has the oneDNN ops that take packed weights (x86 only: measured there)."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def _packable_dtypes() -> tuple[torch.dtype, ...]:
    # bf16 kernels exist only with native bf16; elsewhere bf16 is a trap anyway (runtime.dtypes warns)
    return (torch.float32, torch.bfloat16) if cpu.cpu_info().native_bf16 else (torch.float32,)


class _PackedWeight:
    """The state a packed module keeps besides its parameters (set by `pack_weights`)."""

    _sfumato_pack_key: tuple | None
    _sfumato_pack: torch.Tensor | None
    _sfumato_mappings: list[tuple[int, int]]
    _sfumato_dtypes: tuple[torch.dtype, ...]
    _sfumato_policy: Policy
    _sfumato_winograd: bool
    _sfumato_max_area: int | None  # convolutions: see `_max_packed_area`
    _sfumato_fp32_min_rows: int | None  # linears: see `_fp32_min_rows`
    _sfumato_exact: bool  # rounds like the plain modules: no fused activations
    _sfumato_channels_last: bool  # convolutions: exact bf16 may compute channels-last (runtime.layout)
    _sfumato_cache: PackedCache | None  # packed weights kept on disk (runtime.packed_cache), if asked for
    _sfumato_pack_pages: list[tuple[int, int]] | None  # the cache file's pages the packed copy lies in

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (`torch.save(model)`, `copy.deepcopy`) without the packed copy: oneDNN's opaque
        tensor has no storage to write, and the copy is remade at the next call."""
        state = super().__getstate__()  # type: ignore[misc]
        return {
            **state, "_sfumato_pack": None, "_sfumato_pack_key": None, "_sfumato_pack_pages": None,
            "_sfumato_cache": None,  # its mappings belong to this process
        }  # fmt: skip

    def _plain_needed(self, x: torch.Tensor) -> bool:
        """Whether this call must take the module's usual forward (see the module docstring)."""
        weight: torch.Tensor = self.weight  # type: ignore[attr-defined]
        bias: torch.Tensor | None = self.bias  # type: ignore[attr-defined]
        return (
            x.device.type != "cpu"
            or weight.device.type != "cpu"
            or x.dtype != weight.dtype
            or (bias is not None and bias.dtype != weight.dtype)
            or (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
            or torch.compiler.is_compiling()  # traced by the user's torch.compile: inductor packs for itself
            or torch.is_autocast_enabled("cpu")  # autocast casts inside F.conv2d / F.linear; keep its dtypes
        )

    def _packed_for(self, x: torch.Tensor, shape_key: Any) -> Any:
        """The packed weight for input `x`, packing it now if needed; None to use the plain forward."""
        weight: torch.Tensor = self.weight  # type: ignore[attr-defined]
        if (
            self._sfumato_policy == "none"
            or weight.dtype not in self._sfumato_dtypes
            or weight.is_inference()
        ):
            return None  # an inference tensor's writes are not counted: a copy could go stale unseen
        key = (shape_key, weight.dtype, weight.data_ptr(), weight._version)
        if key != self._sfumato_pack_key:
            self._drop_pack()  # the old copy goes before a new one is made
            in_file = in_file_mapping(weight, self._sfumato_mappings)
            if self._sfumato_policy == "neutral" and not in_file:
                return None  # cast, moved or written since `pack_weights`: a copy would add to memory
            cache = self._sfumato_cache if in_file else None  # only a file's weight has an identity
            entry = cache.key(weight, self._packing_params(shape_key)) if cache is not None else None
            found = cache.load(entry, self._packed_shapes(weight, shape_key), weight.dtype) if entry else None
            if found is not None:
                parts, self._sfumato_pack_pages = found
                packed = parts[0] if len(parts) == 1 else tuple(parts)
            else:
                populate(weight, self._sfumato_mappings)
                packed = self._pack(weight.detach(), shape_key)
                if entry:
                    cache.store(entry, list(packed) if isinstance(packed, tuple) else [packed])  # type: ignore[union-attr]
                drop_pages([weight], self._sfumato_mappings)
            self._sfumato_pack, self._sfumato_pack_key = packed, key
            return packed  # this call's own copy, even if another thread repacks meanwhile
        return self._sfumato_pack

    def _pack(self, weight: torch.Tensor, shape_key: Any) -> Any:
        raise NotImplementedError

    def _packing_params(self, shape_key: Any) -> list:
        """What, besides the weight, decides the packed bytes (part of a cache entry's key)."""
        raise NotImplementedError

    def _packed_shapes(self, weight: torch.Tensor, shape_key: Any) -> list[list[int]]:
        """The logical sizes of the packed tensors `_pack` makes (checked on a cache entry)."""
        return [list(weight.shape)]

    def _drop_pack(self) -> None:
        """Free the packed copy: a repack is due, or this call takes a kernel that reads the weight itself."""
        pages, cache = self._sfumato_pack_pages, self._sfumato_cache
        self._sfumato_pack, self._sfumato_pack_key, self._sfumato_pack_pages = None, None, None
        if pages and cache is not None:
            cache.release(pages)  # a copy mapped from the cache: its pages go back as a packed copy's would


class PackedConv2d(_PackedWeight, nn.Conv2d):
    """`nn.Conv2d` that runs oneDNN with a weight packed for the current input shape."""

    def _pack(self, weight: torch.Tensor, shape_key: Any) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            _staged_channels_last(weight),
            list(self.padding),
            list(self.stride),
            list(self.dilation),
            self.groups,
            list(shape_key),
        )

    def _packing_params(self, shape_key: Any) -> list:
        return [
            "conv",
            list(self.padding),
            list(self.stride),
            list(self.dilation),
            self.groups,
            list(shape_key),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or self._plain_needed(x):
            return super().forward(x)
        kernel = self._winograd_kernel(x, 1)
        if kernel is not None:
            return winograd_conv2d(x, self.weight, self.bias, self.padding, kernel=kernel)  # type: ignore[arg-type]
        if self._channels_last_suits(x):
            self._drop_pack()  # the plain weight serves; a copy packed for a smaller map goes
            return conv2d_channels_last(x, self.weight, self.bias, self.padding)  # type: ignore[arg-type]
        if self.kernel_size == (1, 1) and _plain_layout(x):
            # A 1x1 on an NCHW input (a VAE's shortcut after Winograd's NCHW convolutions): oneDNN's
            # packed kernels compute channels-last, so the input would be copied to channels-last and
            # the output come back channels-last into NCHW sums. A plain GEMM reads both as they are
            # (float32; other dtypes keep the convolution's own rounding of the bias).
            self._drop_pack()
            return self._pointwise_gemm(x) if x.dtype == torch.float32 else super().forward(x)
        if self.out_channels <= FEW_CHANNELS and self.weight.dtype == torch.float32:
            # A model's last convolution (to 3 or 4 channels): oneDNN's packed layout for so few outputs
            # ran 1.3-1.6x slower than the plain kernel (AVX2 EPYC: 128 to 3 at 512x512 194 ms against
            # 120, 320 to 4 at 64x64 7.7 against 5.8), so it stays plain, as diffusers computes it.
            self._drop_pack()
            return super().forward(x)
        max_area = self._sfumato_max_area
        large = max_area is not None and x.shape[2] * x.shape[3] > max_area
        if large and (self._sfumato_exact or self.weight.dtype == torch.float32):
            # A large map where packing does not pay (`_max_packed_area`): an earlier input's packed
            # copy goes, as the plain kernel reads the weight itself.
            self._drop_pack()
            return super().forward(x)
        packed = self._packed_for(x, tuple(x.shape))
        if packed is None:
            return super().forward(x)
        out = torch.ops.mkldnn._convolution_pointwise(
            x, packed, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups,
            "none", [], "",
        )  # fmt: skip
        if self._sfumato_exact and out.dtype != torch.float32 and _plain_layout(x):
            # The packed kernel writes channels-last, and the next op (a GroupNorm) sums a
            # channels-last input in another order: in bf16 a different rounding, which grows
            # over the steps. NCHW in, NCHW out, as the plain convolution gives.
            out = out.contiguous()
        return out

    def _pointwise_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """This 1x1 convolution of an NCHW `x` as one matrix product per sample: weight @ (C, H*W).

        oneDNN's plain 1x1 kernel on NCHW ran at 95-140 GFLOP/s on a 512 px VAE's 256x256 and 512x512
        maps where MKL's GEMM reads the same operands at 200-220 (a Xeon with AMX, `bench/conv.py`);
        both sum in float32, only the order differs.
        """
        if self.stride != (1, 1) or self.padding != (0, 0) or self.groups != 1 or self.dilation != (1, 1):
            return super().forward(x)
        n, channels, height, width = x.shape
        weight = self.weight.view(self.out_channels, channels)
        columns = x.view(n, channels, height * width)
        if self.bias is None:
            out = torch.matmul(weight, columns)
        elif n == 1:
            out = torch.addmm(self.bias[:, None], weight, columns[0])
        else:
            out = torch.baddbmm(self.bias[:, None], weight.expand(n, -1, -1), columns)
        return out.view(n, self.out_channels, height, width)

    def _channels_last_suits(self, x: torch.Tensor) -> bool:
        """Whether this exact-mode bfloat16 call computes channels-last, NCHW in and out (`runtime.layout`)."""
        return (
            self._sfumato_channels_last
            and self._sfumato_exact
            and x.dtype == torch.bfloat16
            and _plain_layout(x)
            and channels_last_pays(self.in_channels, self.out_channels, x.shape[2], x.shape[3])
        )

    def forward_upsampled(self, x: torch.Tensor, factor: int) -> torch.Tensor | None:
        """This convolution of `x` enlarged `factor` times (nearest), fused band by band with Winograd.

        None where that path does not apply: the caller then enlarges `x` and calls the module.
        """
        kernel = None if x.dim() != 4 or self._plain_needed(x) else self._winograd_kernel(x, factor)
        if kernel is None:
            return None
        return winograd_conv2d(x, self.weight, self.bias, self.padding, upsample=factor, kernel=kernel)  # type: ignore[arg-type]

    def _winograd_kernel(self, x: torch.Tensor, factor: int) -> Kernel | None:
        """The Winograd implementation this call takes, if any: a suitable module, map and dtype
        (see `runtime.winograd`)."""
        if not self._sfumato_winograd:
            return None
        kernel = winograd_kernel(
            self.in_channels, self.out_channels, x.shape[2] * factor, x.shape[3] * factor
        )
        if kernel is None or not winograd_usable(x, self.weight, kernel):
            return None
        self._drop_pack()  # a copy packed for another shape is not needed now
        return kernel


class PackedLinear(_PackedWeight, nn.Linear):
    """`nn.Linear` that runs oneDNN with a weight packed for the current number of rows."""

    def _pack(self, weight: torch.Tensor, shape_key: Any) -> Any:
        if isinstance(shape_key, tuple):  # ("gated", rows): the two output halves apart
            half = weight.shape[0] // 2
            return tuple(
                torch.ops.mkldnn._reorder_linear_weight(part.contiguous(), shape_key[1])
                for part in (weight[:half], weight[half:])
            )
        return torch.ops.mkldnn._reorder_linear_weight(weight, shape_key)

    def _packing_params(self, shape_key: Any) -> list:
        return ["linear", list(shape_key) if isinstance(shape_key, tuple) else shape_key]

    def _packed_shapes(self, weight: torch.Tensor, shape_key: Any) -> list[list[int]]:
        if isinstance(shape_key, tuple):
            return [[weight.shape[0] // 2, weight.shape[1]]] * 2
        return [list(weight.shape)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        usable = x.dim() >= 2 and x.numel() and not self._plain_needed(x) and self._packing_pays(x)
        packed = self._packed_for(x, x.numel() // x.shape[-1]) if usable else None
        if packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")

    def _packing_pays(self, x: torch.Tensor) -> bool:
        """Whether this call may use a packed weight; if not, a copy packed earlier goes (F.linear reads
        the weight itself).

        Not in exact mode in bfloat16: oneDNN's packed GEMM rounded differently from F.linear's at
        some shapes (512 rows of 640, 128 of 5120 on a Xeon with AMX). Not in float32 with fewer rows
        than this CPU's `_fp32_min_rows`.
        """
        if self.weight.dtype == torch.float32:
            min_rows = self._sfumato_fp32_min_rows
            if min_rows is None or x.numel() // x.shape[-1] >= min_rows:
                return True
        elif not self._sfumato_exact:
            return True
        self._drop_pack()
        return False

    def forward_gated_gelu(self, x: torch.Tensor) -> torch.Tensor | None:
        """`value * gelu(gate)` of this linear's two output halves (GEGLU), the GELU done inside oneDNN.

        The gate's half runs as its own GEMM with GELU (erf) applied to the float32 sums as they
        leave the kernel: the 2x wider projection is never written whole, nor read again by a
        separate GELU. In bfloat16 (fast mode, a Xeon with AMX) SD1.5's 256 px UNet call took 0.347 s
        against 0.370; in float32 the separate ops were as fast (weights cold in cache, 128-2048 rows).
        The GELU sees the sums before they are rounded to bfloat16, which differs from the separate
        ops by a bfloat16 step here and there, so it runs only without `exact`. None where this does
        not apply: the caller then runs the projection and GELU itself.
        """
        if (
            self._sfumato_exact
            or x.dim() < 2
            or not x.numel()
            or self.out_features % 2
            or self._plain_needed(x)
            or not self._packing_pays(x)
        ):
            return None
        packed = self._packed_for(x, ("gated", x.numel() // x.shape[-1]))
        if packed is None:
            return None
        value_weight, gate_weight = packed
        half = self.out_features // 2
        value_bias, gate_bias = (None, None) if self.bias is None else (self.bias[:half], self.bias[half:])
        gate = torch.ops.mkldnn._linear_pointwise(x, gate_weight, gate_bias, "gelu", [], "none")
        value = torch.ops.mkldnn._linear_pointwise(x, value_weight, value_bias, "none", [], "")
        return gate.mul_(value)


# Largest map (pixels) on which packing a float32 convolution's weight pays on Intel's AVX-512 CPUs
SMALL_MAP = 16 * 16


def _max_packed_area() -> int | None:
    """Largest map (pixels) on which packing a float32, or exact mode's, convolution weight pays on
    this CPU; None: any.

    On Intel's AVX-512 CPUs only small maps gain (a Xeon with AMX):
    - float32 (`bench/conv.py`): 1280 channels at 4x4 8.8 ms packed against 20.7 plain, at 8x8 21.7
      against 29.9, at 16x16 63 against 75; on SD1.5's larger maps the UNet ran as fast with plain
      weights (`python bench/packing_ab.py`: a wash within the host's ±5%), and packing them only
      lengthened the first call. (Its linears do gain, 1-6%, and stay packed.)
    - bfloat16 in exact mode (`python bench/packing_ab.py --size 512 --dtype bfloat16`): a 512 px
      UNet call took 1.69 s with the maps up to 16x16 packed against 1.78 with every map packed
      (interleaved; 1.65 against 1.94 in separate processes, 1.72 with none packed); at 256 px,
      where the 32x32 maps are the only larger ones, 0.47 either way. Exact mode hands a packed
      convolution's output back NCHW, a copy the plain kernel does not need.
    In fast mode's bfloat16 every map is packed all the same: the packed kernels' channels-last output
    feeds the next ops in that layout, and the 512 px call took 1.37 s against 1.61 with the rule
    (`--mode fast`). On AMD's CPUs packing paid everywhere it was measured.
    """
    return SMALL_MAP if cpu.cpu_info().intel_avx512 else None


# Fewest rows with which packing a float32 linear's weight pays on Intel's AVX-512 CPUs
MANY_ROWS = 1024


def _fp32_min_rows() -> int | None:
    """Fewest rows (input vectors per call) with which packing a float32 linear pays on this CPU; None: any.

    On Intel's AVX-512 CPUs torch's float32 linears run MKL's GEMM, as fast as oneDNN's packed one
    within 0-15% (a Xeon with AMX, weights cold in cache), while the reorder runs at 1-3 GB/s of
    weight: with 128-512 rows (SD1.5's 16x16 and 8x8 maps at 256 px, the text's keys and values)
    packing every linear made the UNet's first call 1.2-2.5 s longer (3.6-5.0 s against 2.3-2.5)
    for 1-4% (0.04 s) off each later call, ~30-40 calls to pay back (one weight alone: 5-15 calls,
    one 300). So those run MKL's GEMM. (Packing them after their first 30 calls, tried, paid back on
    long runs but changed a pipeline's results in the last float bits from one image to the next.)
    From 1024 rows a weight's reorder costs a tenth of one call or less (SD1.5's 320-channel blocks
    at 256 px), so those pack. On AMD's CPUs and in bfloat16, packing paid everywhere it was measured.
    """
    return MANY_ROWS if cpu.cpu_info().intel_avx512 else None


def _plain_layout(x: torch.Tensor) -> bool:
    """Whether `x` is NCHW-contiguous and not also channels-last (as a 1x1 map is)."""
    return x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)


_scratch = threading.local()  # per thread: two threads may pack at once


def _staged_channels_last(weight: torch.Tensor) -> torch.Tensor:
    """`weight` copied channels-last into this thread's scratch buffer (reused from weight to weight).

    oneDNN's reorder makes a channels-last copy of an NCHW weight first, in fresh memory each time:
    for SD1.5's UNet, 2.2 GB of page faults in the first call (a 59 MB weight packed in 60-78 ms from
    NCHW, 26-28 ms from channels-last, same packed bytes; AVX2 EPYC). Staged here, the copy lands in
    pages already mapped. The buffer goes when the forward of the module given to `pack_weights`, or of
    one of its direct children, ends (`_release_scratch`): a VAE runs its decoder, not its forward.
    """
    if weight.is_contiguous(memory_format=torch.channels_last):
        return weight
    buffer: torch.Tensor | None = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < weight.numel() or buffer.dtype != weight.dtype:
        size = weight.numel()
        if buffer is not None and buffer.dtype == weight.dtype:
            size = max(size, 2 * buffer.numel())  # the UNet's weights grow block by block
        buffer = _scratch.buffer = None  # the old one goes before the new one is made
        buffer = _scratch.buffer = torch.empty(size, dtype=weight.dtype)
    out_c, in_c, kh, kw = weight.shape
    staged = buffer[: weight.numel()].as_strided(weight.shape, (in_c * kh * kw, 1, kw * in_c, in_c))
    return staged.copy_(weight)


def _release_scratch(*_: Any) -> None:
    """Forward hook of a packed module and its children: this call's packing is done, the scratch can go."""
    _scratch.buffer = None


_PACKED = {nn.Conv2d: PackedConv2d, nn.Linear: PackedLinear}
_STATE = (
    "_sfumato_pack_key", "_sfumato_pack", "_sfumato_mappings", "_sfumato_dtypes", "_sfumato_policy",
    "_sfumato_winograd", "_sfumato_max_area", "_sfumato_fp32_min_rows", "_sfumato_exact",
    "_sfumato_channels_last", "_sfumato_cache", "_sfumato_pack_pages",
)  # fmt: skip


def _winograd_shaped(child: nn.Module) -> bool:
    """A 3x3, stride-1, undilated, ungrouped convolution with zero padding NNPACK takes (below 3)."""
    return (
        isinstance(child, nn.Conv2d)
        and child.kernel_size == (3, 3)
        and child.stride == (1, 1)
        and child.dilation == (1, 1)
        and child.groups == 1
        and all(p < 3 for p in child.padding)  # type: ignore[union-attr]
    )


def _channels_last_shaped(child: nn.Module) -> bool:
    """A stride-1, undilated, ungrouped convolution on a CPU where exact bfloat16 computes it
    channels-last on large maps (`runtime.layout`; measured on Intel's AVX-512 with AMX)."""
    info = cpu.cpu_info()
    return (
        isinstance(child, nn.Conv2d)
        and info.intel_avx512
        and info.amx_bf16
        and child.stride == (1, 1)
        and child.dilation == (1, 1)
        and child.groups == 1
    )


def _reset(
    child: nn.Module,
    mappings: list[tuple[int, int]],
    dtypes: tuple,
    policy: Policy,
    winograd: bool,
    exact: bool,
    cache: PackedCache | None,
) -> None:
    """Fresh packing state: nothing packed yet; the next call packs under `policy`."""
    if getattr(child, "_sfumato_pack_pages", None):
        child._drop_pack()  # a copy mapped from a cache file gives its pages back
    child._sfumato_pack_key, child._sfumato_pack, child._sfumato_pack_pages = None, None, None
    child._sfumato_cache = cache
    child._sfumato_mappings, child._sfumato_dtypes, child._sfumato_policy = mappings, dtypes, policy
    child._sfumato_exact = exact
    child._sfumato_winograd = winograd and _winograd_shaped(child)
    child._sfumato_channels_last = _channels_last_shaped(child)
    child._sfumato_max_area = _max_packed_area() if isinstance(child, nn.Conv2d) else None
    child._sfumato_fp32_min_rows = _fp32_min_rows() if isinstance(child, nn.Linear) else None


def pack_weights(
    module: nn.Module,
    policy: Policy = "neutral",
    *,
    winograd: bool = False,
    exact: bool = True,
    cache: PackedCache | None = None,
) -> int:
    """Make `module`'s convolutions and linears use packed weights on CPU; returns how many were switched.

    Only exact `nn.Conv2d` (zero padding given as numbers) and `nn.Linear` are switched, never
    subclasses with their own forward. See the module docstring for `policy` and `winograd`.
    `exact=False` lets linears fuse their activation (`PackedLinear.forward_gated_gelu`): one
    rounding instead of two, in bfloat16 no longer equal to the plain modules' results. With `cache`
    (`runtime.packed_cache`), weights from files are packed once per machine, not once per process.
    """
    if policy not in ("neutral", "all", "none"):
        raise ValueError(f'policy must be "neutral", "all" or "none", got {policy!r}')
    winograd = winograd and winograd_available()
    if not mkldnn_packing_available():
        if not winograd:
            logger.info("this torch build has no oneDNN packed-weight ops; weights stay as they are")
            return 0
        policy = "none"
    mappings = file_mappings()
    dtypes = _packable_dtypes()
    if "_sfumato_release_hooks" not in module.__dict__:
        module._sfumato_release_hooks = [
            m.register_forward_hook(_release_scratch) for m in (module, *module.children())
        ]
    switched = 0
    for child in module.modules():
        if not isinstance(child, _PackedWeight):  # packed before: only the policy is renewed
            packed_class = _PACKED.get(type(child))
            if packed_class is None or child.weight.device.type != "cpu":
                continue
            if isinstance(child, nn.Conv2d) and (
                child.padding_mode != "zeros" or isinstance(child.padding, str)
            ):
                continue
            packable = policy == "all" or (policy == "neutral" and in_file_mapping(child.weight, mappings))
            if not (
                packable
                or (winograd and _winograd_shaped(child))
                or (exact and child.weight.dtype == torch.bfloat16 and _channels_last_shaped(child))
            ):
                continue
            child.__class__ = packed_class
        _reset(child, mappings, dtypes, policy, winograd, exact, cache)
        switched += 1
    return switched


def unpack_weights(module: nn.Module) -> int:
    """Undo `pack_weights`: plain `nn.Conv2d` / `nn.Linear` again, packed copies freed; returns how many."""
    plain = {packed: original for original, packed in _PACKED.items()}
    for hook in module.__dict__.pop("_sfumato_release_hooks", ()):
        hook.remove()
    count = 0
    for child in module.modules():
        original = plain.get(type(child))
        if original is not None:
            for name in _STATE:
                child.__dict__.pop(name, None)
            child.__class__ = original
            count += 1
    return count
