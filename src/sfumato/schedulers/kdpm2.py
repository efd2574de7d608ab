"""KDPM2DiscreteScheduler and KDPM2AncestralDiscreteScheduler: DPM-Solver-2 in sigma ("DPM2", "DPM2 a").

Each step evaluates the model at sigma and at the log-midpoint sigma_mid ("interpol"), as in
k-diffusion's `sample_dpm_2` / `sample_dpm_2_ancestral`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutputWithX0, randn, step_output
from .prediction import x0_ve
from .schedules import TimestepSpacing, sigma_to_t, sigmas_from_alpha_bar
from .sigma_base import SigmaSchedulerBase
from .solvers.euler import ancestral_sigmas
from .solvers.heun import derivative, midpoint_step
from .timesteps import ve_sigma_grid

KDPM2DiscreteSchedulerOutput = SchedulerOutputWithX0
KDPM2AncestralDiscreteSchedulerOutput = SchedulerOutputWithX0


def _twice(values: Tensor) -> Tensor:
    """[v0, v1, v1, ..., vn, vn, vn]: the per-evaluation view of a per-step table."""
    return torch.cat([values[:1], values[1:].repeat_interleave(2), values[-1:]])


class KDPM2DiscreteScheduler(SigmaSchedulerBase):
    """DPM-Solver-2 (Lu et al. 2022, k-diffusion variant): two model calls per step."""

    order = 2
    _ancestral = False

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
    ) -> None:
        self._init_train_schedule()
        self.sample: Tensor | None = None

    @property
    def state_in_first_order(self) -> bool:
        return self.sample is None

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        """n steps, 2n - 1 model evaluations at interleaved (step, midpoint) timesteps."""
        if num_train_timesteps not in (None, self.config.num_train_timesteps):
            raise ValueError(
                "num_train_timesteps differs from the config; build a scheduler with that config instead"
            )
        t, s = ve_sigma_grid(
            self.own_config, self.alphas_cumprod, num_inference_steps, round_respaced=True, cast=False
        )
        self.num_inference_steps = num_inference_steps
        self._set_grid(t, s, device)
        sigmas = self.sigmas
        self.log_sigmas = torch.from_numpy(np.log(sigmas_from_alpha_bar(self.alphas_cumprod)))
        mid = self._midpoint_tables(sigmas)
        t_mid = torch.from_numpy(sigma_to_t(mid.numpy(), self.log_sigmas.numpy(), float32_weights=True)).to(
            torch.from_numpy(t).dtype
        )
        t = torch.from_numpy(t)
        self.timesteps = torch.cat([t[:1], self._interleave_timesteps(t_mid, t)]).to(device)
        self.sigmas = _twice(sigmas)
        self.sigmas_interpol = _twice(mid)
        self.sample = None

    def _midpoint_tables(self, sigmas: Tensor) -> Tensor:
        # geometric mean of sigma_i and sigma_{i-1} (index 0 pairs with the final 0 and gives 0)
        return sigmas.log().lerp(sigmas.roll(1).log(), 0.5).exp()

    def _interleave_timesteps(self, t_mid: Tensor, t: Tensor) -> Tensor:
        return torch.stack((t_mid[1:-1, None], t[1:, None]), dim=-1).flatten()

    def scale_model_input(self, sample: Tensor, timestep: float | Tensor) -> Tensor:
        """x / sqrt(sigma^2 + 1) with the sigma of the current evaluation (step or midpoint)."""
        self._init_step_index(timestep)
        i = self._step_index
        if self.state_in_first_order:
            sigma = self.sigmas[i]
        else:
            sigma = self.sigmas_interpol[i - 1 if self._ancestral else i]
        return sample / ((sigma**2 + 1) ** 0.5)

    def step(
        self, model_output: Tensor, timestep: float | Tensor, sample: Tensor, return_dict: bool = True
    ) -> KDPM2DiscreteSchedulerOutput | tuple:
        """Half step to the midpoint (first call) or full step with the midpoint derivative (second)."""
        self._begin_step(timestep)
        i = self._step_index
        first = self.state_in_first_order
        if first:
            sigma, sigma_mid, sigma_next = self.sigmas[i], self.sigmas_interpol[i + 1], self.sigmas[i + 1]
        else:
            sigma, sigma_mid, sigma_next = self.sigmas[i - 1], self.sigmas_interpol[i], self.sigmas[i]
        x0 = x0_ve(model_output, sample, sigma if first else sigma_mid, self.config.prediction_type)
        if first:
            self.sample = sample
            prev_sample = midpoint_step(sample, derivative(sample, x0, sigma), sigma_mid - sigma)
        else:
            prev_sample = midpoint_step(self.sample, derivative(sample, x0, sigma_mid), sigma_next - sigma)
            self.sample = None
        self._step_index += 1
        return step_output(KDPM2DiscreteSchedulerOutput(prev_sample, x0), return_dict)


class KDPM2AncestralDiscreteScheduler(KDPM2DiscreteScheduler):
    """Ancestral DPM-Solver-2: the full step goes to sigma_down, then noise of std sigma_up is added."""

    _ancestral = True

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        super().set_timesteps(num_inference_steps, device, num_train_timesteps)
        self.sigmas_up = _twice(self._up)
        self.sigmas_down = _twice(self._down)

    def _midpoint_tables(self, sigmas: Tensor) -> Tensor:
        # midpoint between sigma and sigma_down (not sigma_next): the ancestral step ends at sigma_down
        sigmas_next = sigmas.roll(-1)
        sigmas_next[-1] = 0.0
        sigma_up, sigma_down = ancestral_sigmas(sigmas, sigmas_next)
        sigma_down[-1] = 0.0
        self._up, self._down = sigma_up, sigma_down
        mid = sigmas.log().lerp(sigma_down.log(), 0.5).exp()
        mid[-2:] = 0.0
        return mid

    def _interleave_timesteps(self, t_mid: Tensor, t: Tensor) -> Tensor:
        return torch.stack((t_mid[:-2, None], t[1:, None]), dim=-1).flatten()

    def step(
        self,
        model_output: Tensor,
        timestep: float | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> KDPM2AncestralDiscreteSchedulerOutput | tuple:
        """Half step to the midpoint, or a full step to sigma_down plus fresh noise."""
        self._begin_step(timestep)
        i = self._step_index
        first = self.state_in_first_order
        j = i if first else i - 1
        sigma = self.sigmas[j]
        sigma_mid = self.sigmas_interpol[j]
        sigma_up, sigma_down = self.sigmas_up[j], self.sigmas_down[i - 1]
        x0 = x0_ve(model_output, sample, sigma if first else sigma_mid, self.config.prediction_type)
        if first:
            self.sample = sample
            prev_sample = midpoint_step(sample, derivative(sample, x0, sigma), sigma_mid - sigma)
        else:
            prev_sample = midpoint_step(self.sample, derivative(sample, x0, sigma_mid), sigma_down - sigma)
            self.sample = None
            noise = randn(model_output.shape, generator, model_output.device, model_output.dtype)
            prev_sample = prev_sample + noise * sigma_up
        self._step_index += 1
        return step_output(KDPM2AncestralDiscreteSchedulerOutput(prev_sample, x0), return_dict)
