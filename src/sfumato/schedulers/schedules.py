"""Noise schedules as pure functions: betas, alpha_bar, sigmas, timestep grids, sigma <-> t.

Float precision follows diffusers: betas and alpha_bar are float32 torch tensors, the inference grids
are computed with numpy (float64 interpolation of float32 tables) and stored as float32.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
TimestepSpacing = Literal["linspace", "leading", "trailing"]
BETA_SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing")


def cosine_betas(n: int, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine alpha_bar schedule (Nichol & Dhariwal 2021, eq. 17), capped at `max_beta`."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(
    schedule: str,
    n: int,
    beta_start: float,
    beta_end: float,
    trained_betas: object = None,
    allowed: tuple[str, ...] = BETA_SCHEDULES,
) -> Tensor:
    """The (n,) float32 betas of a named schedule; `trained_betas` overrides the name."""
    if trained_betas is not None:
        return torch.tensor(trained_betas, dtype=torch.float32)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if schedule == "scaled_linear":
        # LDM / Stable Diffusion: linear in sqrt(beta)
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    if schedule == "squaredcos_cap_v2":
        return cosine_betas(n)
    if schedule == "sigmoid" and schedule in allowed:
        # GeoDiff (Xu et al. 2022)
        return torch.sigmoid(torch.linspace(-6, 6, n)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta_schedule {schedule!r}; use one of {', '.join(map(repr, allowed))}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has zero SNR (Lin et al. 2023, Algorithm 1)."""
    sqrt_alpha_bar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def alphas_cumprod(betas: Tensor, zero_snr: bool = False) -> Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s); with zero SNR the last value is nudged off 0 to keep sigma finite."""
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    if zero_snr:
        alpha_bar[-1] = 2**-24
    return alpha_bar


def train_schedule(
    config: dict, zero_snr_nudge: bool = True, allowed: tuple[str, ...] = BETA_SCHEDULES
) -> tuple[Tensor, Tensor]:
    """(betas, alpha_bar) for a scheduler config with the usual beta keys."""
    betas = make_betas(
        config["beta_schedule"],
        config["num_train_timesteps"],
        config["beta_start"],
        config["beta_end"],
        config.get("trained_betas"),
        allowed,
    )
    zero_snr = bool(config.get("rescale_betas_zero_snr", False))
    if zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas, alphas_cumprod(betas, zero_snr and zero_snr_nudge)


def sigmas_from_alpha_bar(alpha_bar: Tensor) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (float32, computed in torch like diffusers)."""
    return (((1 - alpha_bar) / alpha_bar) ** 0.5).numpy()


def timestep_grid(
    spacing: str, n: int, num_train: int, steps_offset: int = 0, rounded: bool = True, last: int | None = None
) -> np.ndarray:
    """Descending float64 timesteps for `n` inference steps ("Common Diffusion Noise Schedules...", Table 2).

    `rounded=False` keeps fractional linspace points (the Euler family); `last` limits the grid to
    [0, last) like DPM-Solver's `lambda_min_clipped`.
    """
    if spacing == "linspace":
        t = np.linspace(0, num_train - 1, n)
        return (t.round() if rounded else t)[::-1].copy()
    if spacing == "leading":
        ratio = num_train // n
        return (np.arange(0, n) * ratio).round()[::-1].copy() + steps_offset
    if spacing == "trailing":
        ratio = num_train / n
        return np.arange(num_train if last is None else last, 0, -ratio).round() - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r}; use one of {', '.join(map(repr, SPACINGS))}")


