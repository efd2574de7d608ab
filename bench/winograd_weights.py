"""Our F(4x4, 3x3)'s weight transform (G g G^T for every channel pair): the way it runs, against others.

    python bench/winograd_weights.py      # SD1.5's shapes on 32x32 maps, ~1 min

`runtime.winograd_f4` transforms each weight again on every call (keeping the transformed weights,
4x the weights, would cost memory the goals do not allow). The transform is one (36x9) @ (9 x K*C)
product into the (36, K, C) layout the per-position products need. Prints the milliseconds (best
of 15) of:
- `as run`: `winograd_f4._transform`, MKL reading the weight transposed (K = 9);
- `columns`: the same product in blocks of 16384 channel pairs, so each block's output stays in cache;
- `natural + transpose`: (K*C x 9) @ (9 x 36), MKL's favourite shape, then one transposing copy;
- `gather + product`: the weight copied to (9, K*C) first, then the plain product;
- `fill`: writing the transformed weight's bytes, the floor for any way of making it.
Each variant's result is checked against `as run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sfumato.runtime import winograd_f4

sys.path.insert(0, str(Path(__file__).parent))

REPEATS = 15
SHAPES = [(320, 320), (320, 640), (320, 960), (512, 512), (640, 640), (640, 1920)]  # (K, C)


def row(k: int, c: int, kron_g: torch.Tensor) -> str:
    from conv import best_ms

    pairs = k * c
    flat = torch.randn(k, c * 9)
    pair_rows = flat.view(pairs, 9)
    out = torch.empty(36, k, c)
    flat_out = out.view(36, pairs)
    expected = winograd_f4._transform(flat, kron_g, torch.empty(36, k, c)).clone()
    natural = torch.empty(pairs, 36)
    gathered = torch.empty(9, pairs)

    def columns() -> None:
        for start in range(0, pairs, 16384):
            torch.mm(kron_g, pair_rows[start : start + 16384].T, out=flat_out[:, start : start + 16384])

    def natural_then_transpose() -> None:
        torch.mm(pair_rows, kron_g.T, out=natural)
        flat_out.copy_(natural.T)

    def gather_then_product() -> None:
        gathered.copy_(pair_rows.T)
        torch.mm(kron_g, gathered, out=flat_out)

    cells = [f"{best_ms(lambda: winograd_f4._transform(flat, kron_g, out), REPEATS):.1f}"]
    for variant in (columns, natural_then_transpose, gather_then_product):
        cells.append(f"{best_ms(variant, REPEATS):.1f}")
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    cells.append(f"{best_ms(lambda: out.fill_(1.0), REPEATS):.1f}")
    return f"| {k} x {c} | {36 * pairs * 4 / 1e6:.0f} | " + " | ".join(cells) + " |"


def main() -> None:
    torch.manual_seed(0)
    kron_g = winograd_f4._transforms_2d(torch.float32)[1]
    from speed import cpu_line

    print(cpu_line())
    print("| K x C | MB out | as run | columns | natural + transpose | gather + product | fill |")
    print("|---|---|---|---|---|---|---|")
    for k, c in SHAPES:
        print(row(k, c, kron_g))


if __name__ == "__main__":
    main()
