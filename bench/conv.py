"""3x3 convolutions of SD1.5's UNet and VAE: oneDNN (plain, channels-last, packed) against Winograd (NNPACK's and ours).

    python bench/conv.py            # every shape of a 256 px and a 512 px image, ~3 min

Winograd here is NNPACK's F(6x6, 3x3) as torch ships it (`torch._nnpack_spatial_convolution`), one
call per sample, and our F(4x4, 3x3) (`runtime.winograd_f4`), the whole batch at once. Prints, per
shape, the milliseconds of each kernel, the effective GFLOP/s (direct convolution's FLOP count over
the time), each Winograd's time as a share of the best oneDNN one, and each kernel's largest
difference from a float64 convolution relative to the output's largest value. `runtime.winograd`
decides from these figures which convolutions take which path on which CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

# (input channels, output channels, map side, batch): SD1.5's 3x3 stride-1 shapes
UNET = [
    (c, c, s, 2) for c, s in ((320, 32), (640, 16), (1280, 8), (1280, 4), (320, 64), (640, 32), (1280, 16))
] + [(960, 320, 64, 2), (1920, 640, 32, 2), (2560, 1280, 16, 2)]  # the up blocks' widest inputs
VAE = [
    (c, c, s, 1)
    for c, s in ((512, 32), (512, 64), (256, 128), (128, 256), (512, 128), (256, 256), (128, 512))
] + [(128, 3, 512, 1)]  # the decoder's last convolution


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def row(c_in: int, c_out: int, side: int, batch: int, repeats: int) -> str:
    from sfumato.runtime.winograd import nnpack_conv2d
    from sfumato.runtime.winograd_f4 import winograd_f4_conv2d

    torch.manual_seed(0)
    x = torch.randn(batch, c_in, side, side)
    w = torch.randn(c_out, c_in, 3, 3) / (9 * c_in) ** 0.5
    b = torch.randn(c_out)
    x_cl, w_cl = (
        x.contiguous(memory_format=torch.channels_last),
        w.contiguous(memory_format=torch.channels_last),
    )
    packed = torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, list(x.shape))
    kernels = {
        "plain": lambda: F.conv2d(x, w, b, padding=1),
        "channels-last": lambda: F.conv2d(x_cl, w_cl, b, padding=1),
        "packed": lambda: torch.ops.mkldnn._convolution_pointwise(
            x, packed, b, [1, 1], [1, 1], [1, 1], 1, "none", [], ""
        ),
        "nnpack": lambda: nnpack_conv2d(x, w, b, (1, 1)),
        "f4": lambda: winograd_f4_conv2d(x, w, b, (1, 1)),
    }
    reference = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    scale = reference.abs().max().item()
    flops = 2 * batch * side * side * c_in * c_out * 9
    cells, errors, ms = [], [], {}
    for name, fn in kernels.items():
        ms[name] = best_ms(fn, repeats)
        cells.append(f"{ms[name]:.1f} ({flops / ms[name] / 1e6:.0f})")
        errors.append(f"{(fn().double() - reference).abs().max().item() / scale:.0e}")
    best_onednn = min(ms["plain"], ms["channels-last"], ms["packed"])
    shape = f"{c_in}→{c_out} {side}x{side} ×{batch}"
    return (
        f"| {shape} | "
        + " | ".join(cells)
        + f" | {ms['nnpack'] / best_onednn:.2f}× | {ms['f4'] / best_onednn:.2f}× | {' / '.join(errors)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from speed import cpu_line

    print(cpu_line())
    print(
        "\nms (effective GFLOP/s); each Winograd's share of the best oneDNN time;"
        " error plain / cl / packed / NNPACK / F(4x4)\n"
    )
    print(
        "| shape | oneDNN plain | oneDNN channels-last | oneDNN packed | NNPACK F(6x6) | ours F(4x4)"
        " | NNPACK ratio | F(4x4) ratio | rel. error |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for label, shapes in (("UNet", UNET), ("VAE", VAE)):
            print(f"| **{label}** | | | | | | | | |")
            for shape in shapes:
                print(row(*shape, args.repeats), flush=True)


if __name__ == "__main__":
    main()
