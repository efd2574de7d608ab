"""Attention kernels on this CPU: torch's SDPA against the fast mode's chunked bf16 attention.

    python bench/attention.py          # SD1.5 / SDXL / VAE attention shapes, bf16 and fp32, ~1 min

Prints, per shape (batch, heads, queries, keys, channels per head), the best of 3 in ms for SDPA and
for `runtime.attention.chunked_attention`'s method (one head and a chunk of queries at a time: two
GEMMs and a softmax), at several query chunk sizes, with the effective GFLOP/s of the best and each
kernel's largest difference from a float64 attention relative to the output's scale. The fast mode
uses the chunked kernel for bf16 self-attention only (at least `MIN_KEYS` keys): in float32 and on
77 keys it does not win.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

SHAPES = [  # (batch, heads, queries, keys, channels per head)
    (2, 8, 4096, 4096, 40),  # SD1.5 UNet 64x64 (512 px)
    (2, 8, 1024, 1024, 80),  # SD1.5 UNet 32x32
    (2, 8, 256, 256, 160),  # SD1.5 UNet 16x16
    (2, 8, 4096, 77, 40),  # SD1.5 cross-attention on the prompt
    (2, 10, 4096, 4096, 64),  # SDXL UNet 64x64 (1024 px)
    (2, 20, 1024, 1024, 64),  # SDXL UNet 32x32
    (1, 1, 4096, 4096, 512),  # VAE mid-block, 512 px
]


def main() -> None:
    from conv import best_ms
    from sfumato.runtime.attention import attend_in_chunks
    from speed import cpu_line

    print(cpu_line())
    print(
        "\n| dtype | shape B×heads×N×M×d | SDPA ms | chunked ms (256 / 512 / 1024) | best GFLOP/s | error SDPA / chunked |"
    )
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for dtype in (torch.bfloat16, torch.float32):
            for b, h, n, m, d in SHAPES:
                q = (1.5 * torch.randn(b, h, n, d, generator=g)).to(dtype)
                k, v = ((1.5 * torch.randn(b, h, m, d, generator=g)).to(dtype) for _ in range(2))
                flops = 4 * b * h * n * m * d
                sdpa = best_ms(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v), 3)
                times = [
                    best_ms(lambda q=q, k=k, v=v, c=c: attend_in_chunks(q, k, v, c), 3)
                    for c in (256, 512, 1024)
                ]
                reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
                errors = [
                    float((out.double() - reference).abs().max() / reference.abs().max())
                    for out in (F.scaled_dot_product_attention(q, k, v), attend_in_chunks(q, k, v))
                ]
                print(
                    f"| {str(dtype).removeprefix('torch.')} | {b}×{h}×{n}×{m}×{d} | {sdpa:.0f} | "
                    + " / ".join(f"{t:.0f}" for t in times)
                    + f" | {flops / min(sdpa, *times) / 1e6:.0f} | {errors[0]:.1e} / {errors[1]:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
