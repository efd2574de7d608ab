"""Scheduler API behaviour against diffusers: signatures, from_config, save/load, noise, outputs."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest
import torch

import sfumato.schedulers as S
from schedulers.sched_helpers import SD_BETAS, assert_same_trajectory, make_pair, trajectory

diffusers = pytest.importorskip("diffusers")
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

CLASSES = [n for n in S._names.NAMES if n.endswith("Scheduler")]
# SD 1.5's scheduler_config.json (a PNDM config; no prediction_type / timestep_spacing keys)
SD15 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", CLASSES)
def test_init_signature_matches_diffusers(name):
    ours = inspect.signature(getattr(S, name).__init__).parameters
    theirs = inspect.signature(getattr(diffusers, name).__init__).parameters
    assert list(ours) == list(theirs)
    for key, p in theirs.items():
        if p.default is not inspect.Parameter.empty:
            assert _plain(ours[key].default) == _plain(p.default), key


@pytest.mark.parametrize("name", CLASSES)
def test_defaults_order_and_config_keys(name):
    ours, theirs = getattr(S, name)(), getattr(diffusers, name)()
    assert ours.order == theirs.order
    assert len(ours) == len(theirs) if hasattr(theirs, "__len__") else True
    keys = [k for k in theirs.config if not k.startswith("_")]
    assert {k: _plain(ours.config[k]) for k in keys} == {k: _plain(theirs.config[k]) for k in keys}


@pytest.mark.parametrize(
    "name", [n for n in CLASSES if n not in ("LCMScheduler", "FlowMatchEulerDiscreteScheduler")]
)
def test_from_config_of_sd15_pndm_matches_diffusers(name):
    """Keys the file lacks take the target's defaults (PNDM -> Euler gets linspace), like diffusers."""
    ours = getattr(S, name).from_config(S.PNDMScheduler.from_config(SD15).config)
    theirs = getattr(diffusers, name).from_config(diffusers.PNDMScheduler.from_config(SD15).config)
    keys = [k for k in inspect.signature(getattr(diffusers, name).__init__).parameters if k != "self"]
    assert {k: _plain(ours.config[k]) for k in keys} == {k: _plain(theirs.config[k]) for k in keys}
    for n in (10, 25):
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        torch.testing.assert_close(ours.timesteps, theirs.timesteps, rtol=0, atol=0)
        assert float(ours.init_noise_sigma) == pytest.approx(float(theirs.init_noise_sigma), rel=1e-6)


def test_sd15_numbers_from_the_notes():
    euler = S.EulerDiscreteScheduler.from_config(SD15)
    euler.set_timesteps(10)
    assert euler.config.timestep_spacing == "linspace"
    assert float(euler.init_noise_sigma) == pytest.approx(14.6146, abs=1e-4)
    pndm = S.PNDMScheduler.from_config(SD15)
    pndm.set_timesteps(10)
    assert pndm.timesteps[:4].tolist() == [901, 801, 801, 701]


@pytest.mark.parametrize(
    ("src", "dst", "key", "expected"),
    [
        ("DEISMultistepScheduler", "UniPCMultistepScheduler", "solver_type", "bh2"),
        ("DEISMultistepScheduler", "DPMSolverMultistepScheduler", "solver_type", "midpoint"),
        ("UniPCMultistepScheduler", "DEISMultistepScheduler", "solver_type", "logrho"),
    ],
)
def test_solver_type_after_switch(src, dst, key, expected):
    ours = getattr(S, dst).from_config(getattr(S, src)(solver_order=3).config)
    theirs = getattr(diffusers, dst).from_config(getattr(diffusers, src)(solver_order=3).config)
    assert ours.config[key] == theirs.config[key] == expected
    assert ours.config.solver_order == theirs.config.solver_order == 3


def test_explicit_override_survives_hops():
    a = S.EulerDiscreteScheduler.from_config(SD15, timestep_spacing="trailing")
    b = S.DDIMScheduler.from_config(S.PNDMScheduler.from_config(a.config).config)
    assert b.config.timestep_spacing == "trailing"
    assert sorted(c.__name__ for c in a.compatibles) == sorted(
        set(CLASSES) - {"LCMScheduler", "FlowMatchEulerDiscreteScheduler"}
    )


