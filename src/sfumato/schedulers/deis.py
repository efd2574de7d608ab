"""DEISMultistepScheduler: diffusion exponential integrator sampler (Zhang & Chen 2023)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutput, step_output
from .multistep_base import MultistepBase
from .schedules import TimestepSpacing
from .solvers.deis import deis_second_order, deis_third_order
from .solvers.dpmpp import first_order
from .timesteps import dpm_sigma_grid


class DEISMultistepScheduler(MultistepBase):
    """Multistep DEIS (log-rho variant), orders 1-3, on eps predictions."""

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear",
        trained_betas: list[float] | np.ndarray | None = None,
        solver_order: int = 2,
        prediction_type: Literal["epsilon", "sample", "v_prediction", "flow_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: Literal["deis", "dpmsolver", "dpmsolver++"] = "deis",
        solver_type: Literal["logrho", "midpoint", "heun", "bh1", "bh2"] = "logrho",
        lower_order_final: bool = True,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
        use_dynamic_shifting: bool = False,
        time_shift_type: Literal["exponential"] = "exponential",
    ) -> None:
        # DPM-Solver / UniPC configs carry their own algorithm and solver types: use DEIS' own
        if algorithm_type != "deis":
            self.register_to_config(algorithm_type="deis")
        if solver_type != "logrho":
            self.register_to_config(solver_type="logrho")
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        self._init_vp_schedule()

    def set_timesteps(
        self, num_inference_steps: int, device: str | torch.device | None = None, mu: float | None = None
    ) -> None:
        """Choose `num_inference_steps` steps; resets history."""
        cfg = self.own_config
        if mu is not None and not cfg.use_dynamic_shifting:
            raise ValueError("mu is only used with use_dynamic_shifting=True")
        t, s = dpm_sigma_grid(
            cfg,
            self.alphas_cumprod,
            num_inference_steps,
            final="sigma_min",
            final_from_grid=True,
            flow_shift=math.exp(mu) if mu is not None else cfg.flow_shift,
        )
        self._set_sigmas(torch.from_numpy(s))
        self.timesteps = torch.from_numpy(t).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(t)
        self._reset_history()
        self._reset_steps()

    def convert_model_output(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """eps, recomputed from the (thresholded) x0 prediction."""
        x0 = self._x0(model_output, sample)
        alpha_t, sigma_t = self._current_alpha_sigma()
        return (sample - alpha_t * x0) / sigma_t

    def step(
        self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple:
        """One multistep DEIS update."""
        self._require_timesteps()
        self._init_step_index(timestep)
        cfg, i, n = self.own_config, self._step_index, len(self.timesteps)
        final_low = i == n - 1 and cfg.lower_order_final and n < 15
        second_low = i == n - 2 and cfg.lower_order_final and n < 15
        m = self.convert_model_output(model_output, sample)
        self._push(m)
        a, s = self._alpha_sigma_at((i + 1, i, i - 1, i - 2))
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or final_low:
            prev = first_order(sample, m, a[:2], s[:2], "dpmsolver")  # DEIS-1 is DDIM in eps
        elif cfg.solver_order == 2 or self.lower_order_nums < 2 or second_low:
            prev = deis_second_order(sample, self.model_outputs, a[:3], s[:3])
        else:
            prev = deis_third_order(sample, self.model_outputs, a, s)
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        self._step_index += 1
        return step_output(SchedulerOutput(prev), return_dict)
