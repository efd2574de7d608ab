"""The VAE posterior: a diagonal Gaussian over latents, parametrised by mean and log-variance."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..nn.random import randn_tensor


class DiagonalGaussianDistribution:
    """N(mean, exp(logvar)) per latent element; `parameters` is (B, 2C, h, w) = [mean | logvar]."""

    def __init__(self, parameters: Tensor, deterministic: bool = False):
        self.parameters = parameters
        self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(self.logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)
        if deterministic:
            self.var = self.std = torch.zeros_like(self.mean)

    def sample(self, generator: torch.Generator | list[torch.Generator] | None = None) -> Tensor:
        """mean + std · noise, the noise drawn like diffusers (same shape, dtype and device)."""
        eps = randn_tensor(
            self.mean.shape, generator=generator, device=self.parameters.device, dtype=self.parameters.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self, other: DiagonalGaussianDistribution | None = None) -> Tensor:
        """KL(self ‖ other) per batch item; `other=None` means the standard normal."""
        if self.deterministic:
            return torch.tensor([0.0])
        if other is None:
            return 0.5 * torch.sum(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
        return 0.5 * torch.sum(
            (self.mean - other.mean).pow(2) / other.var
            + self.var / other.var
            - 1.0
            - self.logvar
            + other.logvar,
            dim=[1, 2, 3],
        )

    def nll(self, sample: Tensor, dims: tuple[int, ...] = (1, 2, 3)) -> Tensor:
        """Negative log-likelihood of `sample`, summed over `dims`."""
        if self.deterministic:
            return torch.tensor([0.0])
        return 0.5 * torch.sum(
            math.log(2.0 * math.pi) + self.logvar + (sample - self.mean).pow(2) / self.var, dim=list(dims)
        )
