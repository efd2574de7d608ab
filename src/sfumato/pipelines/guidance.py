"""Classifier-free guidance (Ho & Salimans 2022) and guidance rescale (Lin et al. 2023, sec. 3.4).

The model runs on a batch ordered `[negative, positive]` (diffusers' order), so its prediction
splits into `(eps_uncond, eps_cond)` by `chunk(2)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def cfg_combine(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """Guided prediction `eps_uncond + g * (eps_cond - eps_uncond)` (Ho & Salimans 2022, eq. 6)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def rescale_noise_cfg(eps_cfg: Tensor, eps_cond: Tensor, guidance_rescale: float) -> Tensor:
    """Rescale the guided prediction to the std of the conditional one, mixed by `phi` (Lin et al. 2023, eq. 15-16)."""
    dims = list(range(1, eps_cond.ndim))
    std_cond = eps_cond.std(dim=dims, keepdim=True)
    std_cfg = eps_cfg.std(dim=dims, keepdim=True)
    eps_rescaled = eps_cfg * (std_cond / std_cfg)
    return guidance_rescale * eps_rescaled + (1.0 - guidance_rescale) * eps_cfg


def check_guidance(guidance_scale: float, guidance_rescale: float = 0.0) -> None:
    """Raise a ValueError for NaN/inf scales; negative scales are valid (they only disable CFG)."""
    for name, value in (("guidance_scale", guidance_scale), ("guidance_rescale", guidance_rescale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"`{name}` must be a number, got {value!r} of type {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value}")


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """CFG as used by the denoising loop.

    Guidance is on iff `guidance_scale > 1` (diffusers' rule); when off, the model runs once on
    the positive batch only. `enabled=False` forces it off (e.g. guidance-distilled UNets with
    `time_cond_proj_dim`, which take the scale as an embedding instead).
    """

    guidance_scale: float = 7.5
    guidance_rescale: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        check_guidance(self.guidance_scale, self.guidance_rescale)

    @property
    def active(self) -> bool:
        return self.enabled and self.guidance_scale > 1.0

    def batch(self, x: Tensor) -> Tensor:
        """Model input for one step: `x` twice along the batch when guidance is active."""
        return torch.cat([x, x]) if self.active else x

    def __call__(self, prediction: Tensor) -> Tensor:
        """Combine the model's `[uncond, cond]` prediction into one guided prediction."""
        if not self.active:
            return prediction
        eps_uncond, eps_cond = prediction.chunk(2)
        eps = cfg_combine(eps_uncond, eps_cond, self.guidance_scale)
        if self.guidance_rescale > 0.0:
            eps = rescale_noise_cfg(eps, eps_cond, self.guidance_rescale)
        return eps


def cat_for_cfg(negative: Tensor | None, positive: Tensor, guidance: ClassifierFreeGuidance) -> Tensor:
    """Conditioning batch in diffusers' `[negative, positive]` order (just `positive` without CFG)."""
    if not guidance.active:
        return positive
    if negative is None:
        raise ValueError("classifier-free guidance needs negative embeddings; none were computed or passed")
    return torch.cat([negative, positive])
