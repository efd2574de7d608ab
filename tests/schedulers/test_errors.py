"""Bad input raises a clear ValueError / TypeError before any work, naming what was wrong."""

from __future__ import annotations

import pytest
import torch

import sfumato.schedulers as S

CLASSES = [n for n in S._names.NAMES if n.endswith("Scheduler")]
BETA_CLASSES = [n for n in CLASSES if n != "FlowMatchEulerDiscreteScheduler"]
SPACING_CLASSES = [n for n in BETA_CLASSES if n != "DPMSolverSinglestepScheduler"]


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize(
    ("n", "message"), [(0, "at least 1"), (-3, "at least 1"), (1001, "larger than num_train_timesteps")]
)
def test_bad_step_counts(name, n, message):
    scheduler = getattr(S, name)()
    with pytest.raises(ValueError, match=message):
        scheduler.set_timesteps(n)


@pytest.mark.parametrize("name", CLASSES)
def test_step_count_must_be_an_int(name):
    with pytest.raises(TypeError, match="num_inference_steps must be an int"):
        getattr(S, name)().set_timesteps("10")


@pytest.mark.parametrize("name", [n for n in CLASSES if n != "DDPMScheduler"])
def test_step_before_set_timesteps(name):
    scheduler = getattr(S, name)()
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"before set_timesteps\(\)"):
        scheduler.step(x, torch.tensor(999.0), x)


def test_ddpm_steps_over_all_training_steps_without_set_timesteps():
    # diffusers' quicktour loops over the default timesteps (999..0) without set_timesteps
    scheduler = S.DDPMScheduler()
    x = torch.zeros(1, 4, 8, 8)
    out = scheduler.step(x, 999, x, generator=torch.Generator().manual_seed(0))
    assert out.prev_sample.shape == x.shape


@pytest.mark.parametrize("name", BETA_CLASSES)
def test_unknown_beta_schedule_lists_valid_ones(name):
    with pytest.raises(
        ValueError, match=r"beta_schedule.*'linear', 'scaled_linear', 'squaredcos_cap_v2'.*got 'cosine'"
    ):
        getattr(S, name)(beta_schedule="cosine")


@pytest.mark.parametrize("name", BETA_CLASSES)
def test_unknown_prediction_type_lists_valid_ones(name):
    with pytest.raises(ValueError, match=r"prediction_type.*'epsilon'.*got 'eps'"):
        getattr(S, name)(prediction_type="eps")


@pytest.mark.parametrize("name", SPACING_CLASSES)
def test_unknown_timestep_spacing_lists_valid_ones(name):
    with pytest.raises(
        ValueError,
        match=r"timestep_spacing.*'linspace'.*'leading'.*'trailing'|timestep_spacing.*'leading'.*got 'uniform'",
    ):
        getattr(S, name)(timestep_spacing="uniform")


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("DDPMScheduler", [10, 500, 999]),
        ("DDPMScheduler", [999, 500, 500]),
        ("EulerDiscreteScheduler", [999.0, 999.0, 10.0]),
        ("HeunDiscreteScheduler", [1.0, 500.0]),
        ("DPMSolverMultistepScheduler", [999, 10, 500]),
        ("LCMScheduler", [259, 499, 759]),
    ],
)
def test_custom_timesteps_must_descend(name, values):
    with pytest.raises(ValueError, match=r"strictly descending; timesteps\[\d\]"):
        getattr(S, name)().set_timesteps(timesteps=values)


def test_custom_sigmas_must_descend():
    with pytest.raises(ValueError, match=r"strictly descending; sigmas\[1\]"):
        S.EulerDiscreteScheduler().set_timesteps(sigmas=[1.0, 2.0, 0.0])


def test_custom_timesteps_must_start_below_num_train_timesteps():
    with pytest.raises(ValueError, match="start below num_train_timesteps=1000"):
        S.DDPMScheduler().set_timesteps(timesteps=[1000, 500])


def test_mutually_exclusive_sigma_flags():
    with pytest.raises(ValueError, match="mutually exclusive"):
        S.EulerDiscreteScheduler(use_karras_sigmas=True, use_exponential_sigmas=True)


def test_wrong_type_config_value():
    with pytest.raises(TypeError, match="num_train_timesteps"):
        S.DDIMScheduler(num_train_timesteps="1000")


def test_dpm_final_sigmas_zero_needs_plus_plus():
    with pytest.raises(ValueError, match="final_sigmas_type='sigma_min'"):
        S.DPMSolverMultistepScheduler(algorithm_type="dpmsolver")


def test_pndm_prk_needs_four_steps():
    with pytest.raises(ValueError, match="skip_prk_steps=True"):
        S.PNDMScheduler().set_timesteps(3)


def test_euler_rejects_loop_index():
    scheduler = S.EulerDiscreteScheduler()
    scheduler.set_timesteps(5)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="not the loop index"):
        scheduler.step(x, 0, x)


def test_unknown_timestep_is_reported():
    scheduler = S.EulerDiscreteScheduler()
    scheduler.set_timesteps(5)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="not in this scheduler's timesteps"):
        scheduler.step(x, torch.tensor(123.5), x)


def test_lcm_too_many_steps_for_the_distillation_grid():
    with pytest.raises(ValueError, match="original_inference_steps"):
        S.LCMScheduler().set_timesteps(60)
