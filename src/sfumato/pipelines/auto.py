"""`AutoPipelineFor{Text2Image,Image2Image,Inpainting}`: pick the pipeline class for a task from a model folder.

A model family (a row) has one pipeline class per task (a column). `from_pretrained` reads
`_class_name` from `model_index.json`, finds its row and loads that row's class for the task;
`from_pipe` does the same for a loaded pipeline and shares its components (no copies).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

from .base import DiffusionPipeline

Task = Literal["text2image", "image2image", "inpainting"]

# model family -> pipeline class name per task (diffusers' AUTO_*_PIPELINES_MAPPING rows we implement)
FAMILIES: dict[str, dict[Task, str]] = {
    "stable-diffusion": {
        "text2image": "StableDiffusionPipeline",
        "image2image": "StableDiffusionImg2ImgPipeline",
        "inpainting": "StableDiffusionInpaintPipeline",
    },
    "stable-diffusion-xl": {
        "text2image": "StableDiffusionXLPipeline",
        "image2image": "StableDiffusionXLImg2ImgPipeline",
        "inpainting": "StableDiffusionXLInpaintPipeline",
    },
}

_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


def family_of(class_name: str) -> str:
    """The model family whose row contains `class_name` (any task)."""
    for family, row in FAMILIES.items():
        if class_name in row.values():
            return family
    known = sorted(name for row in FAMILIES.values() for name in row.values())
    raise ValueError(f"AutoPipeline does not know the pipeline class {class_name!r}; it knows {known}")


def pipeline_class_for(class_name: str, task: Task) -> type[DiffusionPipeline]:
    """The pipeline class doing `task` for the model family of `class_name`."""
    from . import _names

    family = family_of(class_name)
    target = FAMILIES[family][task]
    if target not in _names.NAMES:
        raise ValueError(
            f"AutoPipeline found the {family!r} family for {class_name}, but sfumato has no {target} "
            f"({task}) yet"
        )
    import importlib

    return getattr(importlib.import_module(_names.NAMES[target]), target)


class _AutoPipeline:
    """Not instantiable: use `from_pretrained(id_or_folder)` or `from_pipe(pipeline)`."""

    task: ClassVar[Task]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{type(self).__name__} is instantiated with `{type(self).__name__}.from_pretrained(id_or_folder)` "
            f"or `{type(self).__name__}.from_pipe(pipeline)`"
        )

    @classmethod
    def from_pretrained(cls, id_or_folder: str | os.PathLike, **kwargs: Any) -> DiffusionPipeline:
        """Load the task's pipeline for the model in `id_or_folder`; kwargs go to its `from_pretrained`."""
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        index = DiffusionPipeline.load_config(id_or_folder, **hub)
        name = index.get("_class_name")
        if not isinstance(name, str):
            raise ValueError(f"model_index.json of {id_or_folder} has no usable `_class_name` ({name!r})")
        return pipeline_class_for(name, cls.task).from_pretrained(id_or_folder, **kwargs)

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs: Any) -> DiffusionPipeline:
        """The task's pipeline sharing `pipeline`'s components; kwargs replace components or config values."""
        if not isinstance(pipeline, DiffusionPipeline):
            raise TypeError(f"from_pipe takes a loaded pipeline, got {type(pipeline).__name__}")
        return pipeline_class_for(type(pipeline).__name__, cls.task).from_pipe(pipeline, **kwargs)


class AutoPipelineForText2Image(_AutoPipeline):
    """Text-to-image pipeline for a model: `AutoPipelineForText2Image.from_pretrained(id_or_folder)`."""

    task = "text2image"


class AutoPipelineForImage2Image(_AutoPipeline):
    """Image-to-image pipeline for a model: `AutoPipelineForImage2Image.from_pretrained(id_or_folder)`."""

    task = "image2image"


class AutoPipelineForInpainting(_AutoPipeline):
    """Inpainting pipeline for a model: `AutoPipelineForInpainting.from_pretrained(id_or_folder)`."""

    task = "inpainting"
