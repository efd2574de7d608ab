"""LCMScheduler: multistep sampling of latent consistency models (Luo et al. 2023)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import (
    SchedulerMixin,
    SchedulerOutput,
    StepIndexMixin,
    check_descending,
    check_num_steps,
    randn,
    step_output,
)
from .noising import AlphaBarNoiseMixin
from .prediction import PredictionType, clip_or_threshold, x0_vp
from .schedules import train_schedule
from .solvers.lcm import consistency_scalings, lcm_renoise


@dataclasses.dataclass
class LCMSchedulerOutput(SchedulerOutput):
    """`step` result: the next sample and the consistency model's clean estimate."""

    denoised: Tensor | None = None


class LCMScheduler(StepIndexMixin, AlphaBarNoiseMixin, SchedulerMixin):
    """Consistency sampling: denoise with c_skip/c_out, then re-noise to the next timestep."""

    order = 1
    _compatibles = ()

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear",
        trained_betas: list[float] | np.ndarray | None = None,
        original_inference_steps: int = 50,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: PredictionType = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "leading",
        timestep_scaling: float = 10.0,
        rescale_betas_zero_snr: bool = False,
    ) -> None:
        self.betas, self.alphas_cumprod = train_schedule(self.own_config, zero_snr_nudge=False)
        self.alphas = 1.0 - self.betas
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.custom_timesteps = False
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._reset_steps()

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        original_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        strength: float = 1.0,
    ) -> None:
        """Pick `num_inference_steps` of the distillation schedule's timesteps (or custom ones)."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        num_train = self.config.num_train_timesteps
        original = original_inference_steps or self.config.original_inference_steps
        check_num_steps(original, num_train, "original_inference_steps")
        k = num_train // original
        # the distillation grid: k-1, 2k-1, ..., original*strength*k - 1
        origin = np.asarray(list(range(1, int(original * strength) + 1))) * k - 1
        if timesteps is not None:
            values = check_descending(timesteps)
            if values[0] >= num_train:
                raise ValueError(f"custom timesteps must start below num_train_timesteps={num_train}")
            t = np.array(values, dtype=np.int64)
            self.num_inference_steps = len(t)
            self.custom_timesteps = True
            keep = min(int(len(t) * strength), len(t))
            t = t[max(len(t) - keep, 0) * self.order :]
        else:
            check_num_steps(num_inference_steps, num_train)
            if len(origin) // num_inference_steps < 1 or num_inference_steps > original:
                raise ValueError(
                    f"num_inference_steps={num_inference_steps} is larger than original_inference_steps x strength "
                    f"= {int(original * strength)}; use fewer steps or a larger strength / original_inference_steps"
                )
            self.num_inference_steps = num_inference_steps
            origin = origin[::-1].copy()
            indices = np.floor(np.linspace(0, len(origin), num=num_inference_steps, endpoint=False)).astype(
                np.int64
            )
            t = origin[indices]
        self.timesteps = torch.from_numpy(t).to(device=device, dtype=torch.long)
        self._reset_steps()

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> LCMSchedulerOutput | tuple:
        """Consistency estimate at `timestep`, re-noised to the next timestep (except at the last step)."""
        self._require_timesteps()
        self._init_step_index(timestep)
        i = self._step_index
        prev_t = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else timestep
        alpha_bar = self.alphas_cumprod[timestep]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        c_skip, c_out = consistency_scalings(timestep, self.config.timestep_scaling)
        x0 = x0_vp(
            model_output, sample, alpha_bar.sqrt(), (1 - alpha_bar).sqrt(), self.config.prediction_type
        )
        x0 = clip_or_threshold(x0, self.own_config)
        denoised = c_out * x0 + c_skip * sample
        if i != self.num_inference_steps - 1:
            noise = randn(model_output.shape, generator, model_output.device, denoised.dtype)
            prev_sample = lcm_renoise(denoised, alpha_bar_prev, noise)
        else:
            prev_sample = denoised
        self._step_index += 1
        return step_output(LCMSchedulerOutput(prev_sample, denoised), return_dict)
