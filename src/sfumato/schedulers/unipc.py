"""UniPCMultistepScheduler: UniPC predictor-corrector (Zhao et al. 2023)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutput, step_output
from .multistep_base import MultistepBase
from .schedules import TimestepSpacing
from .solvers.dpmpp import log_snr
from .solvers.unipc import unipc_correct, unipc_predict
from .timesteps import dpm_sigma_grid, unipc_flow_grid


class UniPCMultistepScheduler(MultistepBase):
    """UniPC: a multistep predictor (UniP) plus a corrector (UniC) that reuses the next model call."""

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
        predict_x0: bool = True,
        solver_type: Literal["bh1", "bh2", "midpoint", "heun", "logrho"] = "bh2",
        lower_order_final: bool = True,
        disable_corrector: list[int] = (),  # noqa: B006 - immutable default, stored as a tuple
        solver_p: Any = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
        final_sigmas_type: Literal["zero", "sigma_min"] = "zero",
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: Literal["exponential"] = "exponential",
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        shift_terminal: float | None = None,
    ) -> None:
        if solver_type not in ("bh1", "bh2"):
            # configs of DPM-Solver / DEIS carry their own solver types: fall back to UniPC's default
            self.register_to_config(solver_type="bh2")
        if solver_p is not None:
            raise ValueError("solver_p is not supported by sfumato's UniPCMultistepScheduler; leave it None")
        if (use_dynamic_shifting or shift_terminal) and not use_flow_sigmas:
            raise ValueError("use_dynamic_shifting / shift_terminal need use_flow_sigmas=True")
        if use_flow_sigmas and (use_karras_sigmas or use_exponential_sigmas or use_beta_sigmas):
            raise ValueError("use_flow_sigmas cannot be combined with karras / exponential / beta sigmas")
        self.predict_x0 = predict_x0
        self.disable_corrector = list(disable_corrector)
        self.solver_p = None
        self._init_vp_schedule()

    def _reset_history(self) -> None:
        super()._reset_history()
        self.timestep_list: list[Any] = [None] * self.config.solver_order
        self.last_sample: Tensor | None = None
        self.this_order = 0

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: list[float] | None = None,
        mu: float | None = None,
    ) -> None:
        """Choose `num_inference_steps` steps (or flow `sigmas`) with the configured spacing; resets history."""
        cfg = self.own_config
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("use_dynamic_shifting=True needs mu (e.g. from the image sequence length)")
        if sigmas is not None and not cfg.use_flow_sigmas:
            raise ValueError("custom sigmas need use_flow_sigmas=True")
        if cfg.use_flow_sigmas:
            t, s = unipc_flow_grid(cfg, num_inference_steps, sigmas, mu)
        else:
            t, s = dpm_sigma_grid(
                cfg,
                self.alphas_cumprod,
                num_inference_steps,
                final=cfg.final_sigmas_type,
                final_from_grid=True,
            )
        self._set_sigmas(torch.from_numpy(s))
        self.timesteps = torch.from_numpy(t).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(t)
        self._reset_history()
        self._reset_steps()

    def convert_model_output(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """x0 when `predict_x0` (UniPC's data prediction), else eps."""
        return self._x0(model_output, sample) if self.predict_x0 else self._eps(model_output, sample)

    def _lambdas(self, last: int, count: int) -> list[Tensor]:
        """log-SNR of the points last-count+1 .. last (newest last)."""
        return [log_snr(self._alpha_tab[j], self._sigma_tab[j]) for j in range(last - count + 1, last + 1)]

    def _coeffs(self, t: int, s0: int) -> tuple[tuple, tuple]:
        a, s = self._alpha_sigma_at((t, s0))
        return tuple(a), tuple(s)

    def step(
        self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple:
        """Correct the previous prediction with this model output, then predict the next sample."""
        self._require_timesteps()
        self._init_step_index(timestep)
        cfg, i = self.own_config, self._step_index
        kind = self.config.solver_type
        m = self.convert_model_output(model_output, sample)
        if i > 0 and (i - 1) not in self.disable_corrector and self.last_sample is not None:
            at, st = self._coeffs(i, i - 1)
            lam = self._lambdas(i - 1, self.this_order)
            sample = unipc_correct(
                self.last_sample, m, self.model_outputs, lam, at, st, self.this_order, kind, self.predict_x0
            )
        self._push(m)
        self.timestep_list = [*self.timestep_list[1:], timestep]
        order = min(cfg.solver_order, len(self.timesteps) - i) if cfg.lower_order_final else cfg.solver_order
        self.this_order = min(order, self.lower_order_nums + 1)  # warm-up: lower orders first
        self.last_sample = sample
        at, st = self._coeffs(i + 1, i)
        lam = self._lambdas(i, self.this_order)
        prev = unipc_predict(sample, self.model_outputs, lam, at, st, self.this_order, kind, self.predict_x0)
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        self._step_index += 1
        return step_output(SchedulerOutput(prev), return_dict)
