"""Rectified-flow sampling (Liu et al. 2022; Esser et al. 2024): x_sigma = (1 - sigma) x0 + sigma eps, v = eps - x0."""

from __future__ import annotations

from torch import Tensor


def flow_euler_step(x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """Euler step of dx/dsigma = v."""
    return x + (sigma_next - sigma) * v


def flow_stochastic_step(x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor, noise: Tensor) -> Tensor:
    """Jump to x0 = x - sigma v, then re-noise to sigma_next with fresh noise."""
    x0 = x - sigma * v
    return (1.0 - sigma_next) * x0 + sigma_next * noise
