"""Pipeline results: small dataclasses with diffusers' attribute names, and the `return_dict` helper."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch

Images = list[PIL.Image.Image] | np.ndarray | torch.Tensor


@dataclass
class BaseOutput:
    """A dataclass that also indexes like diffusers' outputs: `out[0]`, `out["images"]`, `out.to_tuple()`."""

    def to_tuple(self) -> tuple[Any, ...]:
        # diffusers drops fields that are None from the tuple form; so do we.
        return tuple(v for v in (getattr(self, f.name) for f in dataclasses.fields(self)) if v is not None)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclass
class ImagePipelineOutput(BaseOutput):
    images: Images


@dataclass
class StableDiffusionPipelineOutput(BaseOutput):
    images: Images
    nsfw_content_detected: list[bool] | None = None


def finish(output: BaseOutput, return_dict: bool) -> BaseOutput | tuple[Any, ...]:
    """The one place `return_dict=False` is handled: a plain tuple of every field, None included.

    diffusers' pipelines return `(image, has_nsfw_concept)` even when the second is None, so the
    tuple form keeps every field (unlike `to_tuple`, which mirrors `BaseOutput.to_tuple`).
    """
    if return_dict:
        return output
    return tuple(getattr(output, f.name) for f in dataclasses.fields(output))
