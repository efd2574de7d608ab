"""THE denoising loop: every pipeline prepares latents and conditioning, then calls `run`.

One step: scale the input, run the model (twice the batch under classifier-free guidance, plus the
mask and masked-image latents for 9-channel inpainting UNets), guide, `scheduler.step`, blend the
known region back for 4-channel inpainting, then callbacks. The text embeddings' keys and values
are projected once for all steps (`nn.attention.reuse_context_projections`). The helpers around
it pick the timesteps (`set_timesteps`, `strength_timesteps`) and draw the starting noise
(`randn_tensor`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..nn.attention import reuse_context_projections
from ..nn.random import randn_tensor as nn_randn_tensor
from .guidance import ClassifierFreeGuidance

logger = logging.getLogger(__name__)

Generator = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class Conditioning:
    """What the model gets besides `(x, t)`; tensors are already in `[negative, positive]` order under CFG."""

    encoder_hidden_states: Tensor | None = None  # (B, L, D)
    added_cond_kwargs: dict[str, Tensor] | None = None  # SDXL: text_embeds (B, 1280), time_ids (B, 6)
    timestep_cond: Tensor | None = None  # guidance embedding of distilled (LCM) UNets
    class_labels: Tensor | None = None
    cross_attention_kwargs: dict[str, Any] | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)  # more tensors callbacks may read/replace

    def unet_kwargs(self) -> dict[str, Any]:
        names = ("encoder_hidden_states", "added_cond_kwargs", "timestep_cond", "class_labels")
        kwargs = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        if self.cross_attention_kwargs is not None:
            kwargs["cross_attention_kwargs"] = self.cross_attention_kwargs
        return kwargs


@dataclass
class Inpainting:
    """Inpainting inputs at latent resolution; `mask` is 1 where the model repaints.

    With `masked_image_latents` (9-channel UNets) the model input is `cat([x, mask, masked], 1)`;
    without it (4-channel UNets) each step's result is blended with `image_latents` noised to the
    next timestep, outside the mask.
    """

    mask: Tensor  # (B, 1, h, w)
    image_latents: Tensor | None = None  # (B, C, h, w), scaled by the VAE factor
    noise: Tensor | None = None  # (B, C, h, w), the noise used to start
    masked_image_latents: Tensor | None = None  # (B, C, h, w)

    @property
    def concat(self) -> bool:
        return self.masked_image_latents is not None


@dataclass(frozen=True)
class StepInfo:
    """What a typed `on_step` callback sees after step `step` (0-based) of `num_steps`."""

    step: int
    num_steps: int
    timestep: Tensor
    latents: Tensor
    noise_pred: Tensor


class NonFiniteLatentsError(FloatingPointError):
    """The model or scheduler produced NaN/inf values (decoding them would give a black image)."""


StepCallback = Callable[[Any, int, Tensor, dict[str, Tensor]], Mapping[str, Tensor] | None]


# --------------------------------------------------------------------------- timesteps


@functools.cache
def _parameters(function: Callable) -> tuple[frozenset[str], bool]:
    """(named parameters, accepts **kwargs) of a function; cached so each scheduler class is probed once."""
    params = inspect.signature(function).parameters.values()
    return frozenset(p.name for p in params), any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def accepted_kwargs(function: Callable, **candidates: Any) -> dict[str, Any]:
    """The `candidates` (None values dropped) that `function` accepts."""
    names, var_kw = _parameters(getattr(function, "__func__", function))
    return {k: v for k, v in candidates.items() if v is not None and (var_kw or k in names)}


def check_steps(num_inference_steps: int) -> None:
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        raise TypeError(f"`num_inference_steps` must be an int >= 1, got {num_inference_steps!r}")
    if num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}")


def set_timesteps(
    scheduler: Any,
    num_inference_steps: int | None = None,
    device: torch.device | str | None = None,
    timesteps: Sequence[int] | None = None,
    sigmas: Sequence[float] | None = None,
) -> tuple[Tensor, int]:
    """Set the scheduler's timesteps (a count, or custom `timesteps`/`sigmas`); returns (timesteps, steps)."""
    if timesteps is not None and sigmas is not None:
        raise ValueError("pass either `timesteps` or `sigmas`, not both")
    custom = (
        {"timesteps": timesteps}
        if timesteps is not None
        else {"sigmas": sigmas}
        if sigmas is not None
        else {}
    )
    if custom:
        key = next(iter(custom))
        if key not in _parameters(type(scheduler).set_timesteps)[0]:
            raise ValueError(f"{type(scheduler).__name__}.set_timesteps does not support custom `{key}`")
        scheduler.set_timesteps(device=device, **custom)
        return scheduler.timesteps, len(scheduler.timesteps)
    check_steps(num_inference_steps)
    scheduler.set_timesteps(num_inference_steps, device=device)
    return scheduler.timesteps, num_inference_steps


