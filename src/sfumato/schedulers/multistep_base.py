"""Shared wiring of the exponential-integrator solvers (DPM-Solver, DPM-Solver++, UniPC, DEIS).

They work on the variance-preserving sample x = alpha_t x0 + sigma_t eps (so `init_noise_sigma` is 1
and `scale_model_input` is the identity); `sigmas` stores the VE level sigma = sigma_t / alpha_t per
step plus the final one. The history of converted model outputs is the only state besides the step index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import SchedulerMixin, StepIndexMixin
from .noising import SigmaNoiseMixin
from .prediction import alpha_sigma_from_ve, dynamic_threshold, eps_vp, x0_vp
from .schedules import sigma_schedule, train_schedule


class MultistepBase(StepIndexMixin, SigmaNoiseMixin, SchedulerMixin):
    """Holds `timesteps`, `sigmas`, `model_outputs` (oldest first) and `lower_order_nums`."""

    _variance_exploding = False
    init_noise_sigma = 1.0

    def _init_vp_schedule(self) -> None:
        if not self.own_config.get("use_flow_sigmas"):
            sigma_schedule(self.own_config)
        self.betas, self.alphas_cumprod = train_schedule(self.own_config)
        self.alphas = 1.0 - self.betas
        self.alpha_t = torch.sqrt(self.alphas_cumprod)
        self.sigma_t = torch.sqrt(1 - self.alphas_cumprod)
        self.lambda_t = torch.log(self.alpha_t) - torch.log(self.sigma_t)
        self._set_sigmas(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
        n = self.config.num_train_timesteps
        self.timesteps = torch.arange(n - 1, -1, -1, dtype=torch.float32)
        self.num_inference_steps: int | None = None
        self._reset_history()
        self._reset_steps()

    def _reset_history(self) -> None:
        self.model_outputs: list[Tensor | None] = [None] * self.config.solver_order
        self.lower_order_nums = 0

    def _push(self, model_output: Tensor) -> None:
        self.model_outputs = [*self.model_outputs[1:], model_output]

    def _index_not_found(self, timestep: Any) -> int:
        # diffusers: an unknown timestep means "the last step"
        return len(self.timesteps) - 1

    def _alpha_sigma_t(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        if self.own_config.get("use_flow_sigmas"):
            return 1 - sigma, sigma
        return alpha_sigma_from_ve(sigma)

    def _set_sigmas(self, sigmas: Tensor) -> None:
        """Store the step sigmas and their (alpha_t, sigma_t), computed once instead of per step."""
        self.sigmas = sigmas
        self._alpha_tab, self._sigma_tab = self._alpha_sigma_t(sigmas)

    def _alpha_sigma_at(self, indices: tuple[int, ...]) -> tuple[list[Tensor], list[Tensor]]:
        """(alphas, sigmas) of the VP form at the given step indices."""
        return [self._alpha_tab[j] for j in indices], [self._sigma_tab[j] for j in indices]

    def _current_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        i = self._step_index
        return self._alpha_tab[i], self._sigma_tab[i]

    def _strip_learned_variance(self, model_output: Tensor) -> Tensor:
        if self.own_config.get("variance_type") in ("learned", "learned_range"):
            return model_output[:, :3]
        return model_output

    def _x0(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """Data prediction x0 at the current step, thresholded if configured."""
        cfg = self.own_config
        kind = cfg.prediction_type
        if kind == "epsilon":
            model_output = self._strip_learned_variance(model_output)
        alpha_t, sigma_t = self._current_alpha_sigma()
        if kind == "flow_prediction":
            sigma_t = self.sigmas[self._step_index]
        x0 = x0_vp(model_output, sample, alpha_t, sigma_t, kind)
        if cfg.get("thresholding"):
            x0 = dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
        return x0

    def _eps(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """Noise prediction eps at the current step (thresholding applied through x0)."""
        cfg = self.own_config
        if cfg.prediction_type == "epsilon":
            model_output = self._strip_learned_variance(model_output)
        alpha_t, sigma_t = self._current_alpha_sigma()
        eps = eps_vp(model_output, sample, alpha_t, sigma_t, cfg.prediction_type)
        if cfg.get("thresholding"):
            x0 = dynamic_threshold(
                (sample - sigma_t * eps) / alpha_t, cfg.dynamic_thresholding_ratio, cfg.sample_max_value
            )
            eps = (sample - alpha_t * x0) / sigma_t
        return eps

    def scale_model_input(self, sample: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return sample