@pytest.mark.parametrize("name", CLASSES)
def test_save_load_round_trips_with_diffusers(tmp_path, name):
    config = {"LCMScheduler": {}, "FlowMatchEulerDiscreteScheduler": {"shift": 3.0}}.get(name, dict(SD_BETAS))
    if name in ("DPMSolverMultistepScheduler", "EulerDiscreteScheduler"):
        config["use_karras_sigmas"] = True
    ours, theirs = make_pair(name, config)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs" / "scheduler")
    written = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    by_diffusers = json.loads((tmp_path / "theirs" / "scheduler" / "scheduler_config.json").read_text())
    assert written["_class_name"] == name
    assert set(written) - {"_sfumato_version"} == set(by_diffusers)
    assert {k: v for k, v in written.items() if not k.startswith("_")} == {
        k: v for k, v in by_diffusers.items() if not k.startswith("_")
    }
    from_ours = getattr(diffusers, name).from_pretrained(tmp_path / "ours")
    from_theirs = getattr(S, name).from_pretrained(tmp_path / "theirs", subfolder="scheduler")
    again = getattr(S, name).from_pretrained(tmp_path / "ours")
    expected = trajectory(theirs, 10)[3][-1]
    for loaded in (from_theirs, again, from_ours):
        torch.testing.assert_close(trajectory(loaded, 10)[3][-1], expected, rtol=1e-5, atol=1e-6)


def test_from_pretrained_kwargs_override_the_file(tmp_path):
    S.EulerDiscreteScheduler(**SD_BETAS).save_pretrained(tmp_path)
    loaded = S.EulerDiscreteScheduler.from_pretrained(tmp_path, timestep_spacing="trailing")
    assert loaded.config.timestep_spacing == "trailing"
    assert loaded.config.beta_schedule == "scaled_linear"
    with pytest.raises(TypeError, match="from_pretrained"):
        S.EulerDiscreteScheduler.from_config(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("DDPMScheduler", SD_BETAS),
        ("DDIMScheduler", SD_BETAS),
        ("EulerAncestralDiscreteScheduler", SD_BETAS),
        ("KDPM2AncestralDiscreteScheduler", SD_BETAS),
        ("DPMSolverMultistepScheduler", {**SD_BETAS, "algorithm_type": "sde-dpmsolver++"}),
        ("DPMSolverSinglestepScheduler", {**SD_BETAS, "algorithm_type": "sde-dpmsolver++"}),
        ("LCMScheduler", {}),
        ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
    ],
)
def test_global_seed_noise_matches_diffusers(name, config):
    step_kwargs = {"eta": 1.0} if name == "DDIMScheduler" else None
    assert_same_trajectory(name, config, 5, seed=123, use_global=True, step_kwargs=step_kwargs)


def test_ddim_eta_with_generator_matches_diffusers():
    assert_same_trajectory("DDIMScheduler", SD_BETAS, 10, seed=7, step_kwargs={"eta": 0.7})
    assert_same_trajectory(
        "DDIMScheduler", SD_BETAS, 10, seed=7, step_kwargs={"eta": 1.0, "use_clipped_model_output": True}
    )


def test_euler_churn_matches_diffusers():
    assert_same_trajectory(
        "EulerDiscreteScheduler",
        SD_BETAS,
        10,
        seed=3,
        step_kwargs={"s_churn": 0.5, "s_tmin": 0.5, "s_tmax": 10.0},
    )