def _train_cutoff(scheduler: Any, fraction: float) -> int:
    """The training timestep at `fraction` of the way from pure noise to clean (SDXL's ensemble of experts)."""
    n = scheduler.config.num_train_timesteps
    return int(round(n - fraction * n))


def strength_timesteps(
    scheduler: Any,
    num_inference_steps: int,
    strength: float,
    denoising_start: float | None = None,
    *,
    required: bool = False,
) -> tuple[Tensor, int]:
    """Image-to-image: skip the first `(1 - strength)` of the schedule; returns (timesteps, steps run).

    With `denoising_start` (SDXL refiner), start where a base model with `denoising_end` stopped
    instead; `strength` is then ignored, as in diffusers. Call after `set_timesteps`. Sets the
    scheduler's begin index so index-based schedulers start there. A start that leaves no step is a
    warning (image-to-image returns the image), or a `ValueError` with `required` (inpainting).
    """
    check_strength(strength)
    if denoising_start is None:
        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = max(num_inference_steps - init_timestep, 0)
        begin, steps = t_start * scheduler.order, num_inference_steps - t_start
    else:
        steps = int((scheduler.timesteps < _train_cutoff(scheduler, denoising_start)).sum())
        if scheduler.order == 2 and steps % 2 == 0:
            steps += 1  # a second-order step must not be split between the two models
        begin = len(scheduler.timesteps) - steps
    timesteps = scheduler.timesteps[begin:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    if steps == 0:
        message = _no_steps_message(num_inference_steps, strength, denoising_start)
        if required:
            raise ValueError(message)
        logger.warning("%s", message)
    return timesteps, steps


def _no_steps_message(num_inference_steps: int, strength: float, denoising_start: float | None = None) -> str:
    """What to say when image-to-image's start point leaves no step to run, and how to fix it."""
    if denoising_start is None:
        what, fix = f"strength={strength}", "raise `strength` or `num_inference_steps`"
    else:
        what, fix = f"denoising_start={denoising_start}", "lower it or raise `num_inference_steps`"
    return f"{what} leaves no denoising step out of num_inference_steps={num_inference_steps}; {fix}"


def denoising_end_timesteps(scheduler: Any, timesteps: Tensor, denoising_end: float | None) -> Tensor:
    """SDXL base in an ensemble of experts: keep the timesteps before `denoising_end` (a fraction in (0, 1))."""
    if denoising_end is None or not 0.0 < denoising_end < 1.0:
        return timesteps
    return timesteps[: int((timesteps >= _train_cutoff(scheduler, denoising_end)).sum())]


def check_strength(strength: float) -> None:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"`strength` must be a number in [0, 1], got {strength!r}")
    if not (0.0 <= strength <= 1.0):  # also rejects NaN
        raise ValueError(f"`strength` must be in [0.0, 1.0], got {strength}")


# --------------------------------------------------------------------------- noise


