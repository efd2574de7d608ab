"""Finding, reading and writing weight files: safetensors (mmap), shards, variants, opt-in pickle.

File names follow diffusers: `diffusion_pytorch_model[.fp16].safetensors`, shards
`diffusion_pytorch_model[.fp16]-00001-of-00003.safetensors` with the index
`diffusion_pytorch_model.safetensors.index[.fp16].json`; transformers' `model[.fp16].safetensors`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DIFFUSERS_STEM = "diffusion_pytorch_model"
TRANSFORMERS_STEM = "model"
PICKLE_STEMS = {DIFFUSERS_STEM: DIFFUSERS_STEM, TRANSFORMERS_STEM: "pytorch_model"}
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
DEFAULT_MAX_SHARD_SIZE = "10GB"


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or does not fit the model."""


def add_variant(filename: str, variant: str | None) -> str:
    """`a.safetensors` → `a.fp16.safetensors`; `a.safetensors.index.json` → `a.safetensors.index.fp16.json`."""
    if not variant:
        return filename
    stem, ext = filename.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def _shard_pattern(stem: str, variant: str | None, suffix: str) -> re.Pattern[str]:
    v = re.escape(f".{variant}") if variant else ""
    new = rf"{re.escape(stem)}{v}-\d{{5}}-of-\d{{5}}{re.escape(suffix)}"
    legacy = rf"{re.escape(stem)}-\d{{5}}-of-\d{{5}}{v}{re.escape(suffix)}"  # older diffusers releases
    return re.compile(rf"^(?:{new}|{legacy})$" if variant else rf"^{new}$")


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of one model, relative to `folder`."""

    folder: Path
    files: tuple[str, ...]
    index: str | None = None
    is_pickle: bool = False

    @property
    def paths(self) -> list[Path]:
        return [self.folder / f for f in self.files]

    def describe(self) -> str:
        return str(self.folder / (self.index or self.files[0]))


def choose_weights(
    names: Collection[str],
    *,
    stem: str = DIFFUSERS_STEM,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    allow_pickle: bool = False,
    where: str = "the model folder",
) -> tuple[tuple[str, ...], str | None, bool]:
    """Pick (files, index, is_pickle) from a folder listing; explains what is wrong when nothing fits."""
    names = set(names)
    if use_safetensors is not False:
        found = _find(names, stem, variant, ".safetensors")
        if found:
            return (*found, False)
    pickle_found = None
    if use_safetensors is not True:
        pickle_found = _find(names, PICKLE_STEMS.get(stem, stem), variant, ".bin")
        if pickle_found and allow_pickle:
            return (*pickle_found, True)
    if pickle_found:
        raise CheckpointError(
            f"{where} only has pickle weights ({pickle_found[1] or pickle_found[0][0]}), which can run "
            f"arbitrary code when loaded. If you trust their source pass allow_pickle=True (they are then "
            f"read with torch.load(weights_only=True)), or convert them to safetensors."
        )
    expected = add_variant(f"{stem}.safetensors", variant)
    others = sorted(n for n in names if n.startswith((stem, PICKLE_STEMS.get(stem, stem))) and _is_weight(n))
    if variant and others:
        raise CheckpointError(
            f"{where} has no {variant!r} variant of the weights (looked for {expected}); it has "
            f"{', '.join(others)}. Drop variant={variant!r} to load those."
        )
    if use_safetensors and others:
        raise CheckpointError(f"{where} has no safetensors weights ({expected}), only {', '.join(others)}")
    raise CheckpointError(f"{where} has no weights: expected {expected} or a sharded index of it")


def _is_weight(name: str) -> bool:
    return name.endswith((".safetensors", *PICKLE_SUFFIXES)) or name.endswith(".index.json")


def _find(
    names: set[str], stem: str, variant: str | None, suffix: str
) -> tuple[tuple[str, ...], str | None] | None:
    single = add_variant(f"{stem}{suffix}", variant)
    if single in names:
        return (single,), None
    index_names = [add_variant(f"{stem}{suffix}.index.json", variant)]
    if variant:
        index_names.append(f"{stem}{suffix}.{variant}.index.json")  # legacy spelling
    for index in index_names:
        if index in names:
            return (), index  # shards come from the index itself
    return None


def find_weights(
    folder: str | os.PathLike,
    *,
    stem: str = DIFFUSERS_STEM,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    allow_pickle: bool = False,
) -> WeightFiles:
    """Locate the weights of one model in a local folder; a sharded index is read and checked."""
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    files, index, is_pickle = choose_weights(
        names,
        stem=stem,
        variant=variant,
        use_safetensors=use_safetensors,
        allow_pickle=allow_pickle,
        where=str(folder),
    )
    if index is not None:
        files = tuple(sorted(set(read_index(folder / index).values())))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            weight_map = read_index(folder / index)
            lost = [k for k, f in weight_map.items() if f in missing]
            raise CheckpointError(
                f"{folder / index} lists shard files that are missing: {', '.join(missing)} "
                f"(holding {len(lost)} parameters, e.g. {', '.join(lost[:3])}); download them again"
            )
    return WeightFiles(folder, files, index, is_pickle)


def read_index(path: Path) -> dict[str, str]:
    """The `weight_map` of a sharded-checkpoint index, with shard names checked to be plain file names."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid sharded-checkpoint index ({err})") from None
    for shard in set(weight_map.values()):
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise CheckpointError(
                f"{path} names an invalid shard file {shard!r}: shards must be plain file names"
            )
    return weight_map


