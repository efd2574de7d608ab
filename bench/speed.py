"""sfumato against diffusers on this CPU: SD1.5- or SDXL-sized text-to-image, side by side (A B A B ...).

    python bench/speed.py                          # 256 px, fp32 (+ bf16 where the CPU has native bf16)
    python bench/speed.py --sizes 256 512 --repeats 3
    python bench/speed.py --model sdxl --sizes 512 --repeats 1 --skip-per-step

Every measurement runs in a fresh process (bench/speed_worker.py), so peak RSS and the whole-process
time (interpreter + import + load + first image) are each library's own. Variants: diffusers'
default; sfumato's exact mode (the default, which the `sfumato` command uses); exact +
`runtime.keep_freed_memory()`; sfumato's fast mode; any of them with `+cache` (`exact+cache`,
`cli+cache`): the packed-weight cache on (`SFUMATO_PACKED_CACHE`, a folder next to the fixture, filled
by one untimed run first, so the timed processes map their packed weights). Each speed figure comes with an output check against
diffusers: max |difference| of the final images in [0, 1] (exact mode must stay within 1/255).
The folder is built once by bench/sd_fixture.py. Also: per-step framework cost on the tiny test
pipeline with a stub UNet. See bench/README.md for the latest table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
FIGURES = [  # key, label, unit
    ("e2e_s", "end-to-end image (warm)", "s"),
    ("process_s", "whole process: import+load+first image", "s"),
    ("import_s", "  of which interpreter + import", "s"),
    ("load_s", "  of which loading (`from_pretrained`)", "s"),
    ("first_s", "  of which the first image", "s"),
    ("unet_s", "UNet call (batch 2)", "s"),
    ("vae_s", "VAE decode", "s"),
    ("text_s", "text encode (2 prompts)", "s"),
    ("peak_rss", "peak RSS", "GiB"),
]
WHOLE = ("process_s", "import_s", "load_s", "first_s", "peak_rss")  # what `--only-whole` measures


def cpu_line() -> str:
    import torch

    from sfumato.runtime.cpu import cpu_info

    cpu = cpu_info()
    return f"{cpu.model} | {cpu.isa} | torch {torch.__version__}, {torch.get_num_threads()} threads"


def machine_peak(dtype) -> float:
    """GFLOP/s of the fastest of a large GEMM and a channels-last 3x3 conv, in `dtype`."""
    import torch

    best = 0.0
    with torch.no_grad():
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(dtype=dtype, memory_format=torch.channels_last)
        x = torch.randn(2, 320, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
        for fn, flops in ((lambda: a @ b, 2 * 2048**3), (lambda: conv(x), 2 * 2 * 320 * 320 * 9 * 32 * 32)):
            fn()
            start = time.perf_counter()
            for _ in range(5):
                fn()
            best = max(best, flops * 5 / (time.perf_counter() - start) / 1e9)
    return best


def unet_gflop(model: str, size: int) -> float:
    """FLOPs of one UNet call (batch 2) at `size` px, counted on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sd_fixture import MODELS
    from sfumato import UNet2DConditionModel
    from speed_worker import unet_inputs

    with torch.device("meta"):
        unet = UNet2DConditionModel(**MODELS[model][0])
    (x, t), kwargs = unet_inputs(unet, size, torch.float32, torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x.to("meta"), t.to("meta"), **_to_meta(kwargs))
    return counter.get_total_flops() / 1e9


def _to_meta(value):
    if isinstance(value, dict):
        return {k: _to_meta(v) for k, v in value.items()}
    return value.to("meta")


def scheduler_name(folder: Path) -> str:
    return json.loads((folder / "model_index.json").read_text())["scheduler"][1].removesuffix("Scheduler")