def _generator_list(generator: Generator, batch: int) -> list[torch.Generator] | None:
    if generator is None or isinstance(generator, torch.Generator):
        return None
    generators = list(generator)
    if len(generators) != batch:
        raise ValueError(
            f"a list of {len(generators)} generators was passed for an effective batch size of {batch}; "
            "pass one generator, or one per image"
        )
    return generators


def randn_tensor(
    shape: Sequence[int],
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """`nn.random.randn_tensor`, after checking a list of generators against the pipeline's batch."""
    _generator_list(generator, shape[0])
    return nn_randn_tensor(
        shape,
        generator if generator is None or isinstance(generator, torch.Generator) else list(generator),
        device,
        dtype,
    )


def prepare_latents(
    shape: Sequence[int],
    scheduler: Any,
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    latents: Tensor | None = None,
) -> Tensor:
    """Starting latents: fresh noise (or the caller's `latents`, shape-checked) times `init_noise_sigma`."""
    if latents is None:
        latents = randn_tensor(shape, generator, device, dtype)
    elif tuple(latents.shape) != tuple(shape):
        raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {tuple(shape)}")
    else:
        latents = latents.to(device=device, dtype=dtype)
    return latents * scheduler.init_noise_sigma


# --------------------------------------------------------------------------- the loop


def _model_output(out: Any) -> Tensor:
    """The prediction tensor from a model returning a tensor, an output with `.sample`, or a tuple."""
    if isinstance(out, Tensor):
        return out
    return out.sample if hasattr(out, "sample") else out[0]


@dataclass
class _State:
    """Everything a callback may read or replace by diffusers' names."""

    latents: Tensor
    cond: Conditioning
    inpainting: Inpainting | None

    _FIELDS = {
        "prompt_embeds": ("cond", "encoder_hidden_states"),
        "timestep_cond": ("cond", "timestep_cond"),
        "mask": ("inpainting", "mask"),
        "masked_image_latents": ("inpainting", "masked_image_latents"),
    }
    _ADDED = {"add_text_embeds": "text_embeds", "add_time_ids": "time_ids"}

    def get(self, name: str) -> Tensor | None:
        if name == "latents":
            return self.latents
        if name in self._FIELDS:
            owner, attr = self._FIELDS[name]
            return getattr(getattr(self, owner), attr, None)
        if name in self._ADDED:
            return (self.cond.added_cond_kwargs or {}).get(self._ADDED[name])
        return self.cond.extras.get(name)

    def set(self, name: str, value: Tensor) -> None:
        if name == "latents":
            self.latents = value
        elif name in self._FIELDS:
            owner, attr = self._FIELDS[name]
            setattr(self, owner, dataclasses.replace(getattr(self, owner), **{attr: value}))
        elif name in self._ADDED:
            added = {**(self.cond.added_cond_kwargs or {}), self._ADDED[name]: value}
            self.cond = dataclasses.replace(self.cond, added_cond_kwargs=added)
        else:
            self.cond = dataclasses.replace(self.cond, extras={**self.cond.extras, name: value})


def _current_guidance(pipe: Any, guidance: ClassifierFreeGuidance) -> ClassifierFreeGuidance:
    """diffusers' CFG-cutoff callbacks set `pipe._guidance_scale`; follow such a change."""
    scale = getattr(pipe, "_guidance_scale", None) if pipe is not None else None
    if scale is None or scale == guidance.guidance_scale:
        return guidance
    return dataclasses.replace(guidance, guidance_scale=float(scale))


def _model_input(scheduler: Any, state: _State, guidance: ClassifierFreeGuidance, t: Tensor) -> Tensor:
    x = scheduler.scale_model_input(guidance.batch(state.latents), t)
    inp = state.inpainting
    if inp is not None and inp.concat:
        x = torch.cat([x, guidance.batch(inp.mask), guidance.batch(inp.masked_image_latents)], dim=1)
    return x


def _blend(scheduler: Any, latents: Tensor, inp: Inpainting, t_next: Tensor | None) -> Tensor:
    """Keep the known region: the input image's latents (noised to `t_next`) outside the mask."""
    known = inp.image_latents
    if t_next is not None:
        known = scheduler.add_noise(known, inp.noise, t_next.reshape(1))
    return (1 - inp.mask) * known + inp.mask * latents


def run(
    unet: Callable[..., Any],
    scheduler: Any,
    latents: Tensor,
    timesteps: Tensor | None = None,
    *,
    conditioning: Conditioning | None = None,
    guidance: ClassifierFreeGuidance | None = None,
    inpainting: Inpainting | None = None,
    step_kwargs: Mapping[str, Any] | None = None,
    callback_on_step_end: StepCallback | None = None,
    callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    on_step: Callable[[StepInfo], Tensor | None] | None = None,
    pipe: Any = None,
    progress_bar: bool | Mapping[str, Any] = True,
) -> Tensor:
    """Denoise `latents` over `timesteps` (default: `scheduler.timesteps`); returns the final latents.

    `step_kwargs` (e.g. `eta`, `generator`) reach `scheduler.step` only if it accepts them.
    `callback_on_step_end(pipe, i, t, tensors) -> dict` follows diffusers' signature; the dict may
    replace any of the tensors. `on_step(StepInfo)` is the typed variant; it may return new latents.
    The loop stops early when `pipe.interrupt` becomes true.
    """
    timesteps = scheduler.timesteps if timesteps is None else timesteps
    guidance = guidance or ClassifierFreeGuidance(guidance_scale=1.0)
    kwargs = accepted_kwargs(type(scheduler).step, **(step_kwargs or {}))
    state = _State(latents, conditioning or Conditioning(), inpainting)
    inputs = list(getattr(callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs))
    if callback_on_step_end is not None:
        _check_tensor_inputs(state, inputs)
    if (
        inpainting is not None
        and not inpainting.concat
        and (inpainting.image_latents is None or inpainting.noise is None)
    ):
        raise ValueError("inpainting with a 4-channel UNet needs `image_latents` and `noise` for blending")
    bar_config = {"disable": not progress_bar} if isinstance(progress_bar, bool) else dict(progress_bar)
    n = len(timesteps)
    # the text embeddings' keys and values are projected once for all steps (bit for bit the same)
    with tqdm(total=n, **bar_config) as bar, reuse_context_projections():
        for i, t in enumerate(timesteps):
            if pipe is not None and getattr(pipe, "interrupt", False):
                break
            guidance = _current_guidance(pipe, guidance)
            x_in = _model_input(scheduler, state, guidance, t)
            noise_pred = guidance(_model_output(unet(x_in, t, **state.cond.unet_kwargs())))
            state.latents = scheduler.step(noise_pred, t, state.latents, **kwargs).prev_sample
            if inpainting is not None and not inpainting.concat:
                state.latents = _blend(
                    scheduler, state.latents, state.inpainting, timesteps[i + 1] if i + 1 < n else None
                )
            if callback_on_step_end is not None:
                returned = callback_on_step_end(pipe, i, t, {k: state.get(k) for k in inputs}) or {}
                for name, value in returned.items():
                    state.set(name, value)
            if on_step is not None:
                new = on_step(StepInfo(i, n, t, state.latents, noise_pred))
                state.latents = state.latents if new is None else new
            bar.update()
    if not bool(torch.isfinite(state.latents).all()):  # one check per call: no per-step device sync
        raise NonFiniteLatentsError(
            f"the denoising loop produced NaN or infinite latents ({n} steps, {state.latents.dtype}); "
            "with float16 or bfloat16 weights, try torch_dtype=torch.float32"
        )
    return state.latents


def _check_tensor_inputs(state: _State, inputs: Sequence[str]) -> None:
    missing = [k for k in inputs if state.get(k) is None]
    if missing:
        raise ValueError(
            f"`callback_on_step_end_tensor_inputs` asks for {missing}, which this call does not have; "
            "available here: latents and the conditioning tensors that were passed"
        )
