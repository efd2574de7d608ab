"""Singlestep DPM-Solver-2/3 (Lu et al. 2022, Algorithms 1-2 / DPM-Solver++ Algorithm 1).

A group of k evaluations starts at s_{k-1} (where `x` was taken) and ends at t; `m` are converted
model outputs newest last (x0 for "++", eps otherwise); `a`, `s` are (alpha, sigma) at (t, s0, s1[, s2]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dpmpp import _noise_term, log_snr


def _exp_coeffs(h: Tensor, algorithm: str, alpha_t: Tensor, sigma_t: Tensor) -> tuple:
    """(c0, c1, c2): multipliers of D0, D1, D2 in the exponential-integrator expansion."""
    if algorithm == "dpmsolver++":
        e = torch.exp(-h) - 1.0
        return -(alpha_t * e), alpha_t * (e / h + 1.0), -(alpha_t * ((e + h) / h**2 - 0.5))
    if algorithm == "dpmsolver":
        e = torch.exp(h) - 1.0
        return -(sigma_t * e), -(sigma_t * (e / h - 1.0)), -(sigma_t * ((e - h) / h**2 - 0.5))
    e = 1.0 - torch.exp(-2.0 * h)  # sde-dpmsolver++
    return alpha_t * e, alpha_t * (e / (-2.0 * h) + 1.0), alpha_t * ((e + (-2.0 * h)) / (-2.0 * h) ** 2 - 0.5)


def _carry(x: Tensor, h: Tensor, algorithm: str, a: tuple, s: tuple, j: int) -> Tensor:
    """The linear part: x scaled from the group start (index j of a, s) to t."""
    if algorithm == "dpmsolver++":
        return (s[0] / s[j]) * x
    if algorithm == "dpmsolver":
        return (a[0] / a[j]) * x
    return (s[0] / s[j] * torch.exp(-h)) * x


def singlestep_second_order(
    x: Tensor, m: list, a: tuple, s: tuple, algorithm: str, solver_type: str, noise: Tensor | None = None
) -> Tensor:
    """DPM-Solver-2 from s1 to t with outputs at s1 and s0."""
    lam_t, lam_0, lam_1 = (log_snr(ai, si) for ai, si in zip(a, s))
    h = lam_t - lam_1
    r0 = (lam_0 - lam_1) / h
    d0, d1 = m[-2], (1.0 / r0) * (m[-1] - m[-2])
    c0, c1, _ = _exp_coeffs(h, algorithm, a[0], s[0])
    if solver_type == "midpoint":
        c1 = 0.5 * c0
    out = _carry(x, h, algorithm, a, s, 2) + c0 * d0 + c1 * d1
    if algorithm == "sde-dpmsolver++":
        out = out + _noise_term(s[0], h, noise, plus=True)
    return out


def singlestep_third_order(
    x: Tensor, m: list, a: tuple, s: tuple, algorithm: str, solver_type: str, noise: Tensor | None = None
) -> Tensor:
    """DPM-Solver-3 from s2 to t with outputs at s2, s1 and s0."""
    lam_t, lam_0, lam_1, lam_2 = (log_snr(ai, si) for ai, si in zip(a, s))
    h = lam_t - lam_2
    r0, r1 = (lam_0 - lam_2) / h, (lam_1 - lam_2) / h
    m0, m1, m2 = m[-1], m[-2], m[-3]
    d1_0, d1_1 = (1.0 / r1) * (m1 - m2), (1.0 / r0) * (m0 - m2)
    c0, c1, c2 = _exp_coeffs(h, algorithm, a[0], s[0])
    out = _carry(x, h, algorithm, a, s, 3) + c0 * m2
    if solver_type == "midpoint":
        out = out + c1 * d1_1
    else:
        d1 = (r0 * d1_0 - r1 * d1_1) / (r0 - r1)
        d2 = 2.0 * (d1_1 - d1_0) / (r0 - r1)
        out = out + c1 * d1 + c2 * d2
    if algorithm == "sde-dpmsolver++":
        out = out + _noise_term(s[0], h, noise, plus=True)
    return out
