"""`DiffusionPipeline`: a bag of components described by `model_index.json`, plus loading and saving.

A pipeline class lists its components as `__init__` parameters without defaults (plus
`_optional_components`); parameters with defaults are plain config values saved in
`model_index.json`. Each component folder is read by the component's own `from_pretrained`.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from .. import registry
from ..config import ConfigMixin, read_config_file
from ..hub import resolve_folder
from ..nn.attention import check_slice_size
from ..runtime.cpu import fast_dtype
from ..runtime.dtypes import resolve_dtype, warn_if_slow
from .denoise import accepted_kwargs
from .images import numpy_to_pil

logger = logging.getLogger(__name__)


class DiffusionPipeline(ConfigMixin):
    """Base class of sfumato pipelines (diffusers-compatible loading, saving, `.to`, `.components`)."""

    config_name: ClassVar[str] = "model_index.json"
    _optional_components: ClassVar[tuple[str, ...]] = ()
    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = ("latents",)
    model_cpu_offload_seq: ClassVar[str | None] = None

    # ------------------------------------------------------------------ components

    @classmethod
    @functools.cache
    def _signature(cls) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(component names, plain config names) from `__init__`'s signature."""
        params = [
            p
            for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        components = tuple(
            p.name for p in params if p.default is p.empty or p.name in cls._optional_components
        )
        return components, tuple(p.name for p in params if p.name not in components)

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return cls._signature()[0]

    def register_modules(self, **components: Any) -> None:
        """Set components as attributes and record `[library, ClassName]` for each in the config."""
        for name, value in components.items():
            object.__setattr__(self, name, value)
        self.register_to_config(**{n: registry.entry_for(v) for n, v in components.items()})

    def __setattr__(self, name: str, value: Any) -> None:
        # `pipe.scheduler = X` keeps model_index.json in sync (diffusers does the same).
        if name in self.component_names() and "_internal_dict" in self.__dict__:
            self.register_modules(**{name: value})
        else:
            object.__setattr__(self, name, value)

    @property
    def components(self) -> dict[str, Any]:
        """`{name: component}` for every component (None included), e.g. for `OtherPipeline(**pipe.components)`."""
        return {name: getattr(self, name, None) for name in self.component_names()}

    def _modules(self) -> list[torch.nn.Module]:
        return [c for c in self.components.values() if isinstance(c, torch.nn.Module)]

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, comp in self.components.items():
            lines.append(f"  {name}: {'None' if comp is None else type(comp).__name__}")
        _, config_names = self._signature()
        lines += [f"  {n}={self.config[n]!r}" for n in config_names if n in self.config]
        return "\n".join([*lines, ")"])

    # ------------------------------------------------------------------ device and dtype

    def to(self, *args: Any, **kwargs: Any) -> DiffusionPipeline:
        """Move every torch module: `pipe.to("cuda")`, `pipe.to(torch.float16)`, `pipe.to("cpu", torch.float32)`.

        `pipe.to("fast")` casts to the fastest dtype for the device the pipeline is on (see
        `sfumato.runtime.fast_dtype`). A dtype the CPU has no fast kernels for warns once.
        """
        if "fast" in args:
            args = tuple(fast_dtype(self.device) if a == "fast" else a for a in args)
        from ..runtime.pages import cast_in_place

        for module in self._modules():
            if not cast_in_place(module, args, kwargs):
                module.to(*args, **kwargs)
        if self._execution_device.type != "cpu":
            from ..runtime.optimize import undo_cpu_layout

            undo_cpu_layout(self)
        self.check_compute_dtype(stacklevel=3)
        return self

    def optimize(
        self,
        mode: str = "exact",
        *,
        compile: bool = False,
        packing: bool = True,
        winograd: bool = True,
        packed_cache: bool | str | os.PathLike | None = None,
    ) -> DiffusionPipeline:
        """Prepare for this machine: `"exact"` (equal to diffusers within float tolerance) or `"fast"`.

        See `sfumato.runtime.optimize`: on CPU the UNet's weights packed once for oneDNN (`packing`)
        and 3x3 convolutions on large maps through Winograd's algorithm (`winograd`); `"fast"` also
        casts to the fastest dtype (bfloat16 on CPUs with native bf16); `compile=True` compiles the UNet.
        `packed_cache=True` (or a folder, or `SFUMATO_PACKED_CACHE=1`) keeps the packed weights on disk,
        so later processes skip the packing (`sfumato.runtime.packed_cache`).
        """
        from ..runtime.optimize import optimize

        return optimize(
            self, mode, compile=compile, packing=packing, winograd=winograd, packed_cache=packed_cache
        )

    def check_compute_dtype(self, stacklevel: int = 2) -> None:
        """Warn (`SlowDtypeWarning`, once per dtype and device) if a module computes in a dtype this CPU runs slowly."""
        device = self._execution_device
        dtypes = {p.dtype for m in self._modules() for p in itertools.islice(m.parameters(), 1)}
        key = (device.type, frozenset(dtypes))
        if getattr(self, "_checked_dtypes", None) == key:
            return
        object.__setattr__(self, "_checked_dtypes", key)
        for dtype in sorted(dtypes, key=str):
            if warn_if_slow(dtype, device, stacklevel=stacklevel + 1):
                return

    @property
    def device(self) -> torch.device:
        for module in self._modules():
            return next(module.parameters(), torch.empty(0)).device
        return torch.device("cpu")

    @property
    def _execution_device(self) -> torch.device:
        return getattr(self, "_offload_device", None) or self.device

    @property
    def dtype(self) -> torch.dtype:
        for module in self._modules():
            return next(module.parameters(), torch.empty(0)).dtype
        return torch.float32

    # ------------------------------------------------------------------ call-time helpers

    @property
    def interrupt(self) -> bool:
        return getattr(self, "_interrupt", False)

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm options for the denoising progress bar, e.g. `disable=True`."""
        object.__setattr__(self, "_progress_bar_config", dict(kwargs))

    @property
    def progress_bar_config(self) -> dict[str, Any]:
        return dict(getattr(self, "_progress_bar_config", {}))

    def progress_bar(self, iterable: Any = None, total: int | None = None) -> tqdm:
        return tqdm(iterable, total=total, **self.progress_bar_config)

    @staticmethod
    def numpy_to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
        return numpy_to_pil(images)

    def maybe_free_model_hooks(self) -> None:
        """Kept for diffusers compatibility; sfumato installs no hooks that need freeing."""

    def enable_model_cpu_offload(
        self, gpu_id: int | None = None, device: torch.device | str | None = None
    ) -> None:
        """Keep each model on the CPU until it runs (needs an accelerator; a no-op with a note on CPU-only machines)."""
        target = _offload_target("enable_model_cpu_offload", gpu_id, device)
        if target is None:
            return
        from accelerate import cpu_offload_with_hook

        order = (self.model_cpu_offload_seq or "").split("->")
        modules = [getattr(self, n, None) for n in order] or self._modules()
        hook = None
        for module in (m for m in modules if isinstance(m, torch.nn.Module)):
            module.to("cpu")
            _, hook = cpu_offload_with_hook(module, target, prev_module_hook=hook)
        object.__setattr__(self, "_offload_device", target)

    def enable_sequential_cpu_offload(
        self, gpu_id: int | None = None, device: torch.device | str | None = None
    ) -> None:
        """Keep every weight on the CPU and move each layer to the accelerator only while it runs
        (accelerate's `cpu_offload`; needs an accelerator, a no-op with a note on CPU-only machines)."""
        target = _offload_target("enable_sequential_cpu_offload", gpu_id, device)
        if target is None:
            return
        from accelerate import cpu_offload

        for module in self._modules():
            module.to("cpu")
            cpu_offload(module, target, offload_buffers=len(module._parameters) > 0)
        object.__setattr__(self, "_offload_device", target)

    def remove_all_hooks(self) -> None:
        """Take off the hooks `enable_model_cpu_offload` / `enable_sequential_cpu_offload` put on."""
        if getattr(self, "_offload_device", None) is None:
            return
        from accelerate.hooks import remove_hook_from_module

        for module in self._modules():
            remove_hook_from_module(module, recurse=True)
        object.__setattr__(self, "_offload_device", None)

    @property
    def name_or_path(self) -> str | None:
        """The Hub id or folder this pipeline was loaded from (None if built in code)."""
        return self.config.get("_name_or_path")

    @property
    def hf_device_map(self) -> None:
        """Always None: sfumato places no component by a device map."""
        return None

    def reset_device_map(self) -> None:
        """Kept for diffusers compatibility: sfumato loads no component by a device map, so there is none to reset."""

    def enable_attention_slicing(self, slice_size: str | int | Sequence[int] | None = "auto") -> None:
        """Accepted for diffusers compatibility; attention already runs in bounded memory here.

        diffusers computes attention a slice of heads at a time so as not to hold a whole
        (tokens x tokens) score matrix. sfumato's attention never holds one (SDPA's flash kernel,
        or query chunks on CPU, `runtime.attention`), so slicing could only slow it down: the size
        is checked as diffusers checks its form, and the results stay the same.
        """
        self.set_attention_slice(slice_size)

    def disable_attention_slicing(self) -> None:
        """Undo `enable_attention_slicing` (nothing to undo: see there)."""
        self.set_attention_slice(None)

    def set_attention_slice(self, slice_size: str | int | Sequence[int] | None) -> None:
        """See `enable_attention_slicing`."""
        check_slice_size(slice_size)

    def enable_xformers_memory_efficient_attention(self, attention_op: Callable | None = None) -> None:
        """Accepted for diffusers compatibility: sfumato's attention is already memory-efficient
        (PyTorch's SDPA kernels, which need no xformers); `attention_op` is not used."""
        logger.info("sfumato uses PyTorch's memory-efficient attention kernels; xformers is not needed")

    def disable_xformers_memory_efficient_attention(self) -> None:
        """Kept for diffusers compatibility (see `enable_xformers_memory_efficient_attention`)."""

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        id_or_folder: str | os.PathLike,
        *,
        torch_dtype: torch.dtype | dict[str, torch.dtype] | None = None,
        dtype: torch.dtype | dict[str, torch.dtype] | None = None,
        variant: str | None = None,
        use_safetensors: bool | None = None,
        allow_pickle: bool = False,
        revision: str | None = None,
        local_files_only: bool = False,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        optimize: bool = True,
        **kwargs: Any,
    ) -> DiffusionPipeline:
        """Load a pipeline folder or Hub repo (`model_index.json` + one subfolder per component).

        Called on `DiffusionPipeline`, the class named in `_class_name` is built; called on a
        concrete class, that class is used. Keyword arguments named like a component replace it
        (`None` skips it); others are pipeline config values (`requires_safety_checker=False`).
        `torch_dtype` may be a dict per component with a `"default"` key. `optimize=True` applies
        the exact mode of `optimize()` (results equal diffusers' within float tolerance; it only
        changes anything on CPU); `optimize=False` leaves every module as loaded.
        """
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        torch_dtype, dtype = resolve_dtype(torch_dtype), resolve_dtype(dtype)
        index = read_config_file(id_or_folder, cls.config_name, **hub)
        pipeline_cls = _pipeline_class(cls, index)
        names, config_names = pipeline_cls._signature()
        kwargs = _drop_loader_options(pipeline_cls, index, names, kwargs)
        passed = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        unknown = [k for k in kwargs if k not in config_names]
        if unknown:
            raise TypeError(f"{pipeline_cls.__name__}.from_pretrained got unexpected arguments {unknown}")
        entries = _component_entries(pipeline_cls, index, names, passed)
        to_load = [n for n, e in entries.items() if n not in passed and e != [None, None]]
        select = registry.pipeline_selector(to_load, variant, use_safetensors)
        root = resolve_folder(id_or_folder, select=select, **hub)
        options = dict(variant=variant, use_safetensors=use_safetensors, allow_pickle=allow_pickle)
        loaded = {}
        # normal tensors even under inference_mode: usable outside it, and their writes counted
        with torch.inference_mode(False):
            for name in names:
                if name in passed:
                    loaded[name] = _check_passed(name, passed[name], entries.get(name))
                elif name in entries:
                    component_dtype = registry.dtype_for(name, dtype if dtype is not None else torch_dtype)
                    loaded[name] = registry.load_component(
                        root, name, entries[name], component_dtype, **options
                    )
                else:
                    loaded[name] = None  # optional component absent from model_index.json
        config = {k: index[k] for k in config_names if k in index} | kwargs
        pipe = pipeline_cls(**loaded, **config)
        pipe.register_to_config(_name_or_path=os.fspath(id_or_folder))
        pipe.check_compute_dtype(stacklevel=3)
        return pipe.optimize("exact") if optimize else pipe

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **overrides: Any) -> DiffusionPipeline:
        """A pipeline of this class sharing `pipeline`'s components (no copies); kwargs replace components/config."""
        names, config_names = cls._signature()
        components = {n: overrides.pop(n, getattr(pipeline, n, None)) for n in names}
        missing = [n for n in names if components[n] is None and n not in cls._optional_components]
        if missing:
            raise ValueError(
                f"{cls.__name__} needs components {missing}, which {type(pipeline).__name__} lacks"
            )
        config = {k: pipeline.config[k] for k in config_names if k in pipeline.config} | overrides
        return cls(**components, **config)

    # ------------------------------------------------------------------ saving

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        **_ignored: Any,
    ) -> Path:
        """Write `model_index.json` and each component into `save_directory/<name>` (readable by diffusers)."""
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"cannot save a pipeline into {folder}: it is a file, expected a folder")
        unsaveable = [
            n for n, c in self.components.items() if c is not None and not hasattr(c, "save_pretrained")
        ]
        if unsaveable:
            raise TypeError(f"cannot save components {unsaveable}: they have no save_pretrained method")
        folder.mkdir(parents=True, exist_ok=True)
        options = dict(safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size)
        for name, component in self.components.items():
            if component is not None:
                component.save_pretrained(
                    folder / name, **accepted_kwargs(component.save_pretrained, **options)
                )
        self.save_config(folder)
        return folder


