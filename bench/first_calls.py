"""The exact-mode UNet's first calls in fresh processes: what packing weights costs before it pays.

    python bench/first_calls.py                 # SD1.5 at 256 px, 20 calls, 2 processes per arm, ~4 min
    python bench/first_calls.py --calls 50 --size 512

Arms, each in its own processes, alternated (A B A B) so the host's drift hits both alike:
- `as shipped`: `runtime.packing`'s rules for this CPU (on Intel's AVX-512 CPUs, float32 linears
  with fewer than 1024 rows run MKL's GEMM unpacked: `_fp32_min_rows`);
- `linears packed at once`: every linear packed in its first call, as before 2026-12-04;
- `no linear packed`: every float32 linear on MKL's GEMM, the weights used as loaded;
- `packed cache`: as shipped, with the packed-weight cache on (`runtime.packed_cache`, the folder
  `bench/speed.py`'s `+cache` variants use), filled by one untimed process first: the packed weights
  are mapped from files, not packed.
Prints each process's seconds per call and the sums over the first 5 calls (one 4-step image with
CFG, the speed bench's setting), over all calls and over the last 5. Uses the bench fixture
(bench/sd_fixture.py) and needs no diffusers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("as shipped", "linears packed at once", "no linear packed", "packed cache")


def worker(arm: str, size: int, calls: int) -> None:
    import torch

    import sfumato
    from sd_fixture import MODELS
    from sfumato.runtime import packing
    from speed import packed_cache_folder
    from speed_worker import unet_inputs

    if arm == ARMS[1]:
        packing._fp32_min_rows = lambda: None
    elif arm == ARMS[2]:
        packing._fp32_min_rows = lambda: 1 << 62
    folder = MODELS["sd15"][1]()
    cache = packed_cache_folder(folder) if arm == ARMS[3] else False
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, optimize=False)
    unet = pipe.optimize(packed_cache=cache).unet
    inputs, kwargs = unet_inputs(unet, size, unet.dtype, torch.Generator().manual_seed(1))
    times = []
    with torch.inference_mode():
        for _ in range(calls):
            start = time.perf_counter()
            unet(*inputs, **kwargs)
            times.append(time.perf_counter() - start)
    first, last = sum(times[:5]), sum(times[-5:])
    print(
        f"{arm:24s} first 5 {first:6.2f} s | all {sum(times):6.2f} s | last 5 {last:6.2f} s | "
        + " ".join(f"{t:.2f}" for t in times)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--processes", type=int, default=2, help="fresh processes per arm")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.worker:
        worker(args.worker, args.size, args.calls)
        return
    from speed import cpu_line

    print(f"{cpu_line()} | SD1.5 UNet, {args.size} px, float32, exact mode, {args.calls} calls per process")

    def run(arm: str, calls: int) -> None:
        command = [sys.executable, __file__, "--worker", arm, "--size", str(args.size)]
        subprocess.run([*command, "--calls", str(calls)], check=True)

    if ARMS[3] in args.arms:
        print("filling the packed-weight cache (untimed):", end=" ", flush=True)
        run(ARMS[3], 1)
    for _ in range(args.processes):
        for arm in args.arms:
            run(arm, args.calls)


if __name__ == "__main__":
    main()
