"""Write a trained set of components as a standard pipeline folder (`model_index.json` + subfolders).

The layout is diffusers' own, so the folder loads in sfumato's and in diffusers' `from_pretrained`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

WeightsDtype = Literal["float32", "float16"]


def save_pipeline_folder(
    folder: str | Path,
    class_name: str,
    components: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    weights_dtype: WeightsDtype = "float32",
) -> Path:
    """Save each component into `folder/<name>` and write `model_index.json` naming their classes.

    `components` values may be None (written as `[null, null]`, e.g. `safety_checker`). With
    `weights_dtype="float16"` floating weights are stored in half precision (half the size on disk;
    loaders cast back to the dtype they are asked for).
    """
    import torch

    from .. import registry
    from .._version import DIFFUSERS_FORMAT_VERSION, __version__

    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be 'float32' or 'float16', got {weights_dtype!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": class_name,
        "_diffusers_version": DIFFUSERS_FORMAT_VERSION,
        "_sfumato_version": __version__,
    }
    for name, component in components.items():
        index[name] = registry.entry_for(component)
        if component is None:
            continue
        if weights_dtype == "float16" and isinstance(component, torch.nn.Module):
            save_half(component, folder / name)
        else:
            component.save_pretrained(folder / name)
    index.update(extra or {})
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=False) + "\n")
    return folder


def save_half(module: Any, target: Path) -> None:
    """save_pretrained of a float16 copy, leaving `module` itself untouched."""
    import copy

    import torch

    half = copy.deepcopy(module).to(torch.float16)
    half.save_pretrained(target)
    # transformers records the weights' dtype in config.json and by default loads in it; float16
    # storage is only for size, so state float32 as the dtype to compute in (a CPU needs it).
    config = Path(target) / "config.json"
    data = json.loads(config.read_text())
    for key in ("dtype", "torch_dtype"):
        if data.get(key) == "float16":
            data[key] = "float32"
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
