"""What this CPU computes fast: read once from `/proc/cpuinfo` and torch's dispatch capability.

On x86 the compute type that pays depends on the ISA, not on the dtype's size: without
avx512_bf16 or AMX, bfloat16 matmuls run 100-500x slower than float32, and without avx512_fp16 or
AMX-FP16, float16 is a storage format only. `fast_dtype` is the choice the fast mode and the
dtype warnings use.
"""

from __future__ import annotations

import dataclasses
import functools
import platform

import torch

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_FP16_FLAGS = ("avx512_fp16", "amx_fp16")


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The model name and the ISA flags that matter for choosing a compute dtype."""

    model: str
    flags: frozenset[str]
    capability: str  # torch's kernel dispatch level: "AVX512", "AVX2", "DEFAULT", ...
    vendor: str = ""  # /proc/cpuinfo's vendor_id: "GenuineIntel", "AuthenticAMD", ...

    @property
    def intel(self) -> bool:
        """Intel's CPUs, where MKL (torch's float32 BLAS) runs its AVX-512 kernels."""
        return self.vendor == "GenuineIntel"

    @property
    def intel_avx512(self) -> bool:
        """Intel's AVX-512 CPUs, where MKL's and oneDNN's own float32 kernels already run near peak
        (runtime.packing's rules) and our Winograd's GEMMs are MKL's AVX-512 ones (runtime.winograd)."""
        return self.intel and self.capability.startswith("AVX512")

    @property
    def amx_bf16(self) -> bool:
        """AMX tiles for bfloat16, which torch's CPU flash attention uses through oneDNN's brgemm."""
        return "amx_bf16" in self.flags

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


def parse_cpuinfo(text: str, capability: str) -> CpuInfo:
    """The first processor listed in `/proc/cpuinfo` text (x86 or ARM), with torch's `capability`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = fields.get("flags", fields.get("Features", ""))
    return CpuInfo(
        model=fields.get("model name", ""),
        flags=frozenset(flags.split()),
        capability=capability,
        vendor=fields.get("vendor_id", ""),
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU (cached; tests replace it with `monkeypatch`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = ""
    info = parse_cpuinfo(text, torch.backends.cpu.get_cpu_capability())
    if not info.model:
        info = dataclasses.replace(info, model=platform.processor() or platform.machine())
    return info


def fast_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The fastest compute dtype for `device`: float16 on CUDA, bf16/fp32 on CPU by ISA, fp16 on MPS."""
    kind = torch.device(device).type
    if kind == "cpu":
        return cpu_info().fast_dtype()
    return torch.float16 if kind in ("cuda", "mps", "xpu") else torch.float32
