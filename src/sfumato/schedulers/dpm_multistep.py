"""DPMSolverMultistepScheduler: multistep DPM-Solver / DPM-Solver++ ("DPM++ 2M", "DPM++ 2M SDE")."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..config import register_to_config
from .base import SchedulerOutput, randn, step_output
from .multistep_base import MultistepBase
from .schedules import TimestepSpacing, karras_sigmas, sigma_to_t, sigmas_from_alpha_bar
from .solvers import dpmpp
from .timesteps import dpm_sigma_grid

# "deis" and the UniPC/DEIS solver types are accepted (configs saved by those schedulers) and remapped.
Algorithm = Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++", "deis"]
Solver = Literal["midpoint", "heun", "logrho", "bh1", "bh2"]


class DPMSolverMultistepScheduler(MultistepBase):
    """Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) of order 1-3."""

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
        algorithm_type: Algorithm = "dpmsolver++",
        solver_type: Solver = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_lu_lambdas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        final_sigmas_type: Literal["zero", "sigma_min"] = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: Literal["learned", "learned_range"] | None = None,
        timestep_spacing: TimestepSpacing = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: Literal["exponential"] = "exponential",
    ) -> None:
        if algorithm_type == "deis":
            self.register_to_config(algorithm_type="dpmsolver++")
        if solver_type not in ("midpoint", "heun"):
            self.register_to_config(solver_type="midpoint")
        if (
            self.config.algorithm_type not in ("dpmsolver++", "sde-dpmsolver++")
            and final_sigmas_type == "zero"
        ):
            raise ValueError(
                f"final_sigmas_type='zero' needs algorithm_type 'dpmsolver++' or 'sde-dpmsolver++' "
                f"(got {self.config.algorithm_type!r}); use final_sigmas_type='sigma_min'"
            )
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order}")
        if use_lu_lambdas and (use_karras_sigmas or use_exponential_sigmas):
            raise ValueError(
                "use_lu_lambdas cannot be combined with use_karras_sigmas / use_exponential_sigmas"
            )
        self._init_vp_schedule()

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        mu: float | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the sampling grid (a step count or custom descending integer `timesteps`); resets history."""
        cfg = self.own_config
        if mu is not None and not cfg.use_dynamic_shifting:
            raise ValueError("mu is only used with use_dynamic_shifting=True")
        if timesteps is not None and cfg.use_lu_lambdas:
            raise ValueError("custom timesteps cannot be combined with use_lu_lambdas=True")
        # lambda_min_clipped: skip the noisiest training steps whose log-SNR is below the clip (cosine schedules)
        clipped = int(torch.searchsorted(torch.flip(self.lambda_t, [0]), cfg.lambda_min_clipped))
        kwargs = {
            "last_timestep": cfg.num_train_timesteps - clipped,
            "final": cfg.final_sigmas_type,
            "round_karras": cfg.beta_schedule != "squaredcos_cap_v2",
            "flow_shift": math.exp(mu) if mu is not None else cfg.flow_shift,
        }
        if cfg.use_lu_lambdas and timesteps is None:
            t, s = self._lu_grid(num_inference_steps, kwargs)
        else:
            t, s = dpm_sigma_grid(cfg, self.alphas_cumprod, num_inference_steps, timesteps, **kwargs)
        self._set_sigmas(torch.from_numpy(s))
        self.timesteps = torch.from_numpy(t).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(t)
        self._reset_history()
        self._reset_steps()

    def _lu_grid(self, n: int, kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
        """Uniform steps in log-SNR lambda (Lu et al. 2022b's recommended grid)."""
        _, s = dpm_sigma_grid(self.own_config, self.alphas_cumprod, n, **kwargs)
        log_sigmas = np.log(sigmas_from_alpha_bar(self.alphas_cumprod))
        # rho = 1 makes the Karras ramp linear: evenly spaced log(sigma)
        sigmas = np.exp(karras_sigmas(n, float(log_sigmas[0]), float(log_sigmas[-1]), rho=1.0))
        t = sigma_to_t(sigmas, log_sigmas)
        if kwargs["round_karras"]:
            t = t.round()
        return t.astype(np.int64), np.concatenate([sigmas, s[-1:]]).astype(np.float32)

    def convert_model_output(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """x0 for the "++" variants, eps for the plain ones."""
        if self.config.algorithm_type in ("dpmsolver++", "sde-dpmsolver++"):
            return self._x0(model_output, sample)
        return self._eps(model_output, sample)

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        variance_noise: Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple:
        """One multistep update from the current timestep to the next one."""
        self._require_timesteps()
        self._init_step_index(timestep)
        cfg, i, n = self.own_config, self._step_index, len(self.timesteps)
        # lower orders near the end are more stable for few steps (and exact when the last sigma is 0)
        final_low = i == n - 1 and (
            cfg.euler_at_final or (cfg.lower_order_final and n < 15) or cfg.final_sigmas_type == "zero"
        )
        second_low = i == n - 2 and cfg.lower_order_final and n < 15
        m = self.convert_model_output(model_output, sample)
        self._push(m)
        x = sample.to(torch.float32)
        algorithm = self.config.algorithm_type
        noise = None
        if algorithm.startswith("sde-"):
            if variance_noise is None:
                noise = randn(m.shape, generator, m.device, torch.float32)
            else:
                noise = variance_noise.to(device=m.device, dtype=torch.float32)
        alphas, sigmas = self._alpha_sigma_at((i + 1, i, i - 1, i - 2))
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or final_low:
            prev = dpmpp.first_order(x, m, alphas[:2], sigmas[:2], algorithm, noise)
        elif cfg.solver_order == 2 or self.lower_order_nums < 2 or second_low:
            prev = dpmpp.second_order(
                x, self.model_outputs, alphas[:3], sigmas[:3], algorithm, self.config.solver_type, noise
            )
        else:
            prev = dpmpp.third_order(x, self.model_outputs, alphas, sigmas, algorithm, noise)
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        self._step_index += 1
        return step_output(SchedulerOutput(prev.to(m.dtype)), return_dict)
