"""Latent consistency models (Luo et al. 2023): boundary-condition scalings and the multistep re-noising."""

from __future__ import annotations

from torch import Tensor


def consistency_scalings(t, timestep_scaling: float, sigma_data: float = 0.5) -> tuple:
    """(c_skip, c_out) of the consistency parametrisation f(x, t) = c_skip x + c_out x0 (Song et al. 2023)."""
    scaled = t * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def lcm_renoise(denoised: Tensor, alpha_bar_prev: Tensor, noise: Tensor) -> Tensor:
    """Jump back to noise level t_prev from the consistency estimate: q(x_{t_prev} | x0 = denoised)."""
    return alpha_bar_prev.sqrt() * denoised + (1 - alpha_bar_prev).sqrt() * noise
