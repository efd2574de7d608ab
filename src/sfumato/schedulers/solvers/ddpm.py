"""Ancestral sampling of Ho et al. 2020 (DDPM): posterior mean and variance of q(x_{t-1} | x_t, x0)."""

from __future__ import annotations

import torch
from torch import Tensor


def ddpm_posterior_mean(x: Tensor, x0: Tensor, alpha_bar: Tensor, alpha_bar_prev: Tensor) -> Tensor:
    """Mean of q(x_{t-1} | x_t, x0), Ho et al. 2020 eq. (7)."""
    alpha_t = alpha_bar / alpha_bar_prev
    beta_t = 1 - alpha_t
    x0_coeff = (alpha_bar_prev**0.5 * beta_t) / (1 - alpha_bar)
    x_coeff = alpha_t**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar)
    return x0_coeff * x0 + x_coeff * x


def ddpm_noise_std(
    alpha_bar: Tensor, alpha_bar_prev: Tensor, variance_type: str, predicted_variance: Tensor | None = None
) -> Tensor:
    """Standard deviation of the noise added at a DDPM step (Nichol & Dhariwal 2021 for `learned_range`)."""
    beta_t = 1 - alpha_bar / alpha_bar_prev
    # beta tilde, the posterior variance, eq. (7) of Ho et al.
    variance = torch.clamp((1 - alpha_bar_prev) / (1 - alpha_bar) * beta_t, min=1e-20)
    if variance_type == "fixed_small":
        return variance**0.5
    if variance_type == "fixed_small_log":
        return torch.exp(0.5 * torch.log(variance))
    if variance_type in ("fixed_large", "fixed_large_log"):
        return beta_t**0.5
    if variance_type == "learned":
        return predicted_variance**0.5
    if variance_type == "learned_range":
        frac = (predicted_variance + 1) / 2
        log_variance = frac * torch.log(beta_t) + (1 - frac) * torch.log(variance)
        return torch.exp(0.5 * log_variance)
    raise ValueError(f"unknown variance_type {variance_type!r}")
