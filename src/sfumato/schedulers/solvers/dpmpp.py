"""Multistep DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b), ODE and SDE variants.

Notation: the step goes from s0 (current) to t (next); s1, s2 are earlier points; lambda = log(alpha/sigma);
h = lambda_t - lambda_s0. `m` are model outputs converted to x0 ("++" variants) or eps (plain variants),
newest last. `noise` is required for the SDE variants.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

AlgorithmType = Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"]
SolverType = Literal["midpoint", "heun"]


def log_snr(alpha: Tensor, sigma: Tensor) -> Tensor:
    """lambda = log(alpha) - log(sigma), half the log signal-to-noise ratio."""
    return torch.log(alpha) - torch.log(sigma)


def _noise_term(sigma_t: Tensor, h: Tensor, noise: Tensor | None, plus: bool) -> Tensor:
    if noise is None:
        raise ValueError("the SDE variants of DPM-Solver need noise; pass a generator or variance_noise")
    if plus:
        return sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)) * noise
    return sigma_t * torch.sqrt(torch.exp(2 * h) - 1.0) * noise


def first_order(
    x: Tensor, m0: Tensor, a: tuple, s: tuple, algorithm: str, noise: Tensor | None = None
) -> Tensor:
    """DPM-Solver-1 (= DDIM) from s0 to t; `a`, `s` are (alpha, sigma) at (t, s0)."""
    (alpha_t, alpha_s), (sigma_t, sigma_s) = a, s
    h = log_snr(alpha_t, sigma_t) - log_snr(alpha_s, sigma_s)
    if algorithm == "dpmsolver++":
        return (sigma_t / sigma_s) * x - (alpha_t * (torch.exp(-h) - 1.0)) * m0
    if algorithm == "dpmsolver":
        return (alpha_t / alpha_s) * x - (sigma_t * (torch.exp(h) - 1.0)) * m0
    if algorithm == "sde-dpmsolver++":
        return (
            (sigma_t / sigma_s * torch.exp(-h)) * x
            + (alpha_t * (1 - torch.exp(-2.0 * h))) * m0
            + _noise_term(sigma_t, h, noise, plus=True)
        )
    return (
        (alpha_t / alpha_s) * x
        - 2.0 * (sigma_t * (torch.exp(h) - 1.0)) * m0
        + _noise_term(sigma_t, h, noise, plus=False)
    )


def second_order(
    x: Tensor, m: list, a: tuple, s: tuple, algorithm: str, solver_type: str, noise: Tensor | None = None
) -> Tensor:
    """Multistep DPM-Solver-2 from s0 to t using outputs at s0, s1; `a`, `s` over (t, s0, s1)."""
    lam_t, lam_0, lam_1 = (log_snr(ai, si) for ai, si in zip(a, s))
    (alpha_t, alpha_0, _), (sigma_t, sigma_0, _) = a, s
    m0, m1 = m[-1], m[-2]
    h = lam_t - lam_0
    r0 = (lam_0 - lam_1) / h
    d0, d1 = m0, (1.0 / r0) * (m0 - m1)
    if algorithm == "dpmsolver++":
        c = alpha_t * (torch.exp(-h) - 1.0)
        c1 = -0.5 * c if solver_type == "midpoint" else alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)
        return (sigma_t / sigma_0) * x - c * d0 + c1 * d1
    if algorithm == "dpmsolver":
        c = sigma_t * (torch.exp(h) - 1.0)
        c1 = 0.5 * c if solver_type == "midpoint" else sigma_t * ((torch.exp(h) - 1.0) / h - 1.0)
        return (alpha_t / alpha_0) * x - c * d0 - c1 * d1
    if algorithm == "sde-dpmsolver++":
        c = alpha_t * (1 - torch.exp(-2.0 * h))
        c1 = (
            0.5 * c
            if solver_type == "midpoint"
            else alpha_t * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0)
        )
        return (
            (sigma_t / sigma_0 * torch.exp(-h)) * x + c * d0 + c1 * d1 + _noise_term(sigma_t, h, noise, True)
        )
    c = sigma_t * (torch.exp(h) - 1.0)
    c1 = c if solver_type == "midpoint" else 2.0 * (sigma_t * ((torch.exp(h) - 1.0) / h - 1.0))
    return (alpha_t / alpha_0) * x - 2.0 * c * d0 - c1 * d1 + _noise_term(sigma_t, h, noise, False)


def third_order(
    x: Tensor, m: list, a: tuple, s: tuple, algorithm: str, noise: Tensor | None = None
) -> Tensor:
    """Multistep DPM-Solver-3 from s0 to t using outputs at s0, s1, s2; `a`, `s` over (t, s0, s1, s2)."""
    lam_t, lam_0, lam_1, lam_2 = (log_snr(ai, si) for ai, si in zip(a, s))
    alpha_t, alpha_0 = a[0], a[1]
    sigma_t, sigma_0 = s[0], s[1]
    m0, m1, m2 = m[-1], m[-2], m[-3]
    h = lam_t - lam_0
    r0, r1 = (lam_0 - lam_1) / h, (lam_1 - lam_2) / h
    d1_0, d1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
    if algorithm == "dpmsolver++":
        return (
            (sigma_t / sigma_0) * x
            - (alpha_t * (torch.exp(-h) - 1.0)) * m0
            + (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * d1
            - (alpha_t * ((torch.exp(-h) - 1.0 + h) / h**2 - 0.5)) * d2
        )
    if algorithm == "dpmsolver":
        return (
            (alpha_t / alpha_0) * x
            - (sigma_t * (torch.exp(h) - 1.0)) * m0
            - (sigma_t * ((torch.exp(h) - 1.0) / h - 1.0)) * d1
            - (sigma_t * ((torch.exp(h) - 1.0 - h) / h**2 - 0.5)) * d2
        )
    if algorithm == "sde-dpmsolver++":
        return (
            (sigma_t / sigma_0 * torch.exp(-h)) * x
            + (alpha_t * (1.0 - torch.exp(-2.0 * h))) * m0
            + (alpha_t * ((1.0 - torch.exp(-2.0 * h)) / (-2.0 * h) + 1.0)) * d1
            + (alpha_t * ((1.0 - torch.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5)) * d2
            + _noise_term(sigma_t, h, noise, True)
        )
    raise ValueError(f"third-order multistep DPM-Solver is not defined for algorithm_type={algorithm!r}")
