"""`sfumato generate PROMPT`: text-to-image, image-to-image (`--image`) and inpainting (`--mask`)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from .. import infotext
from .errors import UsageError
from .output import planned_paths, write_png

DTYPES = ("auto", "fast", "float32", "bfloat16", "float16")


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "generate",
        help="make images from a prompt",
        description="Make images from a prompt. PNGs carry their generation parameters (A1111 format).",
    )
    p.add_argument("prompt", help="what to draw")
    p.add_argument("--model", help="Hub id or local pipeline folder (default: the bundled demo model)")
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument(
        "--scheduler", metavar="NAME", help='sampler: A1111 name ("DPM++ 2M Karras") or class name'
    )
    p.add_argument("--seed", type=int, help="seed of the first image; image i uses seed+i (default: random)")
    p.add_argument("--width", type=int, help="image width, a multiple of 8 (default: the model's size)")
    p.add_argument("--height", type=int, help="image height, a multiple of 8 (default: the model's size)")
    p.add_argument("--num-images", type=int, default=1, metavar="N", help="how many images (default 1)")
    p.add_argument("--image", metavar="PATH", help="start from this image (image-to-image)")
    p.add_argument("--strength", type=float, default=0.75, help="how much of --image to repaint, in (0, 1]")
    p.add_argument("--mask", metavar="PATH", help="white = repaint, black = keep (inpainting; needs --image)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="compute dtype (auto: float32 on CPU, float16 on CUDA; fast: bfloat16 on CPUs with native bf16)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument(
        "--freeu",
        nargs=4,
        type=float,
        metavar=("S1", "S2", "B1", "B2"),
        help="FreeU's skip (s) and backbone (b) factors for the first two up stages, e.g. 0.9 0.2 1.5 1.6 "
        "for SD1.5, 0.6 0.4 1.1 1.2 for SDXL",
    )
    p.add_argument(
        "--packed-cache",
        nargs="?",
        const=True,
        metavar="DIR",
        help="CPU: keep the UNet's packed weights on disk, so later runs start 2-3 s sooner (SD1.5); "
        "takes a copy of the UNet's size (default folder ~/.cache/sfumato/packed; also SFUMATO_PACKED_CACHE=1)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--output", metavar="FILE.png", help="write here (FILE-1.png, FILE-2.png … for several)")
    out.add_argument("--outdir", default="outputs", help="folder for NNNNN-SEED.png files (default outputs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files named by --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def bundled_model() -> Path:
    from .. import assets

    folder = Path(assets.__file__).parent / "demo_model"
    if not (folder / "model_index.json").is_file():
        raise UsageError("this installation has no bundled model; pass --model with a Hub id or a folder")
    return folder


def check_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked without loading a model."""
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.num_images < 1:
        raise UsageError(f"--num-images must be at least 1, got {args.num_images}")
    if args.guidance < 0:
        raise UsageError(f"--guidance must be ≥ 0, got {args.guidance}")
    for name in ("width", "height"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 8):
            lower, upper = max(8, value - value % 8), value - value % 8 + 8
            raise UsageError(f"--{name} {value} is not a positive multiple of 8; try {lower} or {upper}")
    if args.mask and not args.image:
        raise UsageError("--mask needs --image: the mask says which part of that image to repaint")
    if not 0 < args.strength <= 1:
        raise UsageError(f"--strength must be in (0, 1], got {args.strength}")
    for flag in ("image", "mask"):
        path = getattr(args, flag)
        if path is not None:
            _check_image_file(path, flag)
    if args.freeu and min(args.freeu) <= 0:
        raise UsageError(
            f"--freeu factors must be positive (S1 S2 B1 B2), got {' '.join(map(str, args.freeu))}"
        )
    if args.scheduler:
        from ..schedulers import from_name

        try:
            from_name(args.scheduler)
        except ValueError as err:
            raise UsageError(f"--scheduler: {err}") from None


def _check_image_file(path: str, flag: str) -> None:
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise UsageError(f"--{flag} {path}: no such file")
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"--{flag} {path}: not a readable image ({err})") from None


