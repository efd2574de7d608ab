"""Shared helpers for the scheduler tests: a deterministic stand-in model and a trajectory runner."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
SHAPE = (1, 4, 8, 8)


def stand_in_model(x: torch.Tensor, t) -> torch.Tensor:
    """An analytic 'denoiser' of sample and timestep, so both libraries see identical inputs."""
    t = float(t)
    return 0.1 * x * math.cos(t / 1000) + 0.05 * math.sin(t)


def make_pair(name: str, config: dict):
    ours = getattr(__import__("sfumato.schedulers", fromlist=[name]), name)(**config)
    theirs = getattr(diffusers, name)(**config)
    return ours, theirs


def trajectory(
    scheduler,
    n: int | None,
    seed: int | None = 0,
    step_kwargs=None,
    set_kwargs=None,
    use_global=False,
    dtype=torch.float32,
):
    """Run a full sampling loop; returns (timesteps, sigmas or None, init_noise_sigma, [x after each step]).

    The sample (and so the model output) is in `dtype`.
    """
    scheduler.set_timesteps(n, **(set_kwargs or {}))
    init_sigma = float(getattr(scheduler, "init_noise_sigma", 1.0))  # flow matching has none
    x = (torch.linspace(-1, 1, math.prod(SHAPE)).reshape(SHAPE) * init_sigma).to(dtype)
    gen = None
    if use_global:
        torch.manual_seed(seed)
    elif seed is not None:
        gen = torch.Generator().manual_seed(seed)
    kwargs = dict(step_kwargs or {})
    if gen is not None and "generator" in inspect.signature(scheduler.step).parameters:
        kwargs["generator"] = gen
    out = []
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        x = scheduler.step(stand_in_model(model_in, t), t, x, **kwargs).prev_sample
        out.append(x)
    sigmas = getattr(scheduler, "sigmas", None)
    return scheduler.timesteps, sigmas, init_sigma, out


def assert_same_trajectory(name: str, config: dict, n, rtol: float = 1e-5, **kwargs) -> None:
    config = dict(config)
    set_kwargs = {"mu": config.pop("__mu__")} if "__mu__" in config else None
    kwargs.setdefault("set_kwargs", set_kwargs)
    ours, theirs = make_pair(name, config)
    t_ours, s_ours, init_ours, x_ours = trajectory(ours, n, **kwargs)
    t_theirs, s_theirs, init_theirs, x_theirs = trajectory(theirs, n, **kwargs)
    assert t_ours.dtype == t_theirs.dtype, (t_ours.dtype, t_theirs.dtype)
    # exact, except float64 timesteps (KDPM2's beta grid) where our scipy-free beta quantiles may differ by an ulp
    t_rtol = 1e-12 if t_theirs.dtype == torch.float64 else 0.0
    torch.testing.assert_close(t_ours, t_theirs, rtol=t_rtol, atol=0, equal_nan=True)
    if s_theirs is not None:
        torch.testing.assert_close(s_ours, torch.as_tensor(s_theirs), rtol=1e-6, atol=0, equal_nan=True)
    assert init_ours == pytest.approx(init_theirs, rel=1e-6)
    assert len(x_ours) == len(x_theirs)
    for i, (a, b) in enumerate(zip(x_ours, x_theirs)):
        assert torch.equal(a.isnan(), b.isnan()), f"{name} {config} n={n}: NaNs differ at step {i}"
        finite = b.isfinite()
        scale = b[finite].abs().max().clamp(min=1e-6) if finite.any() else torch.tensor(1.0)
        err = ((a - b)[finite].abs().max() / scale).item() if finite.any() else 0.0
        assert err <= rtol, f"{name} {config} n={n}: step {i} differs by {err:.3g} (relative)"
