"""Train an unconditional `UNet2DModel` (pixel-space DDPM, Ho et al. 2020) on a folder of images.

Saved as a standard `DDPMPipeline` folder (`model_index.json`, `unet/`, `scheduler/`); `output/training/`
holds the resumable checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .export import WeightsDtype, save_pipeline_folder
from .loop import TrainConfig, TrainResult, train
from .objectives import diffusion_loss

TRAINING = "training"


class ImageFolder(torch.utils.data.Dataset):
    """Every image under `root` (recursively), resized and center-cropped to `size`: (3, size, size) in [-1, 1]."""

    def __init__(self, root: str | Path, size: int) -> None:
        from .captions import IMAGE_EXTENSIONS

        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root} is not a folder")
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise ValueError(f"no images in {self.root} (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from .captions import load_image
        from .image_transforms import resize_center_crop, to_tensor

        return to_tensor(resize_center_crop(load_image(self.paths[index]), self.size))


@dataclass
class UnconditionalConfig:
    data_dir: str | Path
    output_dir: str | Path
    resolution: int = 32
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    steps: int = 5000
    batch_size: int = 16
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    beta_schedule: Literal["linear", "squaredcos_cap_v2"] = "linear"
    snr_gamma: float | None = None
    max_minutes: float | None = None
    save_every: int = 500
    seed: int = 0
    weights_dtype: WeightsDtype = "float32"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps}, {self.batch_size}")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.resolution <= 0 or self.resolution % factor:
            raise ValueError(f"resolution must be a positive multiple of {factor}, got {self.resolution}")


def build_unet(cfg: UnconditionalConfig) -> Any:
    """DownBlock2D first, self-attention in the lower-resolution stages (as DDPM's 32×32 model)."""
    from ..models.unet_2d import UNet2DModel

    n = len(cfg.block_out_channels)
    return UNet2DModel(
        sample_size=cfg.resolution,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (n - 1),
        up_block_types=("AttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        norm_num_groups=min(32, min(cfg.block_out_channels)),
        attention_head_dim=None,  # one head per attention layer
    )


def train_unconditional(cfg: UnconditionalConfig) -> tuple[Path, TrainResult]:
    """Train on `cfg.data_dir` (resuming if checkpoints exist) and save a DDPMPipeline folder."""
    from ..schedulers.ddpm import DDPMScheduler

    data = ImageFolder(cfg.data_dir, cfg.resolution)
    torch.manual_seed(cfg.seed)
    unet = build_unet(cfg)
    scheduler = DDPMScheduler(beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type)
    output = Path(cfg.output_dir)
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

    def objective(x0: torch.Tensor) -> torch.Tensor:
        model = lambda x, t: unet(x, t).sample  # noqa: E731
        return diffusion_loss(model, x0, scheduler.alphas_cumprod, cfg.prediction_type, cfg.snr_gamma)

    result = train(loop, {"unet": unet}, objective, data)
    save_pipeline_folder(output, "DDPMPipeline", {"unet": unet.eval(), "scheduler": scheduler}, None,
                         cfg.weights_dtype)  # fmt: skip
    return output, result
