"""Step-for-step parity with diffusers over a grid of configs.

Full product of step counts on each scheduler's main (Stable Diffusion) config, plus one-factor-at-a-time
variations (beta schedule, prediction type, spacing, sigma schedule, solver options) at a few step counts.
"""

from __future__ import annotations

import pytest

from schedulers.sched_helpers import SD_BETAS, assert_same_trajectory

# diffusers feeds torch tensors to numpy in a few set_timesteps (thousands of DeprecationWarnings)
pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

STEPS = (1, 2, 5, 10, 25, 50)
VARIATION_STEPS = (2, 10)

SPACINGS = [
    {"timestep_spacing": "leading", "steps_offset": 1},
    {"timestep_spacing": "trailing"},
    {"timestep_spacing": "linspace"},
]
BETAS = [
    {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02},
    {"beta_schedule": "squaredcos_cap_v2"},
]
PREDICTIONS = [{"prediction_type": "v_prediction"}, {"prediction_type": "sample"}]
ZERO_SNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}
SIGMAS = [{"use_karras_sigmas": True}, {"use_exponential_sigmas": True}, {"use_beta_sigmas": True}]

# scheduler -> (main config, variations, stochastic?, overrides for a 1000-step run or None)
GRID: dict[str, tuple[dict, list[dict], bool, dict | None]] = {
    "DDPMScheduler": (
        {**SD_BETAS, "clip_sample": False},
        SPACINGS
        + BETAS
        + PREDICTIONS
        + [
            {"clip_sample": True},
            {"thresholding": True},
            {"variance_type": "fixed_large"},
            {"variance_type": "fixed_small_log"},
            ZERO_SNR,
        ],
        True,
        {},
    ),
    "DDIMScheduler": (
        {**SD_BETAS, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1},
        SPACINGS
        + BETAS
        + PREDICTIONS
        + [{"clip_sample": True}, {"thresholding": True}, {"set_alpha_to_one": True}, ZERO_SNR],
        False,
        {"steps_offset": 0},  # leading + offset 1 would index t=1000
    ),
    "EulerDiscreteScheduler": (
        dict(SD_BETAS),
        SPACINGS
        + BETAS
        + PREDICTIONS
        + SIGMAS
        + [
            {"final_sigmas_type": "sigma_min"},
            ZERO_SNR,
            {"interpolation_type": "log_linear"},
            {"timestep_type": "continuous", "prediction_type": "v_prediction"},
            {"use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0},
        ],
        False,
        {},
    ),
    "EulerAncestralDiscreteScheduler": (
        dict(SD_BETAS),
        SPACINGS + BETAS + [{"prediction_type": "v_prediction"}, ZERO_SNR],
        True,
        {},
    ),
    "DPMSolverMultistepScheduler": (
        dict(SD_BETAS),
        SPACINGS
        + BETAS
        + PREDICTIONS
        + SIGMAS
        + [
            {"solver_order": 1},
            {"solver_order": 3},
            {"solver_type": "heun"},
            {"lower_order_final": False},
            {"euler_at_final": True},
            {"final_sigmas_type": "sigma_min"},
            {"thresholding": True},
            {"algorithm_type": "sde-dpmsolver++"},
            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
            {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"},
            {"use_lu_lambdas": True},
            ZERO_SNR,
            {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
        ],
        True,
        {},
    ),
    "PNDMScheduler": (
        {**SD_BETAS, "skip_prk_steps": True, "steps_offset": 1},
        SPACINGS
        + BETAS
        + [
            {"prediction_type": "v_prediction"},
            {"set_alpha_to_one": True},
            {"skip_prk_steps": False, "__steps__": (5, 10)},
        ],
        False,
        {"steps_offset": 0},
    ),
    "LMSDiscreteScheduler": (
        dict(SD_BETAS),
        SPACINGS + BETAS + PREDICTIONS + SIGMAS,
        False,
        {},
    ),
    "HeunDiscreteScheduler": (
        dict(SD_BETAS),
        SPACINGS + BETAS + PREDICTIONS + SIGMAS + [{"clip_sample": True}],
        False,
        None,
    ),
    "KDPM2DiscreteScheduler": (
        dict(SD_BETAS),
        SPACINGS + BETAS + [{"prediction_type": "v_prediction"}] + SIGMAS,
        False,
        None,
    ),
    "KDPM2AncestralDiscreteScheduler": (
        dict(SD_BETAS),
        SPACINGS + BETAS + [{"prediction_type": "v_prediction"}] + SIGMAS,
        True,
        None,
    ),
    "UniPCMultistepScheduler": (
        dict(SD_BETAS),
        SPACINGS
        + BETAS
        + PREDICTIONS
        + SIGMAS
        + [
            {"solver_order": 1},
            {"solver_order": 3},
            {"solver_type": "bh1"},
            {"predict_x0": False},
            {"lower_order_final": False},
            {"final_sigmas_type": "sigma_min"},
            {"disable_corrector": [0, 1]},
            {"thresholding": True},
            {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"},
            {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0},
            {
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
                "use_dynamic_shifting": True,
                "__mu__": 0.9,
            },
            {
                "use_flow_sigmas": True,
                "prediction_type": "flow_prediction",
                "flow_shift": 5.0,
                "shift_terminal": 0.1,
            },
            ZERO_SNR,
        ],
        False,
        None,
    ),
    "LCMScheduler": (
        {},
        PREDICTIONS
        + [
            {"set_alpha_to_one": False},
            {"original_inference_steps": 100},
            {"thresholding": True},
            {"clip_sample": True},
        ]
        + BETAS,
        True,
        None,
    ),
    "DEISMultistepScheduler": (
        dict(SD_BETAS),
        SPACINGS
        + BETAS
        + PREDICTIONS
        + SIGMAS
        + [
            {"solver_order": 1},
            {"solver_order": 3},
            {"lower_order_final": False},
            {"thresholding": True},
            {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0},
        ],
        False,
        None,
    ),
    "DPMSolverSinglestepScheduler": (
        dict(SD_BETAS),
        BETAS
        + PREDICTIONS
        + SIGMAS
        + [
            {"solver_order": 1},
            {"solver_order": 3},
            {"solver_type": "heun"},
            {"solver_type": "heun", "solver_order": 3},
            {"lower_order_final": True},
            {"thresholding": True},
            {"final_sigmas_type": "sigma_min", "solver_order": 3},
            {"algorithm_type": "sde-dpmsolver++"},
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
            {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "solver_order": 3},
            {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0},
            {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
        ],
        True,
        None,
    ),
    "FlowMatchEulerDiscreteScheduler": (
        {"shift": 3.0},
        [
            {"shift": 1.0},
            {"use_dynamic_shifting": True, "__mu__": 0.8},
            {"use_dynamic_shifting": True, "time_shift_type": "linear", "__mu__": 1.5},
            *SIGMAS,
            {"shift_terminal": 0.02},
            {"invert_sigmas": True},
            {"stochastic_sampling": True},
        ],
        True,
        {},
    ),
}


def _cases():
    for name, (main, variations, stochastic, thousand) in GRID.items():
        for n in STEPS if name != "LCMScheduler" else (1, 2, 4, 8, 25, 50):
            yield pytest.param(name, main, n, stochastic, id=f"{name}-main-{n}")
        if thousand is not None:
            yield pytest.param(name, {**main, **thousand}, 1000, stochastic, id=f"{name}-main-1000")
        for i, var in enumerate(variations):
            var = dict(var)
            for n in var.pop("__steps__", VARIATION_STEPS):
                label = "-".join(f"{k}={v}" for k, v in var.items())
                yield pytest.param(name, {**main, **var}, n, stochastic, id=f"{name}-{label}-{n}-{i}")


@pytest.mark.parametrize(("name", "config", "n", "stochastic"), list(_cases()))
def test_trajectory_matches_diffusers(name, config, n, stochastic):
    assert_same_trajectory(name, config, n, seed=0 if stochastic else None)


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", list(GRID))
def test_half_precision_trajectory_equals_diffusers(name, dtype_name):
    """With bf16 / fp16 samples every step rounds like diffusers' (bit for bit): pipelines in those
    dtypes must give diffusers' images, and rounding differences grow over the steps."""
    import torch

    from schedulers.sched_helpers import make_pair, trajectory

    dtype = getattr(torch, dtype_name)
    config = {k: v for k, v in GRID[name][0].items() if k != "__mu__"}
    ours, theirs = make_pair(name, config)
    x_ours = trajectory(ours, 10, seed=0, dtype=dtype)[3]
    x_theirs = trajectory(theirs, 10, seed=0, dtype=dtype)[3]
    for i, (a, b) in enumerate(zip(x_ours, x_theirs, strict=True)):
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b), f"{name} in {dtype_name}: step {i} differs by {(a - b).abs().max()}"


CUSTOM_GRIDS = [
    ("DDPMScheduler", {"timesteps": [999, 800, 600, 400, 250, 100, 10]}),
    ("EulerDiscreteScheduler", {"timesteps": [999.0, 750.5, 500.0, 250.0, 3.0]}),
    ("EulerDiscreteScheduler", {"sigmas": [14.6, 7.0, 3.0, 1.0, 0.3, 0.0]}),
    ("HeunDiscreteScheduler", {"timesteps": [999, 700, 400, 100]}),
    ("DPMSolverMultistepScheduler", {"timesteps": [999, 850, 736, 645, 545, 455, 343, 233, 124, 24]}),
    ("LCMScheduler", {"timesteps": [999, 759, 499, 259]}),
    ("FlowMatchEulerDiscreteScheduler", {"sigmas": [1.0, 0.8, 0.5, 0.2, 0.05]}),
    ("FlowMatchEulerDiscreteScheduler", {"timesteps": [1000.0, 750.0, 500.0, 250.0]}),
]


@pytest.mark.parametrize(
    ("name", "grid"), CUSTOM_GRIDS, ids=[f"{n}-{next(iter(g))}" for n, g in CUSTOM_GRIDS]
)
def test_custom_grids_match_diffusers(name, grid):
    config = dict(SD_BETAS) if name not in ("LCMScheduler", "FlowMatchEulerDiscreteScheduler") else {}
    assert_same_trajectory(name, config, None, seed=0, set_kwargs=grid)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_ddpm_learned_variance_matches_diffusers(variance_type):
    import torch

    from schedulers.sched_helpers import make_pair, stand_in_model

    ours, theirs = make_pair(
        "DDPMScheduler", {**SD_BETAS, "variance_type": variance_type, "clip_sample": False}
    )
    results = []
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(10)
        gen = torch.Generator().manual_seed(0)
        x = torch.linspace(-1, 1, 256).reshape(1, 4, 8, 8)
        for t in scheduler.timesteps:
            eps = stand_in_model(x, t)
            predicted = (
                0.5 * torch.tanh(x) if variance_type == "learned_range" else 1e-3 * (1.1 + torch.sin(x))
            )
            x = scheduler.step(torch.cat([eps, predicted], dim=1), t, x, generator=gen).prev_sample
        results.append(x)
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)
