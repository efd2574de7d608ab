"""`sfumato train shapes | finetune | unconditional`: the training tasks of `sfumato.training`.

Every run checkpoints into `OUTPUT/training/` and `--resume` continues it exactly; a folder that
already holds something is refused without `--resume`, so a run never overwrites another by accident.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import UsageError

PRESETS = ("tiny", "small", "small-f2", "base")


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "train", help="train a model", description="Train a model; checkpoints are saved as it goes."
    )
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)

    shapes = tasks.add_parser(
        "shapes",
        help="a small text-to-image model from scratch on generated shapes",
        description="Train a VAE, then a UNet and a CLIP text encoder, on procedurally drawn captioned "
        "shapes; the output folder is a StableDiffusionPipeline.",
    )
    shapes.add_argument("--preset", choices=PRESETS, default="small", help="model sizes (default small)")
    shapes.add_argument("--steps", type=int, default=8000, help="UNet steps (default 8000)")
    shapes.add_argument("--vae-steps", type=int, default=3000, help="VAE steps (default 3000)")
    shapes.add_argument("--batch-size", type=int, default=32, help="UNet batch size (default 32)")
    shapes.add_argument("--learning-rate", type=float, default=1e-3, help="UNet learning rate (default 1e-3)")
    shapes.add_argument("--num-images", type=int, default=20_000, help="training images (default 20000)")
    _common(shapes)
    shapes.set_defaults(run=run_shapes)

    fine = tasks.add_parser(
        "finetune",
        help="fine-tune a pipeline's UNet on captioned images",
        description="Fine-tune the UNet of a text-to-image pipeline on a folder of images with captions "
        "(metadata.jsonl, or a .txt file beside each image).",
    )
    fine.add_argument("model", help="pipeline folder or Hub id")
    fine.add_argument("--data", required=True, metavar="FOLDER", help="captioned images")
    fine.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    fine.add_argument("--batch-size", type=int, default=4, help="batch size (default 4)")
    fine.add_argument("--learning-rate", type=float, default=1e-5, help="learning rate (default 1e-5)")
    fine.add_argument("--resolution", type=int, help="image side (default: the model's)")
    _common(fine)
    fine.set_defaults(run=run_finetune)

    uncond = tasks.add_parser(
        "unconditional",
        help="an unconditional pixel-space model on an image folder",
        description="Train a UNet2DModel with DDPM on every image in a folder; saved as a DDPMPipeline.",
    )
    uncond.add_argument("--data", required=True, metavar="FOLDER", help="images (searched recursively)")
    uncond.add_argument("--resolution", type=int, default=32, help="image side (default 32)")
    uncond.add_argument("--steps", type=int, default=5000, help="training steps (default 5000)")
    uncond.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    uncond.add_argument("--learning-rate", type=float, default=2e-4, help="learning rate (default 2e-4)")
    _common(uncond)
    uncond.set_defaults(run=run_unconditional)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, metavar="DIR", help="where the model and checkpoints go")
    p.add_argument("--max-minutes", type=float, help="stop (and save) after this many minutes")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --output")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint interval in steps (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--fp16-weights", action="store_true", help="store the weights in float16 (half size)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check_common(args: argparse.Namespace) -> None:
    """Checks shared by every task, before anything is loaded or written."""
    for flag in ("steps", "batch_size", "save_every", "vae_steps", "num_images", "threads"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise UsageError(f"--max-minutes must be positive, got {args.max_minutes}")
    if args.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be positive, got {args.learning_rate}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: is a file, expected a folder")
    if output.is_dir() and any(output.iterdir()) and not args.resume:
        raise UsageError(
            f"--output {output} is not empty; pass --resume to continue its run or choose a new folder"
        )


def _check_data(args: argparse.Namespace, captions: bool) -> None:
    from ..training.captions import find_captioned_images
    from ..training.unconditional import ImageFolder

    if not Path(args.data).is_dir():
        raise UsageError(f"--data {args.data}: no such folder")
    try:
        find_captioned_images(args.data) if captions else ImageFolder(args.data, 8)
    except ValueError as err:
        raise UsageError(f"--data: {err}") from None


def _start(args: argparse.Namespace) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _finish(output: Path, result: Any) -> int:
    print(f"{output} (step {result.step}, stopped by {result.stopped_by})")
    return 0


def run_shapes(args: argparse.Namespace) -> int:
    check_common(args)
    from ..training import text_to_image as t2i

    try:
        cfg = t2i.ShapesTrainConfig(
            output_dir=args.output, model=t2i.PRESETS[args.preset], unet_steps=args.steps,
            vae_steps=args.vae_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
            num_images=args.num_images, max_minutes=args.max_minutes, save_every=args.save_every,
            seed=args.seed, weights_dtype="float16" if args.fp16_weights else "float32", progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    _start(args)
    output, result = t2i.train_shapes(cfg)
    return _finish(output, result)


def run_finetune(args: argparse.Namespace) -> int:
    check_common(args)
    model = Path(args.model).expanduser()
    if model.exists() and not (model / "model_index.json").is_file():
        raise UsageError(f"{args.model}: the folder has no model_index.json, so it is not a pipeline folder")
    _check_data(args, captions=True)
    from ..training.finetune import FinetuneConfig, check_pipeline_folder, finetune

    try:
        if model.exists():
            check_pipeline_folder(model)
        cfg = FinetuneConfig(
            model=args.model, data_dir=args.data, output_dir=args.output, steps=args.steps,
            batch_size=args.batch_size, learning_rate=args.learning_rate, resolution=args.resolution,
            max_minutes=args.max_minutes, save_every=args.save_every, seed=args.seed,
            weights_dtype="float16" if args.fp16_weights else "float32", progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    _start(args)
    output, result = finetune(cfg)
    return _finish(output, result)


def run_unconditional(args: argparse.Namespace) -> int:
    check_common(args)
    _check_data(args, captions=False)
    from ..training.unconditional import UnconditionalConfig, train_unconditional

    try:
        cfg = UnconditionalConfig(
            data_dir=args.data, output_dir=args.output, resolution=args.resolution, steps=args.steps,
            batch_size=args.batch_size, learning_rate=args.learning_rate, max_minutes=args.max_minutes,
            save_every=args.save_every, seed=args.seed,
            weights_dtype="float16" if args.fp16_weights else "float32", progress=not args.quiet,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    _start(args)
    output, result = train_unconditional(cfg)
    return _finish(output, result)
