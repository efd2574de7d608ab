"""ModelMixin: a torch module with a frozen config that loads and saves diffusers-layout folders.

Loading builds the module on the `meta` device (no memory, no random init) and assigns the
checkpoint's tensors to it, so a model costs one copy of its weights; fp32 safetensors are not even
copied (the parameters are views of the memory-mapped file until written to).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from .. import checkpoint as ckpt
from ..config import ConfigMixin, read_config_file
from ..files import staged_folder
from ..hub import resolve_folder
from ..runtime.dtypes import resolve_dtype

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def as_dtype(torch_dtype: Any = None, dtype: Any = None) -> torch.dtype | None:
    """The dtype asked for via `torch_dtype=` or `dtype=` (strings like "float16" accepted)."""
    if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
        raise ValueError(f"torch_dtype={torch_dtype} and dtype={dtype} disagree; pass only one of them")
    value = resolve_dtype(torch_dtype if torch_dtype is not None else dtype)  # "fast" -> this machine's dtype
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in _DTYPES:
        return _DTYPES[value.removeprefix("torch.")]
    raise TypeError(
        f'torch_dtype must be a torch.dtype such as torch.float16, its name, or "fast"; got {value!r}'
    )


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … and {len(names) - limit} more" if len(names) > limit else "")


class ModelMixin(torch.nn.Module, ConfigMixin):
    """Base class of sfumato models: `from_pretrained`, `save_pretrained`, `dtype`, `device`."""

    config_name: ClassVar[str] = "config.json"
    _weights_stem: ClassVar[str] = ckpt.DIFFUSERS_STEM
    _supports_gradient_checkpointing: ClassVar[bool] = False
    _keep_in_fp32_modules: ClassVar[tuple[str, ...]] = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            internal = self.__dict__.get("_internal_dict")
            if internal is not None and name in internal:
                return internal[name]
            raise

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """`nn.Module.to`; a dtype cast on the CPU goes tensor by tensor (see `runtime.pages.cast_in_place`)."""
        from ..runtime.pages import cast_in_place

        return self if cast_in_place(self, args, kwargs) else super().to(*args, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        skip: set[int] = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, torch.nn.Embedding)}
        return sum(
            p.numel()
            for p in self.parameters()
            if (p.requires_grad or not only_trainable) and id(p) not in skip
        )

    # ------------------------------------------------------------------ diffusers' attention switches

    def set_attention_slice(self, slice_size: str | int | Sequence[int] | None = "auto") -> None:
        """Accepted for diffusers compatibility: the size is checked, and attention, which runs in
        bounded memory here, is unchanged (`DiffusionPipeline.enable_attention_slicing`)."""
        from ..nn.attention import check_slice_size

        check_slice_size(slice_size)

    def enable_xformers_memory_efficient_attention(self, attention_op: Callable | None = None) -> None:
        """Accepted for diffusers compatibility: attention already runs through PyTorch's
        memory-efficient kernels (SDPA), which need no xformers; `attention_op` is not used."""

    def disable_xformers_memory_efficient_attention(self) -> None:
        """Kept for diffusers compatibility (see `enable_xformers_memory_efficient_attention`)."""

    def set_default_attn_processor(self) -> None:
        """Kept for diffusers compatibility: sfumato's attention has no processors to reset. Its kernel
        is SDPA unless `pipe.optimize()` chose a faster one on this CPU (`runtime.attention`)."""

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by the parameters (and buffers), as diffusers and transformers count them."""
        tensors = [*self.parameters(), *(self.buffers() if return_buffers else ())]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ fused attention projections

    def fuse_qkv_projections(self) -> None:
        """Every attention's query, key and value projections as one matrix product (key and value for
        cross-attention), as diffusers' `fuse_qkv_projections` does (`nn.attention.Attention.fuse_projections`:
        a copy of those weights, not saved with the model).

        The separate weights' pages, read to make the copy, are given back where they are mapped from
        a file (`runtime.pages.drop_pages`; they come back from the file if used again): SD1.5's UNet
        grew by 0.36 GiB without that, 0.15 GiB with it.
        """
        from ..nn.attention import Attention
        from ..runtime.pages import drop_pages, file_mappings

        sources = []
        for module in self.modules():
            if isinstance(module, Attention):
                module.fuse_projections()
                sources += [p for layer in module.fused_layers() for p in layer.parameters()]
        drop_pages(sources, file_mappings())

    def unfuse_qkv_projections(self) -> None:
        """Undo `fuse_qkv_projections`."""
        from ..nn.attention import Attention

        for module in self.modules():
            if isinstance(module, Attention):
                module.unfuse_projections()

    # ------------------------------------------------------------------ training switches

    def enable_gradient_checkpointing(self) -> None:
        if not self._supports_gradient_checkpointing:
            raise ValueError(f"{type(self).__name__} does not support gradient checkpointing")
        self._set_gradient_checkpointing(True)

    def disable_gradient_checkpointing(self) -> None:
        self._set_gradient_checkpointing(False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def _set_gradient_checkpointing(self, value: bool) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = value

    # ------------------------------------------------------------------ loading

    @classmethod
    def _convert_legacy_keys(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename weights written under older names; models with legacy checkpoints override this."""
        return state_dict

    @classmethod
    def from_pretrained(
        cls,
        id_or_folder: str | os.PathLike,
        *,
        subfolder: str | None = None,
        variant: str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        dtype: torch.dtype | str | None = None,
        use_safetensors: bool | None = None,
        allow_pickle: bool = False,
        device: str | torch.device | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        ignore_mismatched_sizes: bool = False,
        low_cpu_mem_usage: bool = True,  # accepted for diffusers compatibility; loading is always lean
        **config_overrides: Any,
    ) -> ModelMixin:
        """Load a model from a folder or Hub id (`subfolder="unet"` inside a pipeline folder).

        Args:
            torch_dtype: dtype of floating weights after loading (default float32, like diffusers).
            variant: weight file variant, e.g. "fp16" for `diffusion_pytorch_model.fp16.safetensors`.
            use_safetensors: None prefers safetensors; True requires them; False loads pickle files.
            allow_pickle: pickle files (`.bin`) can run code when read; they are refused unless True.
            ignore_mismatched_sizes: re-initialise parameters whose shape differs from the checkpoint.
            config_overrides: config values that replace the stored ones.
        """
        del low_cpu_mem_usage
        target_dtype = as_dtype(torch_dtype, dtype) or torch.float32
        device = torch.device(device) if device is not None else torch.device("cpu")
        choose = dict(variant=variant, use_safetensors=use_safetensors, allow_pickle=allow_pickle)

        def select(files: Any) -> list[str]:
            prefix = (
                f"{subfolder}/" if subfolder and any(f.startswith(f"{subfolder}/") for f in files) else ""
            )
            inside = [f[len(prefix) :] for f in files if f.startswith(prefix) and "/" not in f[len(prefix) :]]
            names, index, _ = ckpt.choose_weights(
                inside, stem=cls._weights_stem, where=id_or_folder, **choose
            )
            if cls.config_name not in inside:
                raise FileNotFoundError(f"no {prefix}{cls.config_name}")
            picked = [cls.config_name, *names, *([index] if index else [])]
            # shards of an index are fetched by pattern: anything with the stem in that folder
            extra = [f"{cls._weights_stem}*.safetensors"] if index else []
            return [prefix + f for f in picked] + [prefix + e for e in extra]

        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        root = resolve_folder(id_or_folder, select=select, **hub)
        folder = cls._model_folder(root, subfolder)
        config = read_config_file(folder, cls.config_name)
        model_cls = cls._class_for(config, folder)
        weights = ckpt.find_weights(folder, stem=model_cls._weights_stem, **choose)

        # normal tensors even under inference_mode: usable outside it, and their writes counted
        with torch.inference_mode(False):
            with torch.device("meta"):
                model = model_cls.from_config(config, **config_overrides)
            state_dict = ckpt.load_state_dict(
                weights, dtype=target_dtype, device=device, keep_dtype=model_cls._keep_in_fp32_modules
            )
            model._assign_weights(
                model_cls._convert_legacy_keys(state_dict), weights, ignore_mismatched_sizes
            )
        model.register_to_config(_name_or_path=os.fspath(id_or_folder))
        return model.eval()

    @classmethod
    def _model_folder(cls, root: Path, subfolder: str | None) -> Path:
        if not subfolder or (root / subfolder / cls.config_name).is_file():
            folder = root / subfolder if subfolder else root
        elif (root / cls.config_name).is_file() and not (root / subfolder).exists():
            folder = root  # flat layout (old google/ddpm-* repos): everything at the root
        else:
            raise FileNotFoundError(f"no {cls.config_name} in {root / subfolder}")
        if not (folder / cls.config_name).is_file():
            raise FileNotFoundError(f"no {cls.config_name} in {folder}: is this a model folder?")
        return folder

    @classmethod
    def _class_for(cls, config: dict[str, Any], folder: Path) -> type[ModelMixin]:
        """The class to build: `cls`, or for `ModelMixin.from_pretrained` the class the config names."""
        from .. import _lazy_lookup

        name = config.get("_class_name")
        named = _lazy_lookup(name) if isinstance(name, str) else None
        if cls is ModelMixin:
            if not (isinstance(named, type) and issubclass(named, ModelMixin)):
                raise ValueError(
                    f"{folder / cls.config_name} names the class {name!r}, which sfumato does not have"
                )
            return named
        if isinstance(named, type) and issubclass(named, ModelMixin) and not issubclass(cls, named):
            raise ValueError(
                f"{folder / cls.config_name} describes a {name}, not a {cls.__name__}; "
                f"load it with {name}.from_pretrained"
            )
        return cls

    def _assign_weights(
        self, state_dict: dict[str, torch.Tensor], weights: ckpt.WeightFiles, ignore_mismatched_sizes: bool
    ) -> None:
        """Put checkpoint tensors into the meta-built module; report every mismatch at once."""
        expected = self.state_dict(keep_vars=True)
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict if k not in expected]
        wrong = [
            k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
        ]
        reinit = wrong if ignore_mismatched_sizes else []
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} parameters: {_short_list(missing)}")
        if unexpected:
            problems.append(f"unexpected {len(unexpected)} parameters: {_short_list(unexpected)}")
        if wrong and not ignore_mismatched_sizes:
            shapes = [
                f"{k} (checkpoint {list(state_dict[k].shape)}, model {list(expected[k].shape)})"
                for k in wrong
            ]
            problems.append(
                f"{len(wrong)} parameters with the wrong shape: {_short_list(shapes, 5)} "
                f"(pass ignore_mismatched_sizes=True to re-initialise them)"
            )
        if problems:
            raise ckpt.CheckpointError(
                f"{weights.describe()} does not fit {type(self).__name__} with this config: "
                + "; ".join(problems)
            )
        for key in reinit:
            logger.warning("re-initialising %s: checkpoint shape %s", key, list(state_dict[key].shape))
            del state_dict[key]
        self.load_state_dict(state_dict, strict=False, assign=True)
        if reinit:
            self._initialise(reinit, device=next(iter(state_dict.values())).device if state_dict else "cpu")
        left = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(
                f"{type(self).__name__} has tensors that no checkpoint entry fills: {_short_list(left)}; "
                f"models must not create non-persistent buffers with values in __init__"
            )

    def _initialise(self, names: list[str], device: torch.device | str) -> None:
        """Fresh random values for `names` (their modules' own init), keeping the other loaded tensors."""
        owners = {name.rpartition(".")[0] for name in names}
        for owner in owners:
            module = self.get_submodule(owner)
            loaded = {k: v.detach() for k, v in module.named_parameters(recurse=False) if not v.is_meta}
            dtype = next(iter(loaded.values())).dtype if loaded else torch.float32
            module.to_empty(device=device, recurse=False)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for p in module.parameters(recurse=False):
                    torch.nn.init.normal_(p, std=0.02)
            with torch.no_grad():
                for k, v in loaded.items():
                    getattr(module, k).copy_(v)
            module.to(dtype=dtype)

    # ------------------------------------------------------------------ saving

    def _checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors `save_pretrained` writes, under their file names; models with another file layout override it."""
        return self.state_dict()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        variant: str | None = None,
        max_shard_size: int | str | None = ckpt.DEFAULT_MAX_SHARD_SIZE,
        safe_serialization: bool = True,
        is_main_process: bool = True,
        **_ignored: Any,
    ) -> Path:
        """Write `config.json` and the weights; an interrupted save leaves any existing folder intact."""
        target = Path(save_directory)
        if not is_main_process:
            return target
        state_dict = self._checkpoint_state_dict()
        meta = [k for k, t in state_dict.items() if t.is_meta]
        if meta:
            raise ckpt.CheckpointError(
                f"cannot save {type(self).__name__}: parameters without data: {_short_list(meta)}"
            )
        with staged_folder(target) as staging:
            self.save_config(staging)
            written = ckpt.save_state_dict(
                state_dict,
                staging,
                stem=self._weights_stem,
                variant=variant,
                max_shard_size=max_shard_size,
                safe_serialization=safe_serialization,
            )
            stale = set(
                ckpt.weight_file_names([p.name for p in target.glob("*")], self._weights_stem, variant)
            )
        for name in stale - set(written):
            (target / name).unlink(missing_ok=True)  # e.g. old shards after saving a single file
        return target
