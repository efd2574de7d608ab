"""EulerDiscreteScheduler: Euler steps of the probability-flow ODE (Karras et al. 2022, Algorithm 2)."""

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
from .solvers.euler import euler_step
from .timesteps import ve_sigma_grid

EulerDiscreteSchedulerOutput = SchedulerOutputWithX0


class EulerDiscreteScheduler(SigmaSchedulerBase):
    """Euler sampler ("Euler" in A1111), optionally with Karras' stochastic churn (`s_churn`)."""

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
        interpolation_type: Literal["linear", "log_linear"] = "linear",
        use_karras_sigmas: bool | None = False,
        use_exponential_sigmas: bool | None = False,
        use_beta_sigmas: bool | None = False,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        timestep_spacing: TimestepSpacing = "linspace",
        timestep_type: Literal["discrete", "continuous"] = "discrete",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        final_sigmas_type: Literal["zero", "sigma_min"] = "zero",
    ) -> None:
        self._init_train_schedule()
        if self._continuous_v:
            self.timesteps = 0.25 * self.sigmas[:-1].log()

    @property
    def _continuous_v(self) -> bool:
        # EDM-style models (SVD) are conditioned on c_noise = log(sigma) / 4
        return self.config.timestep_type == "continuous" and self.config.prediction_type == "v_prediction"

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[float] | None = None,
        sigmas: list[float] | None = None,
    ) -> None:
        """Choose the sampling grid: a step count, or custom descending `timesteps` or `sigmas`."""
        if timesteps is not None and self._continuous_v:
            raise ValueError(
                "custom timesteps cannot be used with timestep_type='continuous' and v_prediction"
            )
        t, s = ve_sigma_grid(
            self.own_config,
            self.alphas_cumprod,
            num_inference_steps,
            timesteps,
            sigmas,
            final_sigma=self.config.final_sigmas_type,
            interpolation=self.config.interpolation_type,
        )
        self.num_inference_steps = len(t)
        self._set_grid(t, s, device)
        if self._continuous_v:
            self.timesteps = (0.25 * self.sigmas[:-1].log()).to(device)

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> EulerDiscreteSchedulerOutput | tuple:
        """One Euler step from sigmas[step_index] to sigmas[step_index + 1]."""
        self._begin_step(timestep, reject_int=True)
        x = sample.to(torch.float32)
        sigma = self.sigmas[self._step_index]
        gamma = min(s_churn / (len(self.sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            noise = randn(model_output.shape, generator, model_output.device, model_output.dtype)
            x = x + noise * s_noise * (sigma_hat**2 - sigma**2) ** 0.5
        x0 = x0_ve(model_output, x, sigma, self.config.prediction_type, sigma_hat=sigma_hat)
        prev_sample = euler_step(x, x0, sigma_hat, self.sigmas[self._step_index + 1]).to(model_output.dtype)
        self._step_index += 1
        return step_output(EulerDiscreteSchedulerOutput(prev_sample, x0), return_dict)