@pytest.mark.parametrize("name", CLASSES)
def test_return_dict_false_is_the_tuple(name):
    def kwargs():
        takes_generator = "generator" in inspect.signature(getattr(S, name).step).parameters
        return {"generator": torch.Generator().manual_seed(0)} if takes_generator else {}

    ours = getattr(S, name)()
    ours.set_timesteps(4)
    x = torch.ones(1, 4, 8, 8)
    t = ours.timesteps[0]
    out = ours.step(0.1 * x, t, x, return_dict=True, **kwargs())
    again = getattr(S, name)()
    again.set_timesteps(4)
    tup = again.step(0.1 * x, t, x, return_dict=False, **kwargs())
    assert isinstance(tup, tuple)
    assert tup[0].equal(out.prev_sample)
    theirs = getattr(diffusers, name)()
    theirs.set_timesteps(4)
    assert len(tup) == len(theirs.step(0.1 * x, t, x, return_dict=False, **kwargs()))


@pytest.mark.parametrize("name", [n for n in CLASSES if n != "FlowMatchEulerDiscreteScheduler"])
def test_add_noise_matches_diffusers(name):
    ours, theirs = make_pair(name, dict(SD_BETAS) if name != "LCMScheduler" else {})
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    x0 = torch.linspace(-1, 1, 2 * 4 * 8 * 8).reshape(2, 4, 8, 8)
    noise = torch.cos(torch.arange(x0.numel(), dtype=torch.float32)).reshape(x0.shape)
    t = ours.timesteps[[1, 3]]
    torch.testing.assert_close(
        ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), rtol=1e-6, atol=1e-6
    )


def test_flow_scale_noise_matches_diffusers():
    ours, theirs = make_pair("FlowMatchEulerDiscreteScheduler", {"shift": 3.0})
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    x0, noise = torch.ones(2, 4, 8, 8), torch.full((2, 4, 8, 8), -0.5)
    t = ours.timesteps[[2, 5]]
    torch.testing.assert_close(ours.scale_noise(x0, t, noise), theirs.scale_noise(x0, t, noise))


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler", "LCMScheduler"])
def test_get_velocity_matches_diffusers(name):
    ours, theirs = make_pair(name, {})
    x0, noise = torch.ones(2, 4, 8, 8), torch.full((2, 4, 8, 8), -0.5)
    t = torch.tensor([10, 700])
    torch.testing.assert_close(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t))


def test_begin_index_img2img_matches_diffusers():
    for name in ("EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "HeunDiscreteScheduler"):
        ours, theirs = make_pair(name, dict(SD_BETAS))
        for s in (ours, theirs):
            s.set_timesteps(10)
            s.set_begin_index(4 * s.order)
        assert ours.begin_index == theirs.begin_index
        x = torch.ones(1, 4, 8, 8)
        t = ours.timesteps[4 * ours.order : 4 * ours.order + 1]
        torch.testing.assert_close(ours.add_noise(x, -x, t), theirs.add_noise(x, -x, t))
        for s in (ours, theirs):
            s.step(0.1 * x, t[0], x)
        assert ours.step_index == theirs.step_index


def test_multistep_history_is_reset_by_set_timesteps():
    ours = S.DPMSolverMultistepScheduler(**SD_BETAS)
    first = trajectory(ours, 10)[3][-1]
    second = trajectory(ours, 10)[3][-1]
    assert first.equal(second)
    assert ours.lower_order_nums == 2 and len(ours.model_outputs) == 2


def test_lms_coefficients_match_scipy_quadrature():
    scipy_integrate = pytest.importorskip("scipy.integrate")
    from sfumato.schedulers.solvers.lms import lms_coefficient

    sigmas = [14.6, 7.8, 4.6, 2.9, 1.9, 0.0]
    for i in range(4):
        order = min(i + 1, 4)
        for k in range(order):

            def basis(tau, i=i, k=k, order=order):
                out = 1.0
                for j in range(order):
                    if j != k:
                        out *= (tau - sigmas[i - j]) / (sigmas[i - k] - sigmas[i - j])
                return out

            expected = scipy_integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-10)[0]
            assert lms_coefficient(sigmas, order, i, k) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_importing_schedulers_does_not_import_torch_or_scipy():
    code = "import sys, sfumato, sfumato.schedulers as s; s.__dir__(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    code = "import sys, sfumato.schedulers as s; s.LMSDiscreteScheduler; s.from_name('LMS'); print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
