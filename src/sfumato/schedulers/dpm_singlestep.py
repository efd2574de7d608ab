"""DPMSolverSinglestepScheduler: singlestep DPM-Solver / DPM-Solver++ (Lu et al. 2022)."""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutput, randn, step_output
from .dpm_multistep import DPMSolverMultistepScheduler
from .multistep_base import MultistepBase
from .solvers.dpm_singlestep import singlestep_second_order, singlestep_third_order
from .solvers.dpmpp import first_order
from .timesteps import dpm_sigma_grid

logger = logging.getLogger(__name__)


def order_list(steps: int, order: int, lower_order_final: bool, final_zero: bool) -> list[int]:
    """Solver order used at each step: groups of 1, 2, ..., order evaluations (e.g. [1, 2, 1, 2, ...])."""
    if order not in (1, 2, 3):
        raise ValueError(f"solver_order must be 1, 2 or 3, got {order}")
    cycle = list(range(1, order + 1))
    if not lower_order_final or order == 1:
        orders = cycle * (steps // order)
    elif order == 3:
        tail = {0: [1, 2, 1], 1: [1], 2: [1, 2]}[steps % 3]
        orders = cycle * (steps // 3 - (1 if steps % 3 == 0 else 0)) + tail
    else:
        orders = cycle * (steps // 2 - 1) + [1, 1] if steps % 2 == 0 else cycle * (steps // 2) + [1]
    if final_zero and orders:
        orders[-1] = 1
    return orders


class DPMSolverSinglestepScheduler(MultistepBase):
    """Singlestep DPM-Solver: each group of k model calls integrates one k-th order step."""

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
        algorithm_type: Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver++", "deis"] = "dpmsolver++",
        solver_type: Literal["midpoint", "heun", "logrho", "bh1", "bh2"] = "midpoint",
        lower_order_final: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        final_sigmas_type: Literal["zero", "sigma_min"] = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: Literal["learned", "learned_range"] | None = None,
        use_dynamic_shifting: bool = False,
        time_shift_type: Literal["exponential"] = "exponential",
    ) -> None:
        if algorithm_type == "deis":
            self.register_to_config(algorithm_type="dpmsolver++")
        if solver_type not in ("midpoint", "heun"):
            self.register_to_config(solver_type="midpoint")
        if self.config.algorithm_type != "dpmsolver++" and self.config.algorithm_type != "sde-dpmsolver++":
            if final_sigmas_type == "zero":
                raise ValueError(
                    f"final_sigmas_type='zero' needs algorithm_type 'dpmsolver++' or 'sde-dpmsolver++' "
                    f"(got {self.config.algorithm_type!r}); use final_sigmas_type='sigma_min'"
                )
        self._init_vp_schedule()
        self.sample: Tensor | None = None
        self.order_list = order_list(
            num_train_timesteps, solver_order, lower_order_final, final_sigmas_type == "zero"
        )

    def _reset_history(self) -> None:
        super()._reset_history()
        self.sample = None

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        mu: float | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the sampling grid (linspace in t, clipped by lambda_min_clipped); resets history."""
        cfg = self.own_config
        if mu is not None and not cfg.use_dynamic_shifting:
            raise ValueError("mu is only used with use_dynamic_shifting=True")
        clipped = int(torch.searchsorted(torch.flip(self.lambda_t, [0]), cfg.lambda_min_clipped))
        t, s = dpm_sigma_grid(
            cfg,
            self.alphas_cumprod,
            num_inference_steps,
            timesteps,
            last_timestep=cfg.num_train_timesteps - clipped,
            final=cfg.final_sigmas_type,
            flow_shift=math.exp(mu) if mu is not None else cfg.flow_shift,
        )
        n = num_inference_steps or len(t)
        self.num_inference_steps = n
        self._set_sigmas(torch.from_numpy(s))
        self.timesteps = torch.from_numpy(t).to(device=device, dtype=torch.int64)
        if not cfg.lower_order_final and (n % cfg.solver_order != 0 or cfg.final_sigmas_type == "zero"):
            logger.info("DPMSolverSinglestepScheduler: switching to lower_order_final=True for this schedule")
            self.register_to_config(lower_order_final=True)
        cfg = self.own_config
        self.order_list = order_list(
            n, cfg.solver_order, cfg.lower_order_final, cfg.final_sigmas_type == "zero"
        )
        self._reset_history()
        self._reset_steps()

    convert_model_output = DPMSolverMultistepScheduler.convert_model_output

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One evaluation of the current singlestep group (order from `order_list`)."""
        self._require_timesteps()
        self._init_step_index(timestep)
        i = self._step_index
        m = self.convert_model_output(model_output, sample)
        self._push(m)
        algorithm, solver = self.config.algorithm_type, self.config.solver_type
        noise = randn(m.shape, generator, m.device, m.dtype) if algorithm == "sde-dpmsolver++" else None
        order = self.order_list[i]
        while self.model_outputs[-order] is None:
            order -= 1
        if order == 1:
            self.sample = sample  # start of a new group
        a, s = self._alpha_sigma_at((i + 1, i, i - 1, i - 2))
        if order == 1:
            prev = first_order(self.sample, m, a[:2], s[:2], algorithm, noise)
        elif order == 2:
            prev = singlestep_second_order(
                self.sample, self.model_outputs, a[:3], s[:3], algorithm, solver, noise
            )
        else:
            prev = singlestep_third_order(self.sample, self.model_outputs, a, s, algorithm, solver, noise)
        self._step_index += 1
        return step_output(SchedulerOutput(prev), return_dict)
