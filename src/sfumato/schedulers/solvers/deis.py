"""Multistep DEIS with the log-rho polynomial extrapolation (Zhang & Chen 2023, "tAB-DEIS").

rho = sigma_t / alpha_t; the eps predictions at past rho are extrapolated by Lagrange polynomials in
log(rho) and integrated exactly; `m` are eps predictions, newest last.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _ind2(t: Tensor, b: Tensor, c: Tensor) -> Tensor:
    return t * (-torch.log(c) + torch.log(t) - 1) / (torch.log(b) - torch.log(c))


def _ind3(t: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    lt, lb, lc, ld = torch.log(t), torch.log(b), torch.log(c), torch.log(d)
    numerator = t * (lc * (ld - lt + 1) - ld * lt + ld + lt**2 - 2 * lt + 2)
    return numerator / ((lb - lc) * (lb - ld))


def deis_second_order(x: Tensor, m: list, a: tuple, s: tuple) -> Tensor:
    """Second-order DEIS step from s0 to t; `a`, `s` are (alpha, sigma) at (t, s0, s1)."""
    rho_t, rho_0, rho_1 = (si / ai for ai, si in zip(a, s))
    c1 = _ind2(rho_t, rho_0, rho_1) - _ind2(rho_0, rho_0, rho_1)
    c2 = _ind2(rho_t, rho_1, rho_0) - _ind2(rho_0, rho_1, rho_0)
    return a[0] * (x / a[1] + c1 * m[-1] + c2 * m[-2])


def deis_third_order(x: Tensor, m: list, a: tuple, s: tuple) -> Tensor:
    """Third-order DEIS step from s0 to t; `a`, `s` are (alpha, sigma) at (t, s0, s1, s2)."""
    rho_t, rho_0, rho_1, rho_2 = (si / ai for ai, si in zip(a, s))
    c1 = _ind3(rho_t, rho_0, rho_1, rho_2) - _ind3(rho_0, rho_0, rho_1, rho_2)
    c2 = _ind3(rho_t, rho_1, rho_2, rho_0) - _ind3(rho_0, rho_1, rho_2, rho_0)
    c3 = _ind3(rho_t, rho_2, rho_0, rho_1) - _ind3(rho_0, rho_2, rho_0, rho_1)
    return a[0] * (x / a[1] + c1 * m[-1] + c2 * m[-2] + c3 * m[-3])
