"""Attention kernels on this CPU: torch's SDPA against `runtime.attention`'s head-by-head chunks.

    python bench/attention.py          # SD1.5 / SDXL / VAE attention shapes, bf16 and fp32, ~2 min

Prints, per shape (batch, heads, queries, keys, channels per head), the best of 3 in ms of SDPA and
of `attend_in_chunks` (one head and a chunk of queries at a time: two GEMMs and a softmax) with
`torch.mm` at query chunks of 256 / 512 / 1024 and with oneDNN-packed keys and values at 512, the
effective GFLOP/s of the fastest, and each kernel's largest difference from a float64 attention
relative to the output's scale. The exact mode uses the packed kernel for float32 from
`EXACT_MIN_KEYS` keys on (AVX-512 CPUs); the fast mode adds `torch.mm` chunks for bf16 from
`FAST_MIN_KEYS` on.
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
    from sfumato.runtime.cpu import cpu_info
    from speed import cpu_line

    print(cpu_line())
    print(
        "\n| dtype | shape B×heads×N×M×d | SDPA ms | mm chunks ms (256 / 512 / 1024) | packed ms "
        "| best GFLOP/s | error SDPA / mm / packed |"
    )
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        # bf16 only where the CPU computes it natively: elsewhere it runs 100x slower (and oneDNN's
        # packed bf16 path refuses to run at all)
        dtypes = (torch.bfloat16, torch.float32) if cpu_info().native_bf16 else (torch.float32,)
        for dtype in dtypes:
            for b, h, n, m, d in SHAPES:
                q = (1.5 * torch.randn(b, h, n, d, generator=g)).to(dtype)
                k, v = ((1.5 * torch.randn(b, h, m, d, generator=g)).to(dtype) for _ in range(2))
                kernels = {
                    "sdpa": lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v),
                    **{
                        f"mm{c}": lambda q=q, k=k, v=v, c=c: attend_in_chunks(q, k, v, c)
                        for c in (256, 512, 1024)
                    },
                    "packed": lambda q=q, k=k, v=v: attend_in_chunks(q, k, v, packed=True),
                }
                ms = {name: best_ms(fn, 3) for name, fn in kernels.items()}
                reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
                errors = [
                    float((kernels[name]().double() - reference).abs().max() / reference.abs().max())
                    for name in ("sdpa", "mm512", "packed")
                ]
                flops = 4 * b * h * n * m * d
                print(
                    f"| {str(dtype).removeprefix('torch.')} | {b}×{h}×{n}×{m}×{d} | {ms['sdpa']:.0f} | "
                    + " / ".join(f"{ms[f'mm{c}']:.0f}" for c in (256, 512, 1024))
                    + f" | {ms['packed']:.0f} | {flops / min(ms.values()) / 1e6:.0f} | "
                    + " / ".join(f"{e:.1e}" for e in errors)
                    + " |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
