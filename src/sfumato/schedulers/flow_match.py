"""FlowMatchEulerDiscreteScheduler: Euler sampling of rectified-flow models (SD3, Flux)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import (
    SchedulerMixin,
    SchedulerOutput,
    StepIndexMixin,
    broadcast_to,
    check_num_steps,
    randn,
    step_output,
)
from .schedules import respace_sigmas, shift_sigmas, sigma_schedule, time_shift
from .solvers.flow import flow_euler_step, flow_stochastic_step

FlowMatchEulerDiscreteSchedulerOutput = SchedulerOutput


class FlowMatchEulerDiscreteScheduler(StepIndexMixin, SchedulerMixin):
    """Euler steps in sigma on the model's velocity prediction, with SD3 / Flux timestep shifting."""

    order = 1
    _compatibles = ()

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        use_dynamic_shifting: bool = False,
        base_shift: float | None = 0.5,
        max_shift: float | None = 1.15,
        base_image_seq_len: int = 256,
        max_image_seq_len: int = 4096,
        invert_sigmas: bool = False,
        shift_terminal: float | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        time_shift_type: Literal["exponential", "linear"] = "exponential",
        stochastic_sampling: bool = False,
    ) -> None:
        sigma_schedule(self.own_config)
        t = torch.from_numpy(
            np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1].copy()
        )
        sigmas = t / num_train_timesteps
        if not use_dynamic_shifting:
            sigmas = shift_sigmas(sigmas, shift)
        self.timesteps = sigmas * num_train_timesteps
        self.sigmas = sigmas
        self._shift = shift
        # the grid of set_timesteps spans the *shifted* training range (diffusers' behaviour)
        self.sigma_min = self.sigmas[-1].item()
        self.sigma_max = self.sigmas[0].item()
        self.num_inference_steps: int | None = None
        self._reset_steps()

    @property
    def shift(self) -> float:
        return self._shift

    def set_shift(self, shift: float) -> None:
        self._shift = shift

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
        timesteps: list[float] | None = None,
    ) -> None:
        """Evenly spaced sigmas in (sigma_max, sigma_min], shifted; or custom `sigmas` / `timesteps`."""
        cfg = self.own_config
        n_train = cfg.num_train_timesteps
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("use_dynamic_shifting=True needs mu (e.g. from the image sequence length)")
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError("custom sigmas and timesteps must have the same length")
        if num_inference_steps is None:
            if sigmas is None and timesteps is None:
                raise ValueError("pass num_inference_steps, sigmas or timesteps")
            num_inference_steps = len(sigmas) if sigmas is not None else len(timesteps)
        elif sigmas is None and timesteps is None:
            check_num_steps(num_inference_steps, n_train)
        custom_t = np.array(timesteps).astype(np.float32) if timesteps is not None else None
        if sigmas is None:
            t = (
                custom_t
                if custom_t is not None
                else np.linspace(self.sigma_max * n_train, self.sigma_min * n_train, num_inference_steps)
            )
            s = t / n_train
        else:
            s = np.array(sigmas).astype(np.float32)
            num_inference_steps = len(s)
        self.num_inference_steps = num_inference_steps
        s = (
            time_shift(cfg.time_shift_type, mu, s)
            if cfg.use_dynamic_shifting
            else shift_sigmas(s, self.shift)
        )
        if cfg.shift_terminal:
            one_minus = 1 - s
            s = 1 - one_minus / (one_minus[-1] / (1 - cfg.shift_terminal))
        kind = sigma_schedule(cfg)
        if kind != "default":
            s = respace_sigmas(kind, s, num_inference_steps)
        s = torch.from_numpy(np.asarray(s)).to(dtype=torch.float32, device=device)
        t = (
            torch.from_numpy(custom_t).to(dtype=torch.float32, device=device)
            if custom_t is not None
            else s * n_train
        )
        if cfg.invert_sigmas:
            s = 1.0 - s
            t = s * n_train
            s = torch.cat([s, torch.ones(1, device=s.device)])
        else:
            s = torch.cat([s, torch.zeros(1, device=s.device)])
        self.timesteps, self.sigmas = t, s
        self._reset_steps()

    def scale_noise(self, sample: Tensor, timestep: Tensor, noise: Tensor | None = None) -> Tensor:
        """Forward process x_sigma = sigma * noise + (1 - sigma) * sample (img2img / training)."""
        sigmas = self.sigmas.to(device=sample.device, dtype=sample.dtype)
        timestep = timestep.to(sample.device) if isinstance(timestep, Tensor) else torch.tensor([timestep])
        sigma = broadcast_to(sigmas[self._step_indices_for(timestep.reshape(-1), sample.device)], sample)
        return sigma * noise + (1.0 - sigma) * sample

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
        per_token_timesteps: Tensor | None = None,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple:
        """One Euler step (or, with `stochastic_sampling`, denoise and re-noise)."""
        self._require_timesteps()
        if per_token_timesteps is not None:
            raise ValueError(
                "per_token_timesteps is not supported by sfumato's FlowMatchEulerDiscreteScheduler"
            )
        if isinstance(timestep, int) or (isinstance(timestep, Tensor) and not timestep.is_floating_point()):
            raise ValueError("pass one of scheduler.timesteps to step(), not an integer loop index")
        self._init_step_index(timestep)
        x = sample.to(torch.float32)
        sigma, sigma_next = self.sigmas[self._step_index], self.sigmas[self._step_index + 1]
        if self.config.stochastic_sampling:
            noise = randn(x.shape, generator, x.device, x.dtype)
            prev_sample = flow_stochastic_step(x, model_output, sigma, sigma_next, noise)
        else:
            prev_sample = flow_euler_step(x, model_output, sigma, sigma_next)
        self._step_index += 1
        return step_output(
            FlowMatchEulerDiscreteSchedulerOutput(prev_sample.to(model_output.dtype)), return_dict
        )
