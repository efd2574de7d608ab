"""Dtype traps: warn before a pipeline computes in a dtype this CPU has no fast kernels for.

float16 on any x86 CPU without avx512_fp16, and bfloat16 on one without avx512_bf16 or AMX, run at
0.3-20 GFLOP/s where float32 reaches 100-450: a 256 px image that takes 15 s in float32 takes
tens of minutes. diffusers runs such requests silently; we say so once, with the fix.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from . import cpu

FAST = "fast"  # `torch_dtype="fast"`: the fastest dtype for the machine (see `resolve_dtype`)


class SlowDtypeWarning(UserWarning):
    """The requested compute dtype has no fast kernels on this CPU."""


def resolve_dtype(dtype: Any) -> Any:
    """`"fast"` -> this machine's fastest dtype (CUDA's float16 if CUDA is available); anything else unchanged."""
    if isinstance(dtype, str) and dtype == FAST:
        return cpu.fast_dtype("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, dict):
        return {k: resolve_dtype(v) for k, v in dtype.items()}
    return dtype


def slow_dtype_message(dtype: torch.dtype) -> str | None:
    """Why `dtype` is slow on this CPU and what to use instead, or None if it is fine."""
    info = cpu.cpu_info()
    if not info.is_slow(dtype):
        return None
    name = str(dtype).removeprefix("torch.")
    native = "avx512_bf16 or AMX" if dtype == torch.bfloat16 else "avx512_fp16 or AMX-FP16"
    fast = str(info.fast_dtype()).removeprefix("torch.")
    return (
        f"computing in {name} on this CPU ({info.model}; no {native}) runs 100-500x slower than float32: "
        f"a few seconds per step become minutes. Load with torch_dtype=torch.{fast} "
        f'(or torch_dtype="fast", which picks the fastest dtype for this machine), '
        f"or call pipe.to(torch.{fast}). Silence with warnings.simplefilter('ignore', SlowDtypeWarning)."
    )


def warn_if_slow(dtype: torch.dtype, device: torch.device | str, *, stacklevel: int = 3) -> bool:
    """Warn (SlowDtypeWarning) when `dtype` on `device` is a CPU dtype trap; True if it warned."""
    if torch.device(device).type != "cpu":
        return False
    message = slow_dtype_message(dtype)
    if message is None:
        return False
    warnings.warn(message, SlowDtypeWarning, stacklevel=stacklevel)
    return True
