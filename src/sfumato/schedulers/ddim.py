"""DDIMScheduler: denoising diffusion implicit models (Song et al. 2021)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerMixin, SchedulerOutputWithX0, randn, step_output
from .noising import AlphaBarNoiseMixin
from .prediction import PredictionType, clip_or_threshold, eps_vp, x0_vp
from .schedules import TimestepSpacing, train_schedule
from .solvers.ddim import ddim_std, ddim_step
from .timesteps import integer_timesteps

DDIMSchedulerOutput = SchedulerOutputWithX0


class DDIMScheduler(AlphaBarNoiseMixin, SchedulerMixin):
    """DDIM sampling; `eta` in `step` interpolates between deterministic DDIM (0) and DDPM (1)."""

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: PredictionType = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: TimestepSpacing = "leading",
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        self.betas, self.alphas_cumprod = train_schedule(self.own_config, zero_snr_nudge=False)
        self.alphas = 1.0 - self.betas
        # alpha_bar "before" t=0: 1 (fully clean) or alpha_bar_0 (Stable Diffusion uses the latter)
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose `num_inference_steps` timesteps with the configured spacing."""
        t, _ = integer_timesteps(self.config, num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(t).to(device)

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        """One DDIM step from `timestep` to `timestep - num_train_timesteps // num_inference_steps`."""
        self._require_timesteps()
        if eta > 0 and variance_noise is not None and generator is not None:
            raise ValueError("pass either generator or variance_noise to DDIMScheduler.step, not both")
        # diffusers' rule (exact for "leading" spacing only; kept for parity)
        prev_t = timestep - self.config.num_train_timesteps // self.num_inference_steps
        alpha_bar = self.alphas_cumprod[timestep]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        alpha, sigma = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        kind = self.config.prediction_type
        x0 = x0_vp(model_output, sample, alpha, sigma, kind)
        eps = eps_vp(model_output, sample, alpha, sigma, kind)
        x0 = clip_or_threshold(x0, self.own_config)
        std = (
            ddim_std(alpha_bar, alpha_bar_prev, eta) if eta != 0 else 0.0
        )  # deterministic: skip the variance
        if use_clipped_model_output:
            eps = (sample - alpha * x0) / sigma
        prev_sample = ddim_step(x0, eps, alpha_bar_prev, std)
        if eta > 0:
            if variance_noise is None:
                variance_noise = randn(model_output.shape, generator, model_output.device, model_output.dtype)
            prev_sample = prev_sample + std * variance_noise
        return step_output(DDIMSchedulerOutput(prev_sample, x0), return_dict)
