"""Convert a raw model output (eps, v, x0 or flow velocity) to what a solver is defined on.

Two parametrisations of the noisy sample appear in the schedulers:
* variance preserving: x = alpha * x0 + sigma * eps (alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar)),
* variance exploding (k-diffusion, Euler family): x = x0 + sigma * eps, with the model fed x / sqrt(sigma^2 + 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

PredictionType = Literal["epsilon", "sample", "v_prediction"]
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction")


def _unknown(prediction_type: str, valid: tuple[str, ...] = PREDICTION_TYPES) -> ValueError:
    return ValueError(
        f"unknown prediction_type {prediction_type!r}; use one of {', '.join(map(repr, valid))}"
    )


def x0_vp(model_output: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> Tensor:
    """x0 from a variance-preserving sample x = alpha*x0 + sigma*eps (Salimans & Ho 2022 for v)."""
    if prediction_type == "epsilon":
        return (x - sigma * model_output) / alpha
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return alpha * x - sigma * model_output
    if prediction_type == "flow_prediction":
        return x - sigma * model_output
    raise _unknown(prediction_type)


def eps_vp(model_output: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> Tensor:
    """eps from a variance-preserving sample x = alpha*x0 + sigma*eps."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return (x - alpha * model_output) / sigma
    if prediction_type == "v_prediction":
        return alpha * model_output + sigma * x
    raise _unknown(prediction_type)


def x0_ve(model_output: Tensor, x: Tensor, sigma: Tensor, prediction_type: str, sigma_hat=None) -> Tensor:
    """x0 from a variance-exploding sample x = x0 + sigma*eps (model saw x / sqrt(sigma^2 + 1))."""
    if prediction_type == "epsilon":
        return x - (sigma if sigma_hat is None else sigma_hat) * model_output
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + (x / (sigma**2 + 1))
    raise _unknown(prediction_type)


def alpha_sigma_from_ve(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha_t, sigma_t) of the VP form for a VE noise level: alpha = 1/sqrt(sigma^2+1)."""
    alpha_t = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha_t, sigma * alpha_t


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Imagen dynamic thresholding (Saharia et al. 2022, sec. 2.3): clamp to the ratio-quantile of |x0|."""
    dtype = x0.dtype
    batch, channels, *rest = x0.shape
    flat = x0.float() if dtype not in (torch.float32, torch.float64) else x0
    flat = flat.reshape(batch, -1)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(batch, channels, *rest).to(dtype)


def clip_or_threshold(x0: Tensor, config: dict) -> Tensor:
    """Apply the config's `thresholding` (first) or `clip_sample` to a predicted x0."""
    if config.get("thresholding"):
        return dynamic_threshold(x0, config["dynamic_thresholding_ratio"], config["sample_max_value"])
    if config.get("clip_sample"):
        limit = config.get("clip_sample_range", 1.0)
        return x0.clamp(-limit, limit)
    return x0
