"""PNDMScheduler: pseudo numerical methods (Liu et al. 2022), PRK warm-up then PLMS."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerMixin, SchedulerOutput, check_num_steps, step_output
from .noising import AlphaBarNoiseMixin
from .prediction import eps_vp
from .schedules import TimestepSpacing, timestep_grid, train_schedule
from .solvers.pndm import PRK_WEIGHTS, plms_eps, pndm_transfer


class PNDMScheduler(AlphaBarNoiseMixin, SchedulerMixin):
    """PNDM; Stable Diffusion's original scheduler uses `skip_prk_steps=True` (PLMS only)."""

    order = 1
    pndm_order = 4

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        skip_prk_steps: bool = False,
        set_alpha_to_one: bool = False,
        prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
        timestep_spacing: TimestepSpacing = "leading",
        steps_offset: int = 0,
    ) -> None:
        self.betas, self.alphas_cumprod = train_schedule(self.own_config, zero_snr_nudge=False)
        self.alphas = 1.0 - self.betas
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.prk_timesteps = np.array([], dtype=np.int64)
        self.plms_timesteps = None
        self.timesteps = None
        self._reset_history()

    def _reset_history(self) -> None:
        self.ets: list[Tensor] = []  # past noise predictions, oldest first
        self.counter = 0
        self.cur_model_output: Any = 0  # running RK4 sum during the PRK warm-up
        self.cur_sample: Tensor | None = None

    def scale_model_input(self, sample: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return sample

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Timesteps of the PRK warm-up (unless skipped) followed by the PLMS steps; resets history."""
        cfg = self.own_config
        n = check_num_steps(num_inference_steps, cfg.num_train_timesteps)
        ascending = timestep_grid(cfg.timestep_spacing, n, cfg.num_train_timesteps, cfg.steps_offset)[::-1]
        ascending = ascending.astype(np.int64)
        if cfg.skip_prk_steps:
            # the second timestep repeats: PLMS' first step is a two-evaluation (Heun-like) step
            self.prk_timesteps = np.array([], dtype=np.int64)
            plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        else:
            if n < self.pndm_order:
                raise ValueError(
                    f"PNDM with PRK warm-up needs num_inference_steps >= {self.pndm_order}, got {n}; "
                    "use more steps or skip_prk_steps=True"
                )
            half = cfg.num_train_timesteps // n // 2
            prk = ascending[-self.pndm_order :].repeat(2) + np.tile(np.array([0, half]), self.pndm_order)
            self.prk_timesteps = prk[:-1].repeat(2)[1:-1][::-1].copy()
            plms = ascending[:-3][::-1]
        self.plms_timesteps = plms.copy()
        self.num_inference_steps = n
        timesteps = np.concatenate([self.prk_timesteps, self.plms_timesteps]).astype(np.int64)
        self.timesteps = torch.from_numpy(timesteps).to(device)
        self._reset_history()

    def step(
        self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple:
        """One PRK stage during warm-up, a PLMS step afterwards."""
        self._require_timesteps()
        if self.counter < len(self.prk_timesteps) and not self.config.skip_prk_steps:
            return self.step_prk(model_output, timestep, sample, return_dict)
        return self.step_plms(model_output, timestep, sample, return_dict)

    def _ratio(self) -> int:
        return self.config.num_train_timesteps // self.num_inference_steps

    def step_prk(
        self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple:
        """One of the four Runge-Kutta stages per warm-up step."""
        self._require_timesteps()
        stage = self.counter % 4
        prev_t = timestep - (0 if self.counter % 2 else self._ratio() // 2)
        t = self.prk_timesteps[self.counter // 4 * 4]
        if stage == 0:
            self.ets.append(model_output)
            self.cur_sample = sample
        if stage < 3:
            self.cur_model_output += PRK_WEIGHTS[stage] * model_output
        else:
            model_output = self.cur_model_output + PRK_WEIGHTS[3] * model_output
            self.cur_model_output = 0
        x = self.cur_sample if self.cur_sample is not None else sample
        prev_sample = self._transfer(x, t, prev_t, model_output)
        self.counter += 1
        return step_output(SchedulerOutput(prev_sample), return_dict)

    def step_plms(
        self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple:
        """One linear multistep step (the first one is a two-evaluation step when PRK is skipped)."""
        self._require_timesteps()
        if not self.config.skip_prk_steps and len(self.ets) < 3:
            raise ValueError(
                "PNDM's PLMS steps need the 3 PRK warm-up steps first; use scheduler.timesteps in order"
            )
        prev_t = timestep - self._ratio()
        if self.counter != 1:
            self.ets = [*self.ets[-3:], model_output]
        else:
            prev_t, timestep = timestep, timestep + self._ratio()
        if len(self.ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(self.ets) == 1 and self.counter == 1:
            model_output = (model_output + self.ets[-1]) / 2
            sample, self.cur_sample = self.cur_sample, None
        else:
            model_output = plms_eps(self.ets)
        prev_sample = self._transfer(sample, timestep, prev_t, model_output)
        self.counter += 1
        return step_output(SchedulerOutput(prev_sample), return_dict)

    def _transfer(self, x: Tensor, t: Any, prev_t: Any, model_output: Tensor) -> Tensor:
        alpha_bar = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        kind = self.config.prediction_type
        eps = (
            model_output
            if kind == "epsilon"
            else eps_vp(model_output, x, alpha_bar**0.5, (1 - alpha_bar) ** 0.5, kind)
        )
        if x.dtype != torch.float32:
            # float32 scalar tensors, as diffusers computes them: with bfloat16 / float16 samples,
            # Python-float coefficients round differently (a 1.5e-2 drift over 4 bf16 steps)
            return pndm_transfer(x, eps, alpha_bar, alpha_bar_prev)
        # float32: Python floats cost one tensor op each below instead of ten, same numbers
        return pndm_transfer(x, eps, float(alpha_bar), float(alpha_bar_prev))
