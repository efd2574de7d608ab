"""A1111 sampler names <-> schedulers."""

from __future__ import annotations

import pytest

from sfumato.schedulers import SAMPLER_NAMES, from_name, to_name

SD15 = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "skip_prk_steps": True,
}
REQUIRED = [
    "Euler",
    "Euler a",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DDIM",
    "DDPM",
    "PNDM",
    "UniPC",
    "LMS",
    "LMS Karras",
    "Heun",
    "DPM2",
    "DPM2 Karras",
    "DPM2 a",
    "DPM2 a Karras",
    "LCM",
    "DEIS",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_every_a1111_name_round_trips(name):
    scheduler = from_name(name, SD15)
    assert to_name(scheduler) == name
    assert scheduler.config.beta_schedule == "scaled_linear"  # the base config is kept
    class_name, defining = SAMPLER_NAMES[name]
    assert type(scheduler).__name__ == class_name
    for key, value in defining.items():
        assert scheduler.config[key] == value


def test_karras_suffix_and_base_scheduler():
    karras = from_name("DPM++ 2M Karras", SD15)
    plain = from_name("DPM++ 2M", karras)  # a scheduler as base; the name's own flags win
    assert karras.config.use_karras_sigmas is True
    assert plain.config.use_karras_sigmas is False
    assert from_name("DPM++ 2M SDE", SD15).config.algorithm_type == "sde-dpmsolver++"


def test_class_names_and_case_are_accepted():
    assert type(from_name("EulerDiscreteScheduler")).__name__ == "EulerDiscreteScheduler"
    assert to_name(from_name("euler A")) == "Euler a"
    assert to_name(from_name("FlowMatchEulerDiscreteScheduler")) == "FlowMatchEulerDiscreteScheduler"


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown sampler name 'DPM fast'.*'Euler a'.*'DPM\+\+ 2M Karras'"):
        from_name("DPM fast")
    with pytest.raises(TypeError):
        from_name(3)
