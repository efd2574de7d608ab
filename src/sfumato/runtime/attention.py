"""Self-attention over long token sequences on the CPU: one head and 512 queries at a time through GEMMs.

torch's CPU `scaled_dot_product_attention` (a flash kernel) runs at ~100-140 GFLOP/s on an EPYC
Zen 5 in float32 and in bfloat16 alike, where oneDNN's GEMMs reach ~300 and ~750: at 512 px,
attention is a third of an SD1.5 UNet call in float32 and half of it in bf16. Here the scores of one
head and 512 queries (8 MiB for 4096 keys in float32, held in cache) go through two GEMMs and a
softmax (`bench/attention.py`):

- `exact_attention`, float32 on AVX-512 CPUs: the keys and values of each head packed once for
  oneDNN (torch's float32 `mm` goes to MKL, 2x slower than oneDNN on that AMD CPU). 0.6-0.7x
  SDPA's time at 4096 tokens, 0.5x on the VAE's single head; rounding ~1.5e-6 of the output's
  scale, as SDPA's, so the exact mode uses it. At 1024 tokens it only ties, below that it loses: those
  stay on SDPA (`EXACT_MIN_KEYS`). Not measured on AVX2 CPUs, which keep SDPA.
- `fast_attention` adds bfloat16 (`torch.mm` reaches oneDNN's bf16 kernels as it is): 2.2-2.5x
  faster than SDPA from 256 tokens on, 4x on the VAE's. The scores are rounded to bf16 before the
  softmax (SDPA keeps them in float32), so one attention is ~1e-2 off float64 instead of ~3e-3; in a
  bf16 UNet that is below the error of the bf16 weights themselves (a whole SD1.5 UNet call at
  512 px is 1.1-1.2e-2 off float32 with either kernel). Hence the fast mode only.

Both kernels only pay where SDPA's own GEMMs are slow. On an Intel Xeon with AMX (2 vCPUs,
2026-12-02) SDPA won everywhere: in bfloat16 its flash kernel multiplies on AMX tiles (oneDNN's
brgemm), 216 ms against 375 for the chunks at 4096 tokens; in float32 its GEMMs are MKL's, which
run AVX-512 kernels on Intel CPUs (507 ms against 697 through `torch.mm` and 1068 packed). So the
bf16 chunks are skipped on CPUs with `amx_bf16`, and the float32 ones on Intel CPUs.

Cross-attention on a text's 77 tokens stays on SDPA (no faster here), as do masks, autograd, other
dtypes and devices, and graphs traced by torch.compile.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from . import cpu

QUERY_CHUNK = 512  # 512 x 4096 scores in cache; chunks of 256 and 1024 were 5-20% slower
FAST_MIN_KEYS = 256  # bf16: faster than SDPA from 256 keys on; at 77 (cross-attention) no faster
EXACT_MIN_KEYS = 2048  # float32: a tie at 1024 keys, slower at 256


def _applies(q: Tensor, k: Tensor, v: Tensor) -> bool:
    return (
        q.device.type == "cpu"
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
        and not torch.compiler.is_compiling()
    )


def exact_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
    """softmax(q k^T / sqrt(d)) v for (B, heads, N, d) float32 tensors on AVX-512 CPUs but Intel's;
    None elsewhere (the caller then runs SDPA). Equal to SDPA within float rounding."""
    from .packing import mkldnn_packing_available

    info = cpu.cpu_info()
    if (
        q.dtype != torch.float32
        or k.shape[2] < EXACT_MIN_KEYS
        or not info.capability.startswith("AVX512")
        or info.intel
        or not mkldnn_packing_available()
        or not _applies(q, k, v)
    ):
        return None
    return attend_in_chunks(q, k, v, packed=True)


def fast_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
    """`exact_attention`, and bfloat16 attention with bf16 scores from `FAST_MIN_KEYS` keys on
    (on CPUs without AMX, whose SDPA is faster)."""
    if (
        q.dtype == torch.bfloat16
        and k.shape[2] >= FAST_MIN_KEYS
        and not cpu.cpu_info().amx_bf16
        and _applies(q, k, v)
    ):
        return attend_in_chunks(q, k, v)
    return exact_attention(q, k, v)


def attend_in_chunks(
    q: Tensor, k: Tensor, v: Tensor, chunk: int = QUERY_CHUNK, packed: bool = False
) -> Tensor:
    """The computation of both kernels, without their checks (also for bench/attention.py).

    `packed`: each head's keys and values packed for oneDNN's linear kernel (`torch.mm` otherwise).
    """
    b, heads, n, d = q.shape
    m = k.shape[2]
    q = (q * d**-0.5).reshape(b * heads, n, d)  # scaled once, before the product
    k, v = k.reshape(b * heads, m, d), v.reshape(b * heads, m, v.shape[-1])
    out = q.new_empty(b * heads, n, v.shape[-1])
    chunks = [slice(start, start + chunk) for start in range(0, n, chunk)]
    for h in range(b * heads):
        if packed:  # scores = q @ keys^T is a linear layer whose weight is the keys
            keys = torch.ops.mkldnn._reorder_linear_weight(k[h], chunk)
            values_t = torch.ops.mkldnn._reorder_linear_weight(v[h].t().contiguous(), chunk)
            for rows in chunks:
                scores = torch.ops.mkldnn._linear_pointwise(q[h, rows], keys, None, "none", [], "")
                probs = torch.softmax(scores, dim=-1)
                out[h, rows] = torch.ops.mkldnn._linear_pointwise(probs, values_t, None, "none", [], "")
        else:
            keys_t = k[h].t()
            for rows in chunks:
                torch.mm(torch.softmax(torch.mm(q[h, rows], keys_t), dim=-1), v[h], out=out[h, rows])
    return out.view(b, heads, n, -1)


def use_cpu_attention(module: nn.Module, mode: Literal["exact", "fast"] | None) -> int:
    """Give every sfumato `Attention` in `module` this mode's kernel (None: SDPA only); returns how many."""
    from ..nn.attention import Attention

    kernel = {"exact": exact_attention, "fast": fast_attention, None: None}[mode]
    count = 0
    for child in module.modules():
        if isinstance(child, Attention):
            child.kernel = kernel
            count += 1
    return count
