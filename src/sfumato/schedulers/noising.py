"""Forward process q(x_t | x0) for training and img2img: `add_noise` and `get_velocity`."""

from __future__ import annotations

from torch import Tensor

from .base import broadcast_to
from .prediction import alpha_sigma_from_ve


class AlphaBarNoiseMixin:
    """add_noise / get_velocity indexed by integer training timesteps (DDPM, DDIM, PNDM, LCM)."""

    alphas_cumprod: Tensor

    def _alpha_sigma(self, timesteps: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        self.alphas_cumprod = self.alphas_cumprod.to(device=like.device)
        alpha_bar = self.alphas_cumprod.to(dtype=like.dtype)[timesteps.to(like.device)]
        return broadcast_to(alpha_bar**0.5, like), broadcast_to((1 - alpha_bar) ** 0.5, like)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps."""
        alpha, sigma = self._alpha_sigma(timesteps, original_samples)
        return alpha * original_samples + sigma * noise

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 (Salimans & Ho 2022)."""
        alpha, sigma = self._alpha_sigma(timesteps, sample)
        return alpha * noise - sigma * sample


class SigmaNoiseMixin:
    """add_noise for schedulers whose state is a sigma table indexed by step (Euler family, DPM, UniPC)."""

    sigmas: Tensor
    timesteps: Tensor
    # True: x_t = x0 + sigma eps (Euler family); False: x_t = alpha x0 + sigma_vp eps (DPM-Solver family).
    _variance_exploding: bool = True

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        device = original_samples.device
        sigmas = self.sigmas.to(device=device, dtype=original_samples.dtype)
        indices = self._step_indices_for(timesteps, device)
        sigma = broadcast_to(sigmas[indices], original_samples)
        if self._variance_exploding:
            return original_samples + noise * sigma
        alpha_t, sigma_t = self._alpha_sigma_t(sigma)
        return alpha_t * original_samples + sigma_t * noise

    def _alpha_sigma_t(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return alpha_sigma_from_ve(sigma)

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x0 at (rounded) training timesteps t.

        diffusers' Euler indexes alpha_bar by the *step index* of t instead; we use t itself.
        """
        alpha_bar = self.alphas_cumprod.to(sample)[timesteps.to(sample.device).round().long()]
        return (
            broadcast_to(alpha_bar**0.5, sample) * noise
            - broadcast_to((1 - alpha_bar) ** 0.5, sample) * sample
        )
