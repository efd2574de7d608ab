"""What this CPU computes fast: read once from `/proc/cpuinfo` and torch's dispatch capability.

On x86 the compute type that pays depends on the ISA, not on the dtype's size: without
avx512_bf16 or AMX, bfloat16 matmuls run 100-500x slower than float32, and without avx512_fp16 or
AMX-FP16, float16 is a storage format only. `fast_dtype` is the choice the fast mode and the
dtype warnings use.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import torch

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_FP16_FLAGS = ("avx512_fp16", "amx_fp16")


@dataclass(frozen=True)
class CpuInfo:
    """The model name and the ISA flags that matter for choosing a compute dtype."""

    model: str
    flags: frozenset[str]
    capability: str  # torch's kernel dispatch level: "AVX512", "AVX2", "DEFAULT", ...

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in _BF16_FLAGS) or self._is_apple_silicon

    @property
    def native_fp16(self) -> bool:
        return any(f in self.flags for f in _FP16_FLAGS) or self._is_apple_silicon

    @property
    def _is_apple_silicon(self) -> bool:
        return platform.system() == "Darwin" and platform.machine() == "arm64"

    @property
    def isa(self) -> str:
        """A short summary for benchmark tables, e.g. `AVX512 avx512_bf16`."""
        extra = [f for f in (*_BF16_FLAGS, *_FP16_FLAGS, "avx512f", "avx2", "fma") if f in self.flags]
        return " ".join([self.capability, *extra])

    def fast_dtype(self) -> torch.dtype:
        """bfloat16 where the CPU computes it natively, else float32."""
        return torch.bfloat16 if self.native_bf16 else torch.float32

    def is_slow(self, dtype: torch.dtype) -> bool:
        """True for a floating dtype this CPU has no fast kernels for (fp16/bf16 without native support)."""
        if dtype == torch.bfloat16:
            return not self.native_bf16
        if dtype == torch.float16:
            return not self.native_fp16
        return False


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor listed in `/proc/cpuinfo` text (x86 or ARM)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def _read_proc_cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model, flags = parse_cpuinfo(f.read())
    except OSError:
        model, flags = "", frozenset()
    return model or platform.processor() or platform.machine(), flags


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached; tests replace it with `monkeypatch`)."""
    model, flags = _read_proc_cpuinfo()
    return CpuInfo(model=model, flags=flags, capability=torch.backends.cpu.get_cpu_capability())


def fast_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The fastest compute dtype for `device`: float16 on CUDA, bf16/fp32 on CPU by ISA, fp16 on MPS."""
    kind = torch.device(device).type
    if kind == "cpu":
        return cpu_info().fast_dtype()
    return torch.float16 if kind in ("cuda", "mps", "xpu") else torch.float32
