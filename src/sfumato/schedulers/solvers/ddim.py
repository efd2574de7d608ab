"""Denoising diffusion implicit models (Song et al. 2021)."""

from __future__ import annotations

from torch import Tensor


def ddim_std(alpha_bar: Tensor, alpha_bar_prev: Tensor, eta: float) -> Tensor:
    """sigma_t of Song et al. 2021 eq. (16), scaled by eta (0 = deterministic DDIM, 1 = DDPM)."""
    variance = ((1 - alpha_bar_prev) / (1 - alpha_bar)) * (1 - alpha_bar / alpha_bar_prev)
    return eta * variance**0.5


def ddim_step(x0: Tensor, eps: Tensor, alpha_bar_prev: Tensor, std: Tensor | float) -> Tensor:
    """x_{t-1} without the random part, Song et al. 2021 eq. (12)."""
    direction = (1 - alpha_bar_prev - std**2) ** 0.5 * eps
    return alpha_bar_prev**0.5 * x0 + direction
