"""The public scheduler API shared by every scheduler class: loading, saving, step bookkeeping, outputs."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..config import ConfigMixin, FrozenConfig, config_parameters
from ..nn.random import randn_tensor as randn  # noqa: F401 - the schedulers' noise source

# diffusers' KarrasDiffusionSchedulers: each other's `_compatibles` (config keys tolerated, from_config allowed).
KARRAS_COMPATIBLES: tuple[str, ...] = (
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler",
    "EDMEulerScheduler",
)
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


@dataclasses.dataclass
class SchedulerOutput:
    """Result of `step`: the sample at the next (less noisy) timestep."""

    prev_sample: Tensor

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclasses.dataclass
class SchedulerOutputWithX0(SchedulerOutput):
    """`step` result that also carries the model's current estimate of the clean sample."""

    pred_original_sample: Tensor | None = None


def step_output(output: SchedulerOutput, return_dict: bool) -> SchedulerOutput | tuple:
    """The one place where `return_dict=False` turns an output into diffusers' tuple form."""
    return output if return_dict else output.to_tuple()


def broadcast_to(values: Tensor, x: Tensor) -> Tensor:
    """Flatten a per-batch vector and append singleton dims until it broadcasts against x."""
    values = values.flatten()
    return values.reshape(values.shape + (1,) * (x.dim() - 1))


def check_num_steps(n: Any, num_train_timesteps: int, name: str = "num_inference_steps") -> int:
    """Validate a user-supplied step count: an int in [1, num_train_timesteps]."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {n!r} of type {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")
    if n > num_train_timesteps:
        raise ValueError(
            f"{name}={n} is larger than num_train_timesteps={num_train_timesteps}: the model was trained "
            f"on {num_train_timesteps} noise levels; use at most that many steps"
        )
    return n


def check_descending(values: Any, name: str = "timesteps") -> list:
    """Validate custom timesteps/sigmas: a non-empty strictly descending sequence."""
    values = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    if not values:
        raise ValueError(f"custom {name} must not be empty")
    bad = [i for i in range(1, len(values)) if values[i] >= values[i - 1]]
    if bad:
        i = bad[0]
        raise ValueError(
            f"custom {name} must be strictly descending; {name}[{i}]={values[i]} is not below "
            f"{name}[{i - 1}]={values[i - 1]}"
        )
    return values


class SchedulerMixin(ConfigMixin):
    """Base of every scheduler: config I/O, `from_pretrained`, `compatibles`, `__len__`."""

    config_name: ClassVar[str] = "scheduler_config.json"
    _compatibles: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES
    has_compatibles: ClassVar[bool] = True
    order: ClassVar[int] = 1

    @classmethod
    def from_pretrained(
        cls,
        id_or_folder: str | os.PathLike,
        subfolder: str | None = None,
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Load `scheduler_config.json` from a folder or Hub id; other kwargs override config values."""
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        config = cls.load_config(id_or_folder, subfolder=subfolder, **hub_kwargs)
        return cls.from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored: Any) -> None:
        """Write `scheduler_config.json` into `save_directory`."""
        self.save_config(save_directory)

    @property
    def compatibles(self) -> list[type]:
        """Scheduler classes that can be built from this scheduler's config."""
        from .. import _lazy_lookup

        found = (_lazy_lookup(name) for name in dict.fromkeys((type(self).__name__, *self._compatibles)))
        return [c for c in found if c is not None]

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @property
    def own_config(self) -> FrozenConfig:
        """Only this class's `__init__` keys: keys kept from another scheduler's config must not leak in."""
        cached = self.__dict__.get("_own_config")
        if cached is None or cached[0] is not self.config:
            values = {k: self.config[k] for k in config_parameters(type(self)) if k in self.config}
            cached = (self.config, FrozenConfig(values))
            self.__dict__["_own_config"] = cached
        return cached[1]

    def _require_timesteps(self) -> None:
        if getattr(self, "num_inference_steps", None) is None:
            raise ValueError(
                f"{type(self).__name__}.step() was called before set_timesteps(); call "
                "scheduler.set_timesteps(num_inference_steps) first"
            )


class StepIndexMixin:
    """Step bookkeeping of the sigma-indexed schedulers (`step_index`, `begin_index`)."""

    timesteps: Tensor
    _step_index: int | None = None
    _begin_index: int | None = None

    @property
    def step_index(self) -> int | None:
        """Index into `sigmas` of the current step (None until the first step)."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """First step index, set by pipelines for img2img via `set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def index_for_timestep(self, timestep: Any, schedule_timesteps: Tensor | None = None) -> int:
        """Position of `timestep` in the schedule; the second match when it repeats (order-2 schedulers)."""
        schedule = self.timesteps if schedule_timesteps is None else schedule_timesteps
        if isinstance(timestep, Tensor):
            timestep = timestep.to(schedule.device)
        matches = (schedule == timestep).nonzero()
        if len(matches) == 0:
            return self._index_not_found(timestep)
        return matches[1 if len(matches) > 1 else 0].item()

    def _index_not_found(self, timestep: Any) -> int:
        raise ValueError(
            f"timestep {timestep!r} is not in this scheduler's timesteps; pass one of scheduler.timesteps"
        )

    def _init_step_index(self, timestep: Any) -> None:
        if self._step_index is None:
            self._step_index = (
                self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index
            )

    def _reset_steps(self) -> None:
        self._step_index = None
        self._begin_index = None

    def _step_indices_for(self, timesteps: Tensor, device: torch.device) -> list[int]:
        """Indices used by add_noise: looked up, or the current/begin index once a pipeline set one."""
        if self._begin_index is None:
            schedule = self.timesteps.to(device)
            return [self.index_for_timestep(t, schedule) for t in timesteps.to(device)]
        index = self._step_index if self._step_index is not None else self._begin_index
        return [index] * timesteps.shape[0]
