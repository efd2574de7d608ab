"""DDPMScheduler: ancestral sampling of Ho et al. 2020."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerMixin, SchedulerOutputWithX0, randn, step_output
from .noising import AlphaBarNoiseMixin
from .prediction import PredictionType, clip_or_threshold, x0_vp
from .schedules import TimestepSpacing, train_schedule
from .solvers.ddpm import ddpm_noise_std, ddpm_posterior_mean
from .timesteps import integer_timesteps

VarianceType = Literal[
    "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
]

DDPMSchedulerOutput = SchedulerOutputWithX0


class DDPMScheduler(AlphaBarNoiseMixin, SchedulerMixin):
    """Denoising diffusion probabilistic models (Ho et al. 2020)."""

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        variance_type: VarianceType = "fixed_small",
        clip_sample: bool = True,
        prediction_type: PredictionType = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: TimestepSpacing = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        allowed = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
        self.betas, self.alphas_cumprod = train_schedule(
            self.own_config, zero_snr_nudge=False, allowed=allowed
        )
        self.alphas = 1.0 - self.betas
        self.one = torch.tensor(1.0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.custom_timesteps = False
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the timesteps used for sampling (a count, or explicit descending `timesteps`)."""
        t, self.custom_timesteps = integer_timesteps(self.config, num_inference_steps, timesteps)
        self.num_inference_steps = len(t)
        self.timesteps = torch.from_numpy(t).to(device)

    def previous_timestep(self, timestep: Any) -> Any:
        """The timestep that follows `timestep` in the schedule (-1 after the last)."""
        if not self.custom_timesteps and self.num_inference_steps is None:
            return timestep - 1  # default schedule: every training step
        index = (self.timesteps == timestep).nonzero(as_tuple=True)[0]
        if len(index) == 0:
            raise ValueError(f"timestep {timestep!r} is not in this scheduler's timesteps")
        index = int(index[0])
        return torch.tensor(-1) if index == len(self.timesteps) - 1 else self.timesteps[index + 1]

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """One ancestral step from `timestep` to the previous one.

        Unlike the other schedulers this works without `set_timesteps` (all training steps, like diffusers).
        """
        t = timestep
        prev_t = self.previous_timestep(t)
        predicted_variance = None
        if model_output.shape[1] == sample.shape[1] * 2 and self.config.variance_type in (
            "learned",
            "learned_range",
        ):
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        x0 = x0_vp(model_output, sample, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, self.config.prediction_type)
        x0 = clip_or_threshold(x0, self.own_config)
        prev_sample = ddpm_posterior_mean(sample, x0, alpha_bar, alpha_bar_prev)
        if t > 0:
            noise = randn(model_output.shape, generator, model_output.device, model_output.dtype)
            std = ddpm_noise_std(alpha_bar, alpha_bar_prev, self.config.variance_type, predicted_variance)
            prev_sample = prev_sample + std * noise
        return step_output(DDPMSchedulerOutput(prev_sample, x0), return_dict)
