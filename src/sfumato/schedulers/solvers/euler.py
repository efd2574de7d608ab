"""Euler and ancestral Euler steps of the probability-flow ODE in sigma (Karras et al. 2022, Algorithm 1)."""

from __future__ import annotations

from torch import Tensor


def euler_step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """x + (sigma_next - sigma) * dx/dsigma with dx/dsigma = (x - x0) / sigma."""
    derivative = (x - x0) / sigma
    return x + derivative * (sigma_next - sigma)


def ancestral_sigmas(sigma: Tensor, sigma_next: Tensor) -> tuple[Tensor, Tensor]:
    """(sigma_up, sigma_down): split a step to sigma_next into a deterministic part and fresh noise."""
    sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_up, sigma_down
