"""Fine-tune the UNet of an existing text-to-image pipeline on a folder of captioned images.

The VAE and text encoder stay frozen; images are encoded once (posterior moments, sampled each step).
The output folder is a copy of the source pipeline with the new `unet/`, so it loads wherever the
source did; `output/training/` holds the resumable checkpoints.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .export import WeightsDtype
from .loop import TrainConfig, TrainResult, train
from .objectives import text_to_image_objective

TRAINING = "training"
NEEDED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class FinetuneConfig:
    model: str | Path
    data_dir: str | Path
    output_dir: str | Path
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    resolution: int | None = None  # default: the UNet's sample_size × the VAE's factor
    caption_column: str = "text"
    caption_dropout: float = 0.0
    snr_gamma: float | None = None
    max_minutes: float | None = None
    save_every: int = 500
    seed: int = 0
    weights_dtype: WeightsDtype = "float32"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps}, {self.batch_size}")
        if self.resolution is not None and (self.resolution <= 0 or self.resolution % 8):
            raise ValueError(f"resolution must be a positive multiple of 8, got {self.resolution}")


def check_pipeline_folder(folder: Path) -> dict[str, Any]:
    """model_index.json of a text-to-image pipeline folder; ValueError naming what is missing."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"{folder} has no model_index.json, so it is not a pipeline folder")
    index = json.loads(index_file.read_text())
    missing = [n for n in NEEDED if not isinstance(index.get(n), list) or index[n][0] is None]
    if missing:
        raise ValueError(f"{folder} is not a text-to-image pipeline: model_index.json lacks {missing}")
    return index


def load_components(folder: Path) -> dict[str, Any]:
    """UNet, VAE (float32), frozen text encoder, tokenizer and a DDPM training scheduler from `folder`."""
    from transformers import CLIPTokenizer

    from ..models.autoencoder_kl import AutoencoderKL
    from ..models.clip_text import CLIPTextModel
    from ..models.unet_2d_condition import UNet2DConditionModel
    from ..schedulers.ddpm import DDPMScheduler

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").eval().requires_grad_(False)
    text_encoder = (
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval().requires_grad_(False)
    )
    return {
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        # the model's own noise schedule and prediction type, whatever sampler the folder names
        "scheduler": DDPMScheduler.from_config(DDPMScheduler.load_config(folder, subfolder="scheduler")),
    }


def finetune(cfg: FinetuneConfig) -> tuple[Path, TrainResult]:
    """Train `cfg.model`'s UNet on `cfg.data_dir`; the result is a pipeline folder at `cfg.output_dir`."""
    from ..hub import resolve_folder
    from .captions import ImageCaptionFolder
    from .latents import build_latent_dataset, cached, tokenize

    source = resolve_folder(cfg.model)
    check_pipeline_folder(source)
    parts = load_components(source)
    unet, vae, tokenizer = parts["unet"], parts["vae"], parts["tokenizer"]
    resolution = cfg.resolution or _native_resolution(unet, vae)
    images = ImageCaptionFolder(cfg.data_dir, size=resolution, caption_column=cfg.caption_column)
    output = Path(cfg.output_dir)

    def build() -> Any:
        return build_latent_dataset(vae, tokenizer, images, [c for _, c in images.items], cfg.progress)

    data = cached(output / TRAINING / "latents.pt", build)
    loop = TrainConfig(
        output_dir=output / TRAINING,
        max_steps=cfg.steps,
        max_minutes=cfg.max_minutes,
        batch_size=min(cfg.batch_size, len(data)),
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        save_every=cfg.save_every,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    scheduler = parts["scheduler"]
    objective = text_to_image_objective(
        unet, parts["text_encoder"], scheduler.alphas_cumprod, vae.config.scaling_factor,
        tokenize(tokenizer, [""])[0], scheduler.config.prediction_type, cfg.snr_gamma, cfg.caption_dropout,
    )  # fmt: skip
    result = train(loop, {"unet": unet}, objective, data)
    _write_output(source, output, unet.eval(), cfg.weights_dtype)
    return output, result


def _native_resolution(unet: Any, vae: Any) -> int:
    size = unet.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) * 2 ** (len(vae.config.block_out_channels) - 1)


def _write_output(source: Path, output: Path, unet: Any, weights_dtype: WeightsDtype) -> None:
    """Copy the source pipeline (all but its UNet) into `output`, then save the fine-tuned UNet there."""
    from .export import save_half

    if source.resolve() != output.resolve():
        skip = {"unet", TRAINING}
        shutil.copytree(source, output, ignore=lambda d, names: skip if Path(d) == source else (),
                        dirs_exist_ok=True)  # fmt: skip
    shutil.rmtree(output / "unet", ignore_errors=True)
    if weights_dtype == "float16":
        save_half(unet, output / "unet")
    else:
        unet.save_pretrained(output / "unet")