# --------------------------------------------------------------------------- reading


def iter_tensors(
    weights: WeightFiles, *, device: str | torch.device = "cpu"
) -> Iterator[tuple[str, torch.Tensor, Path]]:
    """Yield (name, tensor, file) for every tensor; safetensors tensors are zero-copy views of an mmap."""
    for path in weights.paths:
        if weights.is_pickle:
            yield from ((k, v, path) for k, v in _load_pickle(path, device).items())
            continue
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
                    yield name, f.get_tensor(name), path
        except SafetensorError as err:
            raise CheckpointError(
                f"{path} is not a valid safetensors file ({err}); it may be truncated or corrupt: download "
                f"or save it again"
            ) from None


def _load_pickle(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    import pickle

    import torch

    try:
        data = torch.load(path, map_location=device, weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) files cannot be mmapped
        data = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, EOFError) as err:
        raise CheckpointError(f"{path} cannot be read as a weights-only pickle ({err})") from None
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(data).__name__})")
    return dict(data)


def load_state_dict(
    weights: WeightFiles,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    keep_dtype: Collection[str] = (),
) -> dict[str, torch.Tensor]:
    """Read all tensors, casting floating ones to `dtype` one at a time (names with a prefix in `keep_dtype` are not cast)."""
    from .runtime.pages import drop_pages, file_mappings

    state_dict, mappings = {}, {}
    for name, tensor, path in iter_tensors(weights, device=device):
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            if not any(name.startswith(prefix) for prefix in keep_dtype):
                original, tensor = tensor, tensor.to(dtype)
                if not weights.is_pickle:
                    # the mmapped original is not read again: without this its pages stay resident until
                    # the file is closed (SD1.5 UNet fp32 -> bf16: peak 5.0 GiB instead of 1.8)
                    if path not in mappings:
                        mappings[path] = file_mappings()
                    drop_pages([original], mappings[path])
        state_dict[name] = tensor
    return state_dict


# --------------------------------------------------------------------------- writing


def parse_size(size: int | str) -> int:
    """Bytes in `10GB` (10**9), `5GiB` (2**30), `500MB`, `100KB`, or an int."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", size.upper())
    if not match:
        raise ValueError(
            f"cannot read the size {size!r}: use an int of bytes or a string like '5GB' or '500MB'"
        )
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit or " "))


def save_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    folder: str | os.PathLike,
    *,
    stem: str = DIFFUSERS_STEM,
    variant: str | None = None,
    max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
    safe_serialization: bool = True,
) -> list[str]:
    """Write `state_dict` into `folder` (sharded above `max_shard_size`); returns the file names written."""
    import torch

    meta = [k for k, t in state_dict.items() if t.device.type == "meta"]
    if meta:
        raise CheckpointError(
            f"cannot save parameters that hold no data (meta tensors): {', '.join(meta[:5])}"
        )
    tensors = _unshared({k: t.detach() for k, t in state_dict.items()})
    folder = Path(folder)
    if not safe_serialization:
        name = add_variant(f"{PICKLE_STEMS.get(stem, stem)}.bin", variant)
        torch.save(tensors, folder / name)
        return [name]
    from safetensors.torch import save_file

    shards = _split(tensors, parse_size(max_shard_size) if max_shard_size is not None else None)
    if len(shards) == 1:
        name = add_variant(f"{stem}.safetensors", variant)
        save_file(shards[0], folder / name, metadata={"format": "pt"})
        return [name]
    written, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        name = add_variant(f"{stem}.safetensors", variant).replace(
            ".safetensors", f"-{i:05d}-of-{len(shards):05d}.safetensors"
        )
        save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        written.append(name)
    index = add_variant(f"{stem}.safetensors.index.json", variant)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    payload = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / index).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [*written, index]


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): give each its own contiguous copy."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in tensors.items():
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        t = t.contiguous()
        if key in seen and t.numel() > 0:
            t = t.clone()
        seen.add(key)
        out[name] = t
    return out


def _split(tensors: dict[str, torch.Tensor], limit: int | None) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if limit is not None and shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def weight_file_names(names: Collection[str], stem: str, variant: str | None) -> list[str]:
    """The files among `names` that belong to the (stem, variant) checkpoint: single, shards or index."""
    shard = _shard_pattern(stem, variant, ".safetensors")
    own = {
        add_variant(f"{stem}.safetensors", variant),
        add_variant(f"{stem}.safetensors.index.json", variant),
        add_variant(f"{PICKLE_STEMS.get(stem, stem)}.bin", variant),
    }
    return [n for n in names if n in own or shard.match(n)]
