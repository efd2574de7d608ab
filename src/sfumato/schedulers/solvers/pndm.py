"""Pseudo numerical methods for diffusion models (Liu et al. 2022): the transfer step and its multistep weights."""

from __future__ import annotations

from torch import Tensor

# Runge-Kutta weights of the four PRK stages (classic RK4)
PRK_WEIGHTS = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


def pndm_transfer(
    x: Tensor, eps: Tensor, alpha_bar: Tensor | float, alpha_bar_prev: Tensor | float
) -> Tensor:
    """The transfer function phi(x_t, eps, t, t-delta) of Liu et al. 2022, eq. (11)."""
    x_coeff = (alpha_bar_prev / alpha_bar) ** 0.5
    denom = alpha_bar * (1 - alpha_bar_prev) ** 0.5 + (alpha_bar * (1 - alpha_bar) * alpha_bar_prev) ** 0.5
    return x_coeff * x - (alpha_bar_prev - alpha_bar) * eps / denom


def plms_eps(ets: list) -> Tensor:
    """Adams-Bashforth combination of the last 1-4 noise predictions (oldest first), eq. (12)."""
    if len(ets) == 1:
        return ets[-1]
    if len(ets) == 2:
        return (3 * ets[-1] - ets[-2]) / 2
    if len(ets) == 3:
        return (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
    return (1 / 24) * (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4])
