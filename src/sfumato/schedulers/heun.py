"""HeunDiscreteScheduler: Heun's second-order method in sigma (Karras et al. 2022, Algorithm 1)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutputWithX0, step_output
from .prediction import x0_ve
from .schedules import TimestepSpacing, interleave
from .sigma_base import SigmaSchedulerBase
from .solvers.heun import derivative, heun_step
from .timesteps import ve_sigma_grid

HeunDiscreteSchedulerOutput = SchedulerOutputWithX0


class HeunDiscreteScheduler(SigmaSchedulerBase):
    """Heun sampler: an Euler predictor then a trapezoidal corrector, two model calls per step."""

    order = 2

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
    ) -> None:
        self._init_train_schedule()
        self._reset_stage()

    def _reset_stage(self) -> None:
        # state between the predictor and corrector evaluations of one step
        self.prev_derivative: Tensor | None = None
        self.dt: Tensor | None = None
        self.sample: Tensor | None = None

    @property
    def state_in_first_order(self) -> bool:
        return self.dt is None

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        num_train_timesteps: int | None = None,
        timesteps: list[float] | None = None,
    ) -> None:
        """n steps (2n - 1 model evaluations) or custom descending `timesteps`."""
        if num_train_timesteps not in (None, self.config.num_train_timesteps):
            raise ValueError(
                "num_train_timesteps differs from the config; build a scheduler with that config instead"
            )
        t, s = ve_sigma_grid(self.own_config, self.alphas_cumprod, num_inference_steps, timesteps)
        self.num_inference_steps = len(t)
        self._set_grid(t, s, device)
        self.sigmas = interleave(self.sigmas, last=1)
        self.timesteps = interleave(self.timesteps)
        self._reset_stage()

    def step(
        self, model_output: Tensor, timestep: float | Tensor, sample: Tensor, return_dict: bool = True
    ) -> HeunDiscreteSchedulerOutput | tuple:
        """Predictor (first call of a step) or corrector (second call)."""
        self._begin_step(timestep)
        i = self._step_index
        first = self.state_in_first_order
        sigma, sigma_next = (
            (self.sigmas[i], self.sigmas[i + 1]) if first else (self.sigmas[i - 1], self.sigmas[i])
        )
        x0 = x0_ve(model_output, sample, sigma if first else sigma_next, self.config.prediction_type)
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        if first:
            d = derivative(sample, x0, sigma)
            self.prev_derivative, self.dt, self.sample = d, sigma_next - sigma, sample
            prev_sample = sample + d * self.dt
        else:
            d = derivative(sample, x0, sigma_next)
            prev_sample = heun_step(self.sample, self.prev_derivative, d, self.dt)
            self._reset_stage()
        self._step_index += 1
        return step_output(HeunDiscreteSchedulerOutput(prev_sample, x0), return_dict)
