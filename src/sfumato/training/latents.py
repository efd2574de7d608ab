"""Precomputed training inputs for latent diffusion: VAE posterior moments and caption token ids.

The VAE is frozen while a UNet trains, so each image is encoded once; the posterior's mean and
log-variance are kept and a fresh latent is sampled from them at every step (as encoding on the fly
would). Captions are tokenized once, padded to the tokenizer's `model_max_length` like pipelines do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def tokenize(tokenizer: Any, captions: Sequence[str]) -> Tensor:
    """(N, model_max_length) int64 token ids, padded and truncated exactly as pipelines do at inference."""
    ids = tokenizer(
        list(captions),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids.long()


@torch.no_grad()
def encode_moments(vae: Any, dataset: Any, batch_size: int = 64, progress: bool = False) -> Tensor:
    """(N, 2C, h, w) posterior parameters [mean | logvar] of every `pixel_values` in `dataset`."""
    from tqdm.auto import tqdm

    was_training = vae.training
    vae.eval()
    chunks = []
    for start in tqdm(range(0, len(dataset), batch_size), desc="encoding", disable=not progress):
        stop = min(start + batch_size, len(dataset))
        pixels = torch.stack([dataset[i]["pixel_values"] for i in range(start, stop)])
        chunks.append(vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters.float().cpu())
    vae.train(was_training)
    return torch.cat(chunks)


def measure_scaling_factor(moments: Tensor, seed: int = 0) -> float:
    """1 / std of latents sampled from `moments`: the factor that gives the UNet unit-variance inputs.

    Stable Diffusion chose its 0.18215 the same way, from the latents of a batch of training images.
    """
    from ..models.distributions import DiagonalGaussianDistribution

    generator = torch.Generator().manual_seed(seed)
    z = DiagonalGaussianDistribution(moments).sample(generator)
    return float(1.0 / z.float().std())


class LatentCaptionDataset(torch.utils.data.Dataset):
    """Items `(moments, input_ids)`: (2C, h, w) posterior parameters and (L,) caption token ids."""

    def __init__(self, moments: Tensor, input_ids: Tensor) -> None:
        if len(moments) != len(input_ids):
            raise ValueError(f"{len(moments)} latents but {len(input_ids)} captions")
        self.moments, self.input_ids = moments, input_ids

    def __len__(self) -> int:
        return len(self.moments)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.moments[index], self.input_ids[index]


def build_latent_dataset(
    vae: Any, tokenizer: Any, dataset: Any, captions: Sequence[str], progress: bool = False
) -> LatentCaptionDataset:
    """Encode every image of `dataset` and tokenize `captions` (one per image)."""
    if len(captions) != len(dataset):
        raise ValueError(f"{len(dataset)} images but {len(captions)} captions")
    return LatentCaptionDataset(
        encode_moments(vae, dataset, progress=progress), tokenize(tokenizer, captions)
    )


def cached(path: Path, build: Callable[[], LatentCaptionDataset]) -> LatentCaptionDataset:
    """The dataset saved at `path`, or `build()` saved there (a resumed run reuses the encoding)."""
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return LatentCaptionDataset(saved["moments"], saved["input_ids"])
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"moments": data.moments, "input_ids": data.input_ids}, path)
    return data