# --------------------------------------------------------------------------- from_pretrained helpers


# diffusers loading options that change nothing in sfumato (loading is always lean, never ONNX)
_NO_OP_OPTIONS = {
    "low_cpu_mem_usage": None,
    "resume_download": None,
    "use_onnx": False,
    "output_loading_info": False,
}
_UNSUPPORTED_OPTIONS = ("custom_pipeline", "custom_revision", "trust_remote_code", "device_map", "provider")


def _offload_target(
    switch: str, gpu_id: int | None, device: torch.device | str | None
) -> torch.device | None:
    """The accelerator an offload switch moves layers to; None, with a note, on a CPU-only machine."""
    if device is None and not torch.cuda.is_available():
        logger.warning("%s: no GPU found, so the pipeline already runs on the CPU; nothing to do", switch)
        return None
    return torch.device(device or f"cuda:{gpu_id or 0}")


def _drop_loader_options(
    cls: type, index: dict[str, Any], names: tuple[str, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Remove diffusers loading options that are no-ops here; refuse the unsupported ones clearly."""
    kwargs = dict(kwargs)
    for key in _UNSUPPORTED_OPTIONS:
        if kwargs.pop(key, None) not in (None, False):
            raise ValueError(f"{cls.__name__}.from_pretrained: `{key}` is not supported by sfumato")
    for key, harmless in _NO_OP_OPTIONS.items():
        if kwargs.pop(key, harmless) and harmless is False:
            raise ValueError(f"{cls.__name__}.from_pretrained: `{key}=True` is not supported by sfumato")
    # `safety_checker=None` for a component the folder lists but this class does not use: nothing to do
    return {
        k: v for k, v in kwargs.items() if k in names or not (v is None and isinstance(index.get(k), list))
    }


def _pipeline_class(cls: type[DiffusionPipeline], index: dict[str, Any]) -> type[DiffusionPipeline]:
    """`cls` itself, or (called on DiffusionPipeline) the class `_class_name` names."""
    if cls is not DiffusionPipeline:
        return cls
    from .. import _lazy_lookup

    name = index.get("_class_name")
    if not isinstance(name, str):
        raise ValueError(
            f"model_index.json has `_class_name` {name!r}; custom pipeline code is not supported"
        )
    found = _lazy_lookup(name)
    if not (isinstance(found, type) and issubclass(found, DiffusionPipeline)):
        raise ValueError(
            f"model_index.json names the pipeline class {name!r}, which sfumato does not implement"
        )
    return found


def _component_entries(
    cls: type[DiffusionPipeline], index: dict[str, Any], names: tuple[str, ...], passed: dict[str, Any]
) -> dict[str, list[str | None]]:
    """`{component: [library, ClassName]}` from model_index.json, checking that required ones exist."""
    entries = {k: list(v) for k, v in index.items() if k in names and isinstance(v, (list, tuple))}
    missing = [n for n in names if n not in entries and n not in passed and n not in cls._optional_components]
    if missing:
        raise ValueError(
            f"{cls.__name__} expects components {missing}, which model_index.json does not list; "
            f"pass them as keyword arguments (e.g. `{missing[0]}=...`) or use the matching pipeline class"
        )
    extra = [k for k, v in index.items() if not k.startswith("_") and k not in names and isinstance(v, list)]
    if extra:
        logger.warning("%s ignores components %s listed in model_index.json", cls.__name__, extra)
    return entries


def _check_passed(name: str, value: Any, entry: list[str | None] | None) -> Any:
    """A component given by the caller: refuse a model of the wrong kind (e.g. a UNet as `vae`)."""
    if value is None or entry is None or registry.is_ignored(*entry) or entry == [None, None]:
        return value
    from ..models.base import ModelMixin

    try:
        expected = registry.resolve(*entry, component=name)
    except registry.UnknownComponentError:
        return value  # the caller's object replaces an entry sfumato could not load anyway
    if isinstance(value, ModelMixin) and isinstance(expected, type) and issubclass(expected, ModelMixin):
        if not isinstance(value, expected):
            raise TypeError(f"`{name}` must be a {expected.__name__}, got {type(value).__name__}")
    return value
