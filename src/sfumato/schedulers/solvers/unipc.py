"""UniPC: unified predictor-corrector of Zhao et al. 2023 (UniP-p / UniC-p with B(h) = bh1 or bh2).

`ms` are converted model outputs (x0 when `predict_x0`, else eps), newest last; `lam` are the
log-SNRs lambda of the points those outputs were taken at, newest last (lam[-1] is lambda_s0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dpmpp import log_snr


def _ratios_and_diffs(ms: list, lam: list, lambda_s0: Tensor, h: Tensor, count: int, offset: int) -> tuple:
    """r_k = (lambda_{s_k} - lambda_s0) / h and D_k = (m_k - m0) / r_k for the `count` older points."""
    m0 = ms[-1]
    rks, d1s = [], []
    for i in range(1, count):
        rk = (lam[-(i + offset)] - lambda_s0) / h
        rks.append(rk)
        d1s.append((ms[-(i + 1)] - m0) / rk)
    rks.append(torch.ones((), device=h.device))
    return torch.stack(rks), (torch.stack(d1s, dim=1) if d1s else None)  # d1s: (B, K, ...)


def _phi_system(rks: Tensor, h: Tensor, order: int, solver_type: str, predict_x0: bool) -> tuple:
    """(R, b, h*phi_1(hh), B(h)) of the UniPC linear system (Zhao et al. 2023, Algorithm 1)."""
    hh = -h if predict_x0 else h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    if solver_type == "bh1":
        b_h = hh
    elif solver_type == "bh2":
        b_h = torch.expm1(hh)
    else:
        raise ValueError(f"unknown UniPC solver_type {solver_type!r}; use 'bh1' or 'bh2'")
    rows, b, factorial = [], [], 1
    for i in range(1, order + 1):
        rows.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(b), h_phi_1, b_h


def _base(x, m0, a_t, s_t, a_s0, s_s0, h_phi_1, predict_x0: bool) -> tuple:
    if predict_x0:
        return s_t / s_s0 * x - a_t * h_phi_1 * m0, a_t
    return a_t / a_s0 * x - s_t * h_phi_1 * m0, s_t


def unipc_predict(
    x: Tensor, ms: list, lam: list, at: tuple, st: tuple, order: int, solver_type: str, predict_x0: bool
) -> Tensor:
    """UniP-p: x at t from x at s0; `at`, `st` are (alpha, sigma) at (t, s0)."""
    (a_t, a_s0), (s_t, s_s0) = at, st
    lambda_s0 = log_snr(a_s0, s_s0)
    h = log_snr(a_t, s_t) - lambda_s0
    rks, d1s = _ratios_and_diffs(ms, lam, lambda_s0, h, order, offset=1)
    R, b, h_phi_1, b_h = _phi_system(rks, h, order, solver_type, predict_x0)
    x_t, scale = _base(x, ms[-1], a_t, s_t, a_s0, s_s0, h_phi_1, predict_x0)
    if d1s is None:
        return (x_t - scale * b_h * 0).to(x.dtype)
    if order == 2:
        rhos = torch.ones(1, dtype=x.dtype, device=x.device) * 0.5
    else:
        rhos = torch.linalg.solve(R[:-1, :-1], b[:-1]).to(x.device).to(x.dtype)
    res = torch.einsum("k,bkc...->bc...", rhos, d1s)
    return (x_t - scale * b_h * res).to(x.dtype)


def unipc_correct(
    x: Tensor,
    model_t: Tensor,
    ms: list,
    lam: list,
    at: tuple,
    st: tuple,
    order: int,
    solver_type: str,
    predict_x0: bool,
) -> Tensor:
    """UniC-p: refine x_t (already predicted) with the model output `model_t` evaluated there."""
    (a_t, a_s0), (s_t, s_s0) = at, st
    lambda_s0 = log_snr(a_s0, s_s0)
    h = log_snr(a_t, s_t) - lambda_s0
    rks, d1s = _ratios_and_diffs(ms, lam, lambda_s0, h, order, offset=1)
    R, b, h_phi_1, b_h = _phi_system(rks, h, order, solver_type, predict_x0)
    if order == 1:
        rhos = torch.ones(1, dtype=x.dtype, device=x.device) * 0.5
    else:
        rhos = torch.linalg.solve(R, b).to(x.device).to(x.dtype)
    x_t, scale = _base(x, ms[-1], a_t, s_t, a_s0, s_s0, h_phi_1, predict_x0)
    res = torch.einsum("k,bkc...->bc...", rhos[:-1], d1s) if d1s is not None else 0
    return (x_t - scale * b_h * (res + rhos[-1] * (model_t - ms[-1]))).to(x.dtype)
