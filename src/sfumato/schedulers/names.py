"""Sampler names used by A1111 / Forge (and in PNG "parameters" text) <-> scheduler class + config.

Mapping follows the diffusers scheduler overview table, with one documented choice: "DPM++ SDE" is
k-diffusion's stochastic singlestep solver, so it maps to `DPMSolverSinglestepScheduler` with
`algorithm_type="sde-dpmsolver++"` (the diffusers table lists the plain, deterministic singlestep
solver, which reproduces neither the noise nor the look). A "Karras" suffix sets `use_karras_sigmas=True`.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._names import NAMES

# A1111 name -> (class name, config overrides that define the sampler)
SAMPLER_NAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
    ),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ 2M SDE": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False},
    ),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ SDE": (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False},
    ),
    "DPM++ SDE Karras": (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DDIM": ("DDIMScheduler", {}),
    "DDPM": ("DDPMScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
    "LMS": ("LMSDiscreteScheduler", {"use_karras_sigmas": False}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "Heun": ("HeunDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": False}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True}),
    "LCM": ("LCMScheduler", {}),
    "DEIS": ("DEISMultistepScheduler", {"use_karras_sigmas": False}),
}
SCHEDULER_CLASSES: tuple[str, ...] = tuple(n for n in NAMES if n.endswith("Scheduler"))


def _class(name: str) -> type:
    return getattr(importlib.import_module(NAMES[name]), name)


def _resolve(name: str) -> tuple[str, dict[str, Any]]:
    if name in SAMPLER_NAMES:
        return SAMPLER_NAMES[name]
    if name in SCHEDULER_CLASSES:
        return name, {}
    folded = {k.lower(): k for k in (*SAMPLER_NAMES, *SCHEDULER_CLASSES)}
    key = folded.get(name.strip().lower())
    if key is None:
        raise ValueError(
            f"unknown sampler name {name!r}; use one of {', '.join(map(repr, SAMPLER_NAMES))} "
            f"or a scheduler class name ({', '.join(SCHEDULER_CLASSES)})"
        )
    return _resolve(key)


def from_name(name: str, base_config: Any = None, **overrides: Any) -> Any:
    """A scheduler for an A1111 sampler name (or class name), built from `base_config` (e.g. a pipeline's).

    Example: `pipe.scheduler = from_name("DPM++ 2M Karras", pipe.scheduler.config)`.
    """
    if not isinstance(name, str):
        raise TypeError(f"sampler name must be a string, got {type(name).__name__}")
    class_name, defining = _resolve(name)
    cls = _class(class_name)
    config = getattr(base_config, "config", base_config)  # a scheduler or its config
    return cls.from_config(dict(config or {}), **{**defining, **overrides})


def to_name(scheduler: Any) -> str:
    """The A1111 sampler name of a scheduler (for PNG metadata); its class name when A1111 has none."""
    class_name = type(scheduler).__name__
    config = scheduler.config
    for sampler, (cls_name, defining) in SAMPLER_NAMES.items():
        if cls_name != class_name:
            continue
        if all(config.get(k, False if k.startswith("use_") else None) == v for k, v in defining.items()):
            return sampler
    if class_name in SCHEDULER_CLASSES:
        return class_name
    raise ValueError(f"{class_name} is not a sfumato scheduler")
