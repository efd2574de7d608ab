"""EulerAncestralDiscreteScheduler: Euler steps with fresh noise at every step ("Euler a")."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutputWithX0, randn, step_output
from .prediction import x0_ve
from .schedules import TimestepSpacing
from .sigma_base import SigmaSchedulerBase
from .solvers.euler import ancestral_sigmas, euler_step
from .timesteps import ve_sigma_grid

EulerAncestralDiscreteSchedulerOutput = SchedulerOutputWithX0


class EulerAncestralDiscreteScheduler(SigmaSchedulerBase):
    """Ancestral Euler sampler (k-diffusion `sample_euler_ancestral`, eta = 1)."""

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        self._init_train_schedule()

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose `num_inference_steps` steps with the configured spacing."""
        t, s = ve_sigma_grid(self.own_config, self.alphas_cumprod, num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self._set_grid(t, s, device)

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EulerAncestralDiscreteSchedulerOutput | tuple:
        """Deterministic Euler step down to sigma_down, then noise of std sigma_up."""
        self._begin_step(timestep, reject_int=True)
        sigma, sigma_next = self.sigmas[self._step_index], self.sigmas[self._step_index + 1]
        x = sample.to(torch.float32)
        x0 = x0_ve(model_output, x, sigma, self.config.prediction_type)
        sigma_up, sigma_down = ancestral_sigmas(sigma, sigma_next)
        prev_sample = euler_step(x, x0, sigma, sigma_down)
        noise = randn(model_output.shape, generator, model_output.device, model_output.dtype)
        prev_sample = (prev_sample + noise * sigma_up).to(model_output.dtype)
        self._step_index += 1
        return step_output(EulerAncestralDiscreteSchedulerOutput(prev_sample, x0), return_dict)