def resolve_model(model: str | None) -> str:
    if model is None:
        return str(bundled_model())
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--model {model}: a pipeline folder or Hub id is expected, not a file")
        if not (path / "model_index.json").is_file():
            raise UsageError(
                f"--model {model}: the folder has no model_index.json, so it is not a pipeline folder"
            )
    return model


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    model = resolve_model(args.model)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    seeds = [seed + i for i in range(args.num_images)]
    paths = planned_paths(args.num_images, seeds, args.output, args.outdir, args.overwrite)
    try:
        pipe = _load(model, args)
        images = _generate(pipe, args, seeds)
    except (ValueError, TypeError, OSError) as err:  # our errors say what to fix; one line is enough
        if args.debug:
            raise
        raise UsageError(str(err)) from None
    sampler = _sampler_name(pipe.scheduler)
    for image, path, image_seed in zip(images, paths, seeds):
        text = infotext.build(
            args.prompt,
            negative_prompt=args.negative_prompt,
            steps=args.steps,
            sampler=sampler,
            cfg_scale=args.guidance,
            seed=image_seed,
            width=image.width,
            height=image.height,
            model=Path(model).name if Path(model).exists() else model,
            denoising_strength=args.strength if args.image else None,
            extra={"FreeU": ", ".join(f"{f:g}" for f in args.freeu)} if args.freeu else None,
        )
        details = {
            "model": model,
            "scheduler": type(pipe.scheduler).__name__,
            "seed": image_seed,
            "dtype": args.dtype,
            "prompt": args.prompt,
            "negative_prompt": args.negative_prompt,
        }
        if args.freeu:
            details["freeu"] = dict(zip(("s1", "s2", "b1", "b2"), args.freeu))
        write_png(image, path, text, details, args.overwrite)
        print(path)
    return 0


def _load(model: str, args: argparse.Namespace) -> Any:
    import torch

    import sfumato

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = dtypes.get(args.dtype, args.dtype)
    if dtype == "auto":
        dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    task = "Inpainting" if args.mask else "Image2Image" if args.image else "Text2Image"
    if args.quiet:
        _silence_loading_bars()
    # This is our own process, so freed memory may stay in it: without, glibc page-faults every big
    # activation afresh, and on the VMs measured a 4 KiB fault costs ~1.5 us. A 512 px SD1.5 image
    # took 0.76x diffusers' time against 0.81x (AVX2 EPYC), a 256 px one the same, at a peak 1-4%
    # higher (bench/README.md). A library user opts in the same way.
    if args.device == "cpu":
        from ..runtime import memory

        memory.keep_freed_memory()
    pipe = getattr(sfumato, f"AutoPipelineFor{task}").from_pretrained(
        model, torch_dtype=dtype, optimize=False
    )
    if args.scheduler:
        from ..schedulers import from_name

        pipe.scheduler = from_name(args.scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=args.quiet, file=sys.stderr)
    if args.freeu:
        s1, s2, b1, b2 = args.freeu
        pipe.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)
    pipe.to(args.device)
    return pipe.optimize("fast" if args.dtype == "fast" else "exact", packed_cache=args.packed_cache)


def _silence_loading_bars() -> None:
    """No download or loading bars from huggingface_hub and transformers (this is our own process).

    Through the variable both read when imported: loading an SD folder imports neither library (importing
    transformers just to turn its bars off cost 0.5-1 s); if one is loaded already, through its switch.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def _generate(pipe: Any, args: argparse.Namespace, seeds: list[int]) -> list[Any]:
    import torch
    from PIL import Image

    kwargs: dict[str, Any] = {"width": args.width, "height": args.height}
    if args.image:
        image = Image.open(args.image).convert("RGB")
        if not args.mask:  # image-to-image keeps the input's size: resize the input instead
            del kwargs["width"], kwargs["height"]
            if args.width or args.height:
                image = image.resize((args.width or image.width, args.height or image.height), Image.LANCZOS)
        kwargs["image"] = image
        kwargs["strength"] = args.strength
    if args.mask:
        kwargs["mask_image"] = Image.open(args.mask).convert("L")
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    result = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt or None,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images_per_prompt=len(seeds),
        generator=generators,
        **kwargs,
    )
    return result.images


def _sampler_name(scheduler: Any) -> str:
    try:
        from ..schedulers import to_name

        return to_name(scheduler)
    except (ImportError, ValueError):
        return type(scheduler).__name__