def run_worker(
    lib: str, mode: str, folder: Path, size: int, dtype: str, out: Path, first_only: bool = False
) -> dict:
    cmd = [sys.executable, str(HERE / "speed_worker.py"), lib, str(folder), str(size), dtype, mode]
    cmd += [repr(time.time()), str(out)] + (["--first-only"] if first_only else [])
    env = dict(os.environ)
    env.pop("SFUMATO_PACKED_CACHE", None)
    if mode.startswith("cli"):  # what the sfumato command's own process asks for (sfumato.cli.use_huge_pages)
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    if mode.endswith("+cache"):
        env["SFUMATO_PACKED_CACHE"] = str(packed_cache_folder(folder))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{lib} {mode} {size} {dtype} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def packed_cache_folder(folder: Path) -> Path:
    """The packed-weight cache of the `+cache` variants: next to the fixture, kept between runs."""
    return folder.parent / f"packed-{folder.name}"


def compare(
    variants: list[tuple[str, str]],
    folder: Path,
    size: int,
    dtype: str,
    repeats: int,
    flops: float,
    title: str,
    only_whole: bool = False,
) -> None:
    runs: dict[tuple[str, str], list[dict]] = {v: [] for v in variants}
    figures = [f for f in FIGURES if f[0] in WHOLE] if only_whole else FIGURES
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for lib, mode in variants:
            if mode.endswith("+cache"):  # one untimed run packs and writes what the timed ones map
                start = time.time()
                run_worker(lib, mode, folder, size, dtype, Path(tmp) / "fill.npz", first_only=True)
                print(
                    f"  {size}px {dtype} {lib} {mode}: cache filled in {time.time() - start:.0f} s",
                    flush=True,
                )
        for r in range(repeats):
            order = variants if r % 2 == 0 else variants[::-1]  # A B / B A: drift hits both alike
            for lib, mode in order:
                out = Path(tmp) / f"{lib}-{mode}.npz"
                runs[(lib, mode)].append(run_worker(lib, mode, folder, size, dtype, out, only_whole))
                outputs[(lib, mode)] = dict(np.load(out))
                key = "process_s" if only_whole else "e2e_s"
                print(
                    f"  {size}px {dtype} {lib} {mode} run {r + 1}: {key} {runs[(lib, mode)][-1][key]:.1f} s",
                    flush=True,
                )
    ref = variants[0]
    med = {v: {k: statistics.median(run[k] for run in runs[v]) for k, _, _ in figures} for v in variants}
    head = [f"{lib} {mode}" for lib, mode in variants]
    print(
        f"\n### {title}, {size} px, {dtype}, {scheduler_name(folder)} 4 steps, CFG 7.5 (median of {repeats})\n"
    )
    print("| figure | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(variants))
    for key, label, unit in figures:
        cells = []
        for v in variants:
            value = med[v][key] / (2**30 if unit == "GiB" else 1)
            cell = f"{value:.2f} {unit}"
            if v != ref:
                cell += f" ({med[v][key] / med[ref][key]:.2f}×)"
            cells.append(cell)
        print(f"| {label} | " + " | ".join(cells) + " |")
    if not only_whole:
        gflops = [f"{flops / med[v]['unet_s']:.0f}" for v in variants]
        print("| UNet GFLOP/s | " + " | ".join(gflops) + " |")
    diffs = []
    for v in variants:
        image = np.abs(outputs[v]["image"] - outputs[ref]["image"]).max()
        diff = f"image {image * 255:.2f}/255"
        if not only_whole:
            unet = (
                np.abs(outputs[v]["unet"] - outputs[ref]["unet"]).max() / np.abs(outputs[ref]["unet"]).max()
            )
            diff += f", UNet {unet:.1e}"
        diffs.append(diff)
    print("| output vs diffusers | " + " | ".join(diffs) + " |")


class _StubOutput(tuple):
    """What a UNet returns, read either as `out[0]` (return_dict=False) or `out.sample`."""

    @property
    def sample(self):
        return self[0]


def per_step_cost(steps: int = 200) -> None:
    """ms per denoising step of the tiny test pipeline whose UNet is replaced by a stub."""
    import torch

    sys.path.insert(0, str(HERE.parent / "tests"))
    import diffusers

    import sfumato
    from pipelines.sd.components import save_sd

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_sd(Path(tmp))
        pipes = {
            "diffusers": diffusers.StableDiffusionPipeline.from_pretrained(folder),
            "sfumato": sfumato.StableDiffusionPipeline.from_pretrained(folder),
        }
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
        pipe.unet.forward = lambda sample, *args, **kwargs: _StubOutput((sample * 0.5,))
    times: dict[str, list[float]] = {name: [] for name in pipes}
    for _ in range(5):
        for name, pipe in pipes.items():
            spans = []
            for n in (steps, 10):
                start = time.perf_counter()
                pipe(
                    "a cat",
                    num_inference_steps=n,
                    output_type="latent",
                    generator=torch.Generator().manual_seed(0),
                )
                spans.append(time.perf_counter() - start)
            times[name].append((spans[0] - spans[1]) / (steps - 10) * 1000)
    d, s = (statistics.median(times[n]) for n in ("diffusers", "sfumato"))
    print(
        f"\nper-step cost, tiny pipeline, stub UNet, PNDM + CFG: diffusers {d:.3f} ms, sfumato {s:.3f} ms ({s / d:.2f}×)"
    )


def load_memory(folder: Path) -> None:
    """Peak RSS of loading with a dtype conversion (fp32 files as bf16, fp16 files as fp32)."""
    print("\n### loading with a dtype conversion (every weight read once)\n")
    print("| files → dtype | weights | diffusers peak RSS | sfumato peak RSS | ratio |")
    print("|---|---|---|---|---|")
    for variant, dtype in (("none", "bfloat16"), ("fp16", "float32")):
        stats = {}
        for lib in ("diffusers", "sfumato"):
            cmd = [sys.executable, str(HERE / "speed_worker.py"), lib, "--load", str(folder), dtype, variant]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"{lib} load failed:\n{result.stderr[-3000:]}")
            stats[lib] = json.loads(result.stdout.strip().splitlines()[-1])
        d, s = stats["diffusers"], stats["sfumato"]
        files = "fp32" if variant == "none" else variant
        print(
            f"| {files} → {dtype} | {s['weights'] / 2**30:.2f} GiB | {d['peak_rss'] / 2**30:.2f} GiB "
            f"| {s['peak_rss'] / 2**30:.2f} GiB | {s['peak_rss'] / d['peak_rss']:.2f}× |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--dtypes", nargs="+", default=None, help="default: float32, plus bfloat16 on native-bf16 CPUs"
    )
    parser.add_argument("--variants", nargs="+", default=["exact", "cli", "fast"])
    parser.add_argument("--model", choices=["sd15", "sdxl"], default="sd15", help="SD1.5 or SDXL base layout")
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--skip-per-step", action="store_true")
    parser.add_argument("--only-per-step", action="store_true")
    parser.add_argument(
        "--only-whole",
        action="store_true",
        help="each process stops after its first image: whole-process rows only",
    )
    args = parser.parse_args()

    import torch

    from sd_fixture import MODELS
    from sfumato.runtime.cpu import cpu_info

    print(f"{time.strftime('%Y-%m-%d')} | {cpu_line()}")
    if args.only_per_step:
        return per_step_cost()
    dtypes = args.dtypes or (["float32", "bfloat16"] if cpu_info().native_bf16 else ["float32"])
    for dtype in dtypes:
        print(f"machine peak {dtype}: {machine_peak(getattr(torch, dtype)):.0f} GFLOP/s (best of GEMM, conv)")
    build = MODELS[args.model][1]
    folder = build(args.folder) if args.folder else build()
    variants = [("diffusers", "default")] + [("sfumato", m) for m in args.variants]
    title = {"sd15": "SD1.5", "sdxl": "SDXL"}[args.model]
    for size in args.sizes:
        flops = unet_gflop(args.model, size)
        print(f"{title} UNet call at {size} px: {flops:.0f} GFLOP")
        for dtype in dtypes:
            compare(variants, folder, size, dtype, args.repeats, flops, title, args.only_whole)
    if not args.only_whole:
        load_memory(folder)
    if not args.skip_per_step and not args.only_whole:
        per_step_cost()


if __name__ == "__main__":
    main()
