"""Pure schedule / solver functions against closed forms, scipy and cross-identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfumato.schedulers import schedules
from sfumato.schedulers.prediction import alpha_sigma_from_ve, x0_vp
from sfumato.schedulers.solvers import ddim, dpmpp, euler


def test_karras_endpoints_are_sigma_max_and_sigma_min():
    s = schedules.karras_sigmas(12, 0.0292, 14.6146)
    assert s[0] == pytest.approx(14.6146, rel=1e-12)
    assert s[-1] == pytest.approx(0.0292, rel=1e-12)
    assert np.all(np.diff(s) < 0)


def test_exponential_sigmas_are_log_uniform():
    s = schedules.exponential_sigmas(9, 0.1, 10.0)
    assert np.allclose(np.diff(np.log(s)), np.log(0.1 / 10.0) / 8)


def test_beta_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for p in np.linspace(0, 1, 41):
        assert schedules.beta_ppf(float(p), 0.6, 0.6) == pytest.approx(stats.beta.ppf(p, 0.6, 0.6), abs=1e-13)
        assert schedules.beta_cdf(float(p), 2.0, 0.5) == pytest.approx(stats.beta.cdf(p, 2.0, 0.5), abs=1e-13)


def test_zero_terminal_snr_rescale():
    betas = schedules.make_betas("scaled_linear", 1000, 0.00085, 0.012)
    alpha_bar = torch.cumprod(1 - schedules.rescale_zero_terminal_snr(betas), 0)
    assert alpha_bar[-1].item() == pytest.approx(0.0, abs=1e-7)
    assert alpha_bar[0].item() == pytest.approx(torch.cumprod(1 - betas, 0)[0].item(), rel=1e-5)


def test_sigma_to_t_inverts_the_training_table():
    alpha_bar = torch.cumprod(1 - schedules.make_betas("linear", 1000, 1e-4, 0.02), 0)
    train = schedules.sigmas_from_alpha_bar(alpha_bar).astype(np.float64)
    t = schedules.sigma_to_t(train[[3, 500, 998]], np.log(train))
    assert np.allclose(t, [3, 500, 998], atol=1e-6)


def test_ddim_eta0_is_euler_in_the_scaled_variable():
    """DDIM (eta = 0) on x equals Euler on x / sqrt(alpha_bar) (Karras et al. 2022, sec. 4)."""
    gen = torch.Generator().manual_seed(0)
    x, x0 = (
        torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64),
        torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64),
    )
    ab, ab_prev = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    x_prev = ddim.ddim_step(x0, eps, ab_prev, torch.tensor(0.0, dtype=torch.float64))
    sigma, sigma_prev = ((1 - ab) / ab).sqrt(), ((1 - ab_prev) / ab_prev).sqrt()
    x_prev_ve = euler.euler_step(x / ab.sqrt(), x0, sigma, sigma_prev)
    torch.testing.assert_close(x_prev / ab_prev.sqrt(), x_prev_ve)


def test_dpm_solver_1_is_ddim():
    """First-order DPM-Solver++ equals deterministic DDIM (Lu et al. 2022b, sec. 4)."""
    x = torch.linspace(-2, 2, 64, dtype=torch.float64)
    x0 = torch.cos(x)
    sigma, sigma_next = torch.tensor(3.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    (a_s, s_s), (a_t, s_t) = alpha_sigma_from_ve(sigma), alpha_sigma_from_ve(sigma_next)
    ours = dpmpp.first_order(x, x0, (a_t, a_s), (s_t, s_s), "dpmsolver++")
    eps = (x - a_s * x0) / s_s
    torch.testing.assert_close(ours, ddim.ddim_step(x0, eps, a_t**2, torch.tensor(0.0, dtype=torch.float64)))
    assert x0_vp(eps, x, a_s, s_s, "epsilon").allclose(x0)


def test_ancestral_split_preserves_variance():
    sigma, sigma_next = torch.tensor(4.0), torch.tensor(1.5)
    up, down = euler.ancestral_sigmas(sigma, sigma_next)
    assert (up**2 + down**2).item() == pytest.approx(sigma_next.item() ** 2, rel=1e-6)
