"""Second-order steps in sigma: Heun (Karras et al. 2022, Algorithm 1) and DPM-Solver-2 (k-diffusion `sample_dpm_2`)."""

from __future__ import annotations

from torch import Tensor


def derivative(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """dx/dsigma of the probability-flow ODE: (x - x0) / sigma."""
    return (x - x0) / sigma


def heun_step(x: Tensor, d: Tensor, d_next: Tensor, dt: Tensor) -> Tensor:
    """Trapezoidal correction: x + dt * (d + d_next) / 2."""
    return x + (d + d_next) / 2 * dt


def midpoint_step(x: Tensor, d_mid: Tensor, dt: Tensor) -> Tensor:
    """Full step with the derivative taken at the (log-)midpoint sigma (DPM-Solver-2)."""
    return x + d_mid * dt
