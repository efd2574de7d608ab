"""LMSDiscreteScheduler: linear multistep sampler in sigma ("LMS" in A1111)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutputWithX0, step_output
from .prediction import x0_ve
from .schedules import TimestepSpacing
from .sigma_base import SigmaSchedulerBase
from .solvers.lms import lms_coefficient, lms_step
from .timesteps import ve_sigma_grid

LMSDiscreteSchedulerOutput = SchedulerOutputWithX0


class LMSDiscreteScheduler(SigmaSchedulerBase):
    """Linear multistep (Adams-Bashforth in sigma) of order up to 4, k-diffusion style."""

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
    ) -> None:
        self._init_train_schedule()
        self.derivatives: list[Tensor] = []

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose `num_inference_steps` steps; resets the derivative history."""
        t, s = ve_sigma_grid(self.own_config, self.alphas_cumprod, num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self._set_grid(t, s, device)
        self._sigma_list = s.astype(np.float64).tolist()
        self.derivatives = []

    def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
        """Coefficient of the derivative `current_order` steps back at step `t` (diffusers' name)."""
        return lms_coefficient(self._sigma_list, order, t, current_order)

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        order: int = 4,
        return_dict: bool = True,
    ) -> LMSDiscreteSchedulerOutput | tuple:
        """One linear multistep step using up to `order` past derivatives."""
        self._begin_step(timestep)
        i = self._step_index
        sigma = self.sigmas[i]
        x0 = x0_ve(model_output, sample, sigma, self.config.prediction_type)
        self.derivatives = [*self.derivatives, (sample - x0) / sigma][-order:]
        order = min(i + 1, order)
        coeffs = [self.get_lms_coefficient(order, i, k) for k in range(order)]
        prev_sample = lms_step(sample, self.derivatives, coeffs)
        self._step_index += 1
        return step_output(LMSDiscreteSchedulerOutput(prev_sample, x0), return_dict)
