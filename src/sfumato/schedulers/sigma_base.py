"""Shared wiring of the k-diffusion style schedulers (Euler, Euler a, LMS, Heun, KDPM2).

They integrate in the variance-exploding form x = x0 + sigma * eps: the model is fed
x / sqrt(sigma^2 + 1), `sigmas` holds one noise level per step plus the final one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import SchedulerMixin, StepIndexMixin
from .noising import SigmaNoiseMixin
from .schedules import sigma_schedule, sigmas_from_alpha_bar, train_schedule


class SigmaSchedulerBase(StepIndexMixin, SigmaNoiseMixin, SchedulerMixin):
    """Holds `timesteps`, `sigmas` and the step index; subclasses implement `set_timesteps` and `step`."""

    def _init_train_schedule(self) -> None:
        sigma_schedule(self.own_config)  # validates the use_*_sigmas flags early
        self.betas, self.alphas_cumprod = train_schedule(self.own_config)
        self.alphas = 1.0 - self.betas
        train = sigmas_from_alpha_bar(self.alphas_cumprod)
        n = self.config.num_train_timesteps
        self.sigmas = torch.from_numpy(np.concatenate([train[::-1], [0.0]]).astype(np.float32))
        self.timesteps = torch.from_numpy(np.linspace(0, n - 1, n)[::-1].copy().astype(np.float32))
        self.num_inference_steps: int | None = None
        self.is_scale_input_called = False
        self._reset_steps()

    def _set_grid(self, timesteps: np.ndarray, sigmas: np.ndarray, device: Any) -> None:
        self.timesteps = torch.from_numpy(timesteps.astype(np.float32)).to(device=device)
        self.sigmas = torch.from_numpy(sigmas.astype(np.float32))  # kept on the CPU: indexed per step
        self._reset_steps()

    @property
    def init_noise_sigma(self) -> Tensor:
        """Std of the initial latents: sigma_max, or sqrt(sigma_max^2 + 1) for "leading" spacing."""
        sigma_max = self.sigmas.max()
        if self.config.get("timestep_spacing", "linspace") in ("linspace", "trailing"):
            return sigma_max
        return (sigma_max**2 + 1) ** 0.5

    def scale_model_input(self, sample: Tensor, timestep: float | Tensor) -> Tensor:
        """x / sqrt(sigma^2 + 1): the model was trained on unit-variance inputs."""
        self._init_step_index(timestep)
        sigma = self.sigmas[self._step_index]
        self.is_scale_input_called = True
        return sample / ((sigma**2 + 1) ** 0.5)

    def _begin_step(self, timestep: Any, reject_int: bool = False) -> None:
        self._require_timesteps()
        if reject_int and (
            isinstance(timestep, int) or (isinstance(timestep, Tensor) and not timestep.is_floating_point())
        ):
            raise ValueError(
                f"{type(self).__name__}.step() got the integer {timestep!r}: pass one of scheduler.timesteps "
                "(not the loop index from enumerate)"
            )
        self._init_step_index(timestep)
