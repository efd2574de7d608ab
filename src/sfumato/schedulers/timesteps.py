"""Validated inference timesteps from a config: step counts or user-given custom timesteps."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import check_descending, check_num_steps
from .schedules import (
    dpm_timestep_grid,
    interp_sigmas,
    respace_sigmas,
    shift_sigmas,
    sigma_schedule,
    sigma_to_t,
    sigmas_from_alpha_bar,
    time_shift,
    timestep_grid,
)


def integer_timesteps(config: Any, n: int | None, custom: Any = None) -> tuple[np.ndarray, bool]:
    """(int64 descending timesteps, is_custom) for the DDPM/DDIM family."""
    num_train = config.num_train_timesteps
    if n is not None and custom is not None:
        raise ValueError("pass either num_inference_steps or timesteps, not both")
    if custom is not None:
        values = check_descending(custom)
        if values[0] >= num_train:
            raise ValueError(
                f"custom timesteps must start below num_train_timesteps={num_train}, got {values[0]}"
            )
        return np.array(values, dtype=np.int64), True
    if n is None:
        raise ValueError("pass num_inference_steps (or custom timesteps)")
    check_num_steps(n, num_train)
    grid = timestep_grid(config.timestep_spacing, n, num_train, config.steps_offset)
    return grid.astype(np.int64), False


def float_timesteps(config: Any, n: int) -> np.ndarray:
    """Float32 descending timesteps for the Euler family (linspace points are not rounded)."""
    check_num_steps(n, config.num_train_timesteps)
    grid = timestep_grid(
        config.timestep_spacing, n, config.num_train_timesteps, config.steps_offset, rounded=False
    )
    return grid.astype(np.float32)


def ve_sigma_grid(
    config: Any,
    alpha_bar: Any,
    n: int | None,
    timesteps: Any = None,
    sigmas: Any = None,
    final_sigma: str = "zero",
    interpolation: str = "linear",
    round_respaced: bool = False,
    cast: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 timesteps, float32 sigmas with the final sigma appended) for the Euler family.

    Either `n` steps with the configured spacing and sigma schedule (karras / exponential), or custom
    descending `timesteps`, or custom descending `sigmas` (whose last entry is the final sigma).
    """
    given = [
        k
        for k, v in (("num_inference_steps", n), ("timesteps", timesteps), ("sigmas", sigmas))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            f"pass exactly one of num_inference_steps, timesteps or sigmas (got {given or 'none'})"
        )
    kind = sigma_schedule(config)
    train = sigmas_from_alpha_bar(alpha_bar)  # (num_train,) ascending in t
    log_sigmas = np.log(train)
    if sigmas is not None:
        sigmas = np.array(check_descending(sigmas, "sigmas")).astype(np.float32)
        return sigma_to_t(sigmas[:-1], log_sigmas).astype(np.float32), sigmas
    if timesteps is not None:
        if kind != "default":
            raise ValueError(f"custom timesteps cannot be combined with use_{kind}_sigmas=True")
        t = np.array(check_descending(timesteps)).astype(np.float32)
    else:
        t = float_timesteps(config, n)
    if interpolation == "log_linear":
        s = np.exp(np.linspace(np.log(train[-1]), np.log(train[0]), len(t) + 1, dtype=np.float32))
    else:
        s = interp_sigmas(t, train)
    if kind != "default":
        s = respace_sigmas(kind, s, len(t), config.get("sigma_min"), config.get("sigma_max"))
        t = sigma_to_t(s, log_sigmas)
        if round_respaced and kind == "karras":
            t = t.round()
    last = float(train[0]) if final_sigma == "sigma_min" else 0.0
    # `cast=False` keeps float64 timesteps of respaced grids (KDPM2 exposes them like that)
    return (t.astype(np.float32) if cast else t), np.concatenate([s, [last]]).astype(np.float32)


def flow_sigmas(n: int, num_train: int, shift: float) -> np.ndarray:
    """DPM-Solver / DEIS flow grid: n+1 shifted levels from 1 - 1/N down to 0, the 0 dropped.

    (UniPC's flow grid starts at 1 instead: see `unipc_flow_grid`.)
    """
    s = 1.0 - np.linspace(1, 1 / num_train, n + 1)
    return np.flip(shift_sigmas(s, shift))[:-1].copy()


def dpm_sigma_grid(
    config: Any,
    alpha_bar: Any,
    n: int | None,
    custom: Any = None,
    *,
    last_timestep: int | None = None,
    final: str = "zero",
    final_from_grid: bool = False,
    round_karras: bool = True,
    flow_shift: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(int64 timesteps, float32 sigmas + final sigma) for DPM-Solver, UniPC and DEIS.

    `final` is "zero" or "sigma_min"; with `final_from_grid` the sigma_min of a karras/exponential/flow
    grid is its own last value (UniPC, DEIS) instead of the training table's smallest sigma.
    """
    num_train = config.num_train_timesteps
    if (n is None) == (custom is None):
        raise ValueError("pass exactly one of num_inference_steps or timesteps")
    kind = "flow" if config.get("use_flow_sigmas") else sigma_schedule(config)
    train = sigmas_from_alpha_bar(alpha_bar)  # (num_train,) ascending in t
    log_sigmas = np.log(train)
    if custom is not None:
        if kind != "default":
            raise ValueError(f"custom timesteps cannot be combined with use_{kind}_sigmas=True")
        t = np.array(check_descending(custom)).astype(np.int64)
    else:
        check_num_steps(n, num_train)
        spacing, offset = config.get("timestep_spacing", "linspace"), config.get("steps_offset", 0)
        t = dpm_timestep_grid(spacing, n, num_train, offset, last_timestep or num_train)
    if kind in ("karras", "exponential", "beta"):
        s = respace_sigmas(kind, train[::-1].copy(), len(t))
        t = sigma_to_t(s, log_sigmas)
        if kind == "karras" and round_karras:
            t = t.round()
    elif kind == "flow":
        s = flow_sigmas(len(t), num_train, flow_shift)
        t = s * num_train
    else:
        s = interp_sigmas(t, train)
    if final == "zero":
        last = 0.0
    elif final_from_grid and kind != "default":
        last = float(s[-1])
    else:
        last = float(train[0])
    return t.astype(np.int64), np.concatenate([s, [last]]).astype(np.float32)


def unipc_flow_grid(config: Any, n: int | None, sigmas: Any = None, mu: float | None = None) -> tuple:
    """(timesteps, sigmas + final) of UniPC's flow-matching mode: shifted (or mu time-shifted) sigmas from 1."""
    if sigmas is None:
        check_num_steps(n, config.num_train_timesteps)
        s = np.linspace(1, 1 / config.num_train_timesteps, n + 1)[:-1]
    else:
        s = np.array(check_descending(sigmas, "sigmas"), dtype=np.float64)
    if config.use_dynamic_shifting:
        s = time_shift(config.time_shift_type, mu, s)
    else:
        s = shift_sigmas(s, config.flow_shift)
    if config.shift_terminal:
        one_minus = 1 - s
        s = 1 - one_minus / (one_minus[-1] / (1 - config.shift_terminal))
    if abs(s[0] - 1) < 1e-6:
        s[0] -= 1e-6  # sigma = 1 would make alpha = 0
    last = float(s[-1]) if config.final_sigmas_type == "sigma_min" else 0.0
    return (s * config.num_train_timesteps).astype(np.int64), np.concatenate([s, [last]]).astype(np.float32)
