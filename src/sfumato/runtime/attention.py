"""Self-attention over long token sequences in bfloat16 on CPUs with native bf16 (the fast mode).

torch's CPU `scaled_dot_product_attention` runs bf16 attention at ~130 GFLOP/s on an EPYC Zen 5,
where its bf16 GEMMs reach 700-800: at 512 px attention is half of a bf16 SD1.5 UNet call. Here the
scores of one head and 512 queries at a time (4 MiB for 4096 keys, held in cache) go through two
oneDNN GEMMs and a softmax: 2.2-2.5x faster at 256-4096 tokens (40-512 channels per head), 4x on
the VAE's single-head attention (`bench/attention.py`).

The price is rounding: the scores are rounded to bf16 before the softmax (SDPA keeps them in float32),
so one attention differs from float64 by ~1e-2 of its output's scale instead of ~3e-3. In a bf16
UNet that is below the error of the bf16 weights themselves: a whole SD1.5 UNet call at 512 px is
1.2e-2 off float32 with either kernel. Hence fast mode only; the exact mode keeps SDPA.

Cross-attention on a text's 77 tokens is left to SDPA (no faster here), as are masks, autograd,
other dtypes and devices, and graphs traced by torch.compile.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

QUERY_CHUNK = 512  # 512 x 4096 bf16 scores: 4 MiB, in cache; 256 and 1024 were 5-10% slower
MIN_KEYS = 256  # at 77 keys (cross-attention) SDPA is as fast or faster


def chunked_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
    """softmax(q k^T / sqrt(d)) v for (B, heads, N, d) tensors, head by head and in chunks of queries.

    Returns None where this kernel does not apply (see the module docstring): the caller runs SDPA.
    """
    if (
        q.dtype != torch.bfloat16
        or q.device.type != "cpu"
        or k.shape[2] < MIN_KEYS
        or (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
        or torch.compiler.is_compiling()
    ):
        return None
    return attend_in_chunks(q, k, v)


def attend_in_chunks(q: Tensor, k: Tensor, v: Tensor, chunk: int = QUERY_CHUNK) -> Tensor:
    """The computation of `chunked_attention`, in any dtype, without its checks (for bench/attention.py)."""
    b, heads, n, d = q.shape
    m = k.shape[2]
    q = (q * d**-0.5).reshape(b * heads, n, d)  # scaled once, as SDPA does before its product
    k, v = k.reshape(b * heads, m, d), v.reshape(b * heads, m, v.shape[-1])
    out = q.new_empty(b * heads, n, v.shape[-1])
    for h in range(b * heads):
        keys_t = k[h].t()
        for start in range(0, n, chunk):
            scores = torch.mm(q[h, start : start + chunk], keys_t)
            torch.mm(torch.softmax(scores, dim=-1), v[h], out=out[h, start : start + chunk])
    return out.view(b, heads, n, -1)


def use_chunked_attention(module: nn.Module, enabled: bool = True) -> int:
    """Let every sfumato `Attention` in `module` use `chunked_attention` (or SDPA again); returns how many."""
    from ..nn.attention import Attention

    count = 0
    for child in module.modules():
        if isinstance(child, Attention):
            child.kernel = chunked_attention if enabled else None
            count += 1
    return count
