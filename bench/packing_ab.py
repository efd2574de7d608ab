"""Which weights are worth packing on this CPU: the exact-mode UNet call with packing choices switched, in one process.

    python bench/packing_ab.py                  # SD1.5 at 256 px, ~3 min
    python bench/packing_ab.py --size 512       # ~12 min
    python bench/packing_ab.py --size 512 --dtype bfloat16 [--mode fast]   # ~4 min

Arms, interleaved (A B C, C B A, ...) so the host's drift hits each alike; each timed call follows an
untimed one in the same arm, so a switch's repacking is not counted:
- `as shipped`: `runtime.packing`'s own choice for this CPU (`_max_packed_area`);
- `every conv packed`: also the convolutions the rule leaves to oneDNN's own path;
- `no linear packed`: the linears through `F.linear` (MKL's / oneDNN's own GEMM).
Prints the median seconds per UNet call (batch 2) of each arm. Uses the bench fixture
(bench/sd_fixture.py) and needs no diffusers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=3, help="rounds of every arm, timed")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--mode", default="exact", choices=["exact", "fast"])
    args = parser.parse_args()

    import sfumato
    from sd_fixture import MODELS
    from sfumato.runtime import packing
    from speed import cpu_line
    from speed_worker import unet_inputs

    folder = MODELS["sd15"][1]()
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, torch_dtype=getattr(torch, args.dtype)
    )
    unet = (pipe.optimize("fast") if args.mode == "fast" else pipe).unet
    inputs, kwargs = unet_inputs(unet, args.size, unet.dtype, torch.Generator().manual_seed(1))
    convs = [m for m in unet.modules() if isinstance(m, packing.PackedConv2d)]
    shipped_areas = [m._sfumato_max_area for m in convs]
    packed_linear = packing.PackedLinear.forward

    def plain_linear(self, x):
        return F.linear(x, self.weight, self.bias)

    arms = {  # each convolution's largest packed map, the linears' forward
        "as shipped": (shipped_areas, packed_linear),
        "every conv packed": ([None] * len(convs), packed_linear),
        "no linear packed": (shipped_areas, plain_linear),
    }

    def use(arm: str) -> None:
        areas, packing.PackedLinear.forward = arms[arm]
        for conv, area in zip(convs, areas, strict=True):
            conv._sfumato_max_area = area

    times: dict[str, list[float]] = {name: [] for name in arms}
    print(f"{cpu_line()} | SD1.5 UNet, {args.size} px, {unet.dtype}, {args.mode} mode")
    with torch.inference_mode():
        for round_ in range(args.pairs * 2):
            order = list(arms) if round_ % 2 == 0 else list(arms)[::-1]
            for name in order:
                use(name)
                unet(*inputs, **kwargs)  # repacks what this arm packs
                start = time.perf_counter()
                unet(*inputs, **kwargs)
                times[name].append(time.perf_counter() - start)
    use("as shipped")
    for name, values in times.items():
        print(f"{name:18s} {statistics.median(values):.3f} s per call ({len(values)} calls)")


if __name__ == "__main__":
    main()