def dpm_timestep_grid(spacing: str, n: int, num_train: int, steps_offset: int, last: int) -> np.ndarray:
    """DPM-Solver's grid: n+1 points over [0, last) with the final (t=0) point dropped, as int64."""
    if spacing == "linspace":
        t = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ratio = last // (n + 1)
        t = (np.arange(0, n + 1) * ratio).round()[::-1][:-1] + steps_offset
    else:
        t = timestep_grid(spacing, n, num_train, last=last)
    return t.copy().astype(np.int64)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Noise levels of Karras et al. 2022, eq. (5)."""
    ramp = np.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> np.ndarray:
    """Noise levels evenly spaced in log(sigma)."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated with the modified Lentz method."""
    tiny = 1e-300

    def guard(v: float) -> float:
        return tiny if abs(v) < tiny else v

    c, d = 1.0, 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 500):
        # even term m(b-m)x / ((a+2m-1)(a+2m)), then odd term -(a+m)(a+b+m)x / ((a+2m)(a+2m+1))
        for coeff in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 / guard(1.0 + coeff * d)
            c = guard(1.0 + coeff / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta function I_x(a, b) (CDF of the Beta(a, b) distribution)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def beta_ppf(p: float, a: float, b: float) -> float:
    """Inverse of `beta_cdf` by bisection (the CDF is monotone; 200 halvings reach float64 resolution)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if beta_cdf(mid, a, b) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-17:
            break
    return (lo + hi) / 2


def beta_sigmas(
    n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta: float = 0.6
) -> np.ndarray:
    """Noise levels at Beta(alpha, beta) quantiles ("Beta Sampling is All You Need", Lee et al. 2024)."""
    quantiles = [beta_ppf(float(p), alpha, beta) for p in 1 - np.linspace(0, 1, n)]
    return np.array([sigma_min + q * (sigma_max - sigma_min) for q in quantiles])


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray, float32_weights: bool = False) -> np.ndarray:
    """Fractional training timestep of each sigma by linear interpolation in log(sigma).

    The final blend is float64 like numpy scalar math; `float32_weights` keeps it in the weights' dtype,
    which is what diffusers' KDPM2 gets from feeding torch tensors through the same formula.
    """
    sigmas = np.asarray(sigmas)
    log_sigma = np.log(np.maximum(sigmas, 1e-10)).reshape(-1)
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    if float32_weights:
        low, high = low.astype(w.dtype), high.astype(w.dtype)
    return ((1 - w) * low + w * high).reshape(sigmas.shape)


def interp_sigmas(timesteps: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """sigma at fractional timesteps by linear interpolation of the training table."""
    return np.interp(timesteps, np.arange(0, len(sigmas)), sigmas)


SigmaSchedule = Literal["default", "karras", "exponential", "beta"]


def sigma_schedule(config: dict) -> str:
    """Fold diffusers' `use_*_sigmas` flags into one name (style rule 6)."""
    flags = [k for k in ("karras", "exponential", "beta") if config.get(f"use_{k}_sigmas")]
    if len(flags) > 1:
        raise ValueError(
            f"use_{flags[0]}_sigmas and use_{flags[1]}_sigmas are mutually exclusive; set at most one to True"
        )
    return flags[0] if flags else "default"


def respace_sigmas(kind: str, sigmas: np.ndarray, n: int, sigma_min=None, sigma_max=None) -> np.ndarray:
    """Replace a descending sigma grid by `n` Karras, exponential or beta levels between its ends."""
    sigma_min = sigma_min if sigma_min is not None else float(sigmas[-1])
    sigma_max = sigma_max if sigma_max is not None else float(sigmas[0])
    if kind == "karras":
        return karras_sigmas(n, sigma_min, sigma_max)
    if kind == "beta":
        return beta_sigmas(n, sigma_min, sigma_max)
    return exponential_sigmas(n, sigma_min, sigma_max)


def interleave(values: Tensor, last: int = 0) -> Tensor:
    """[v0, v1, v1, v2, v2, ...]: order-2 samplers evaluate the model twice per interior point.

    The final `last` entries are kept once.
    """
    end = len(values) - last
    return torch.cat([values[:1], values[1:end].repeat_interleave(2), values[end:]])


def shift_sigmas(sigmas, shift: float):
    """SD3's resolution shift of flow-matching noise levels: s -> shift*s / (1 + (shift - 1)*s)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(kind: str, mu: float, sigmas, power: float = 1.0):
    """Flux-style dynamic shift by mu (exponential: e^mu / (e^mu + (1/s - 1)^power); linear: mu / (...))."""
    scale = math.exp(mu) if kind == "exponential" else mu
    return scale / (scale + (1 / sigmas - 1) ** power)
