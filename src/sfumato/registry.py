"""The component registry of `model_index.json`: `[library, ClassName]` <-> Python classes.

`("diffusers" | "sfumato", X)` is sfumato's class X, `("transformers", X)` transformers' class X
(imported only when needed), `[null, null]` no component. diffusers also writes the name of one of
its pipeline sub-packages as the library (`["stable_diffusion", "StableDiffusionSafetyChecker"]`);
those resolve to sfumato's class of that name when there is one. We never import a module just
because a file names it. Saving writes our classes as `"diffusers"` so diffusers can read the folder.

sfumato implements a few transformers classes itself (`TRANSFORMERS_IMPLEMENTED`: the CLIP text
encoders and tokenizer), so loading a Stable Diffusion folder does not import transformers at all
(1.3 s for its CLIP modeling code, 1.6 s for the tokenizer's import); their folders and
`model_index.json` entries stay transformers'. To use transformers' class instead, pass the loaded
object: `from_pretrained(path, text_encoder=transformers.CLIPTextModel.from_pretrained(path,
subfolder="text_encoder"))`, `tokenizer=transformers.CLIPTokenizer.from_pretrained(...)`.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OUR_LIBRARIES = ("diffusers", "sfumato")

# transformers classes renamed since the Hub files were written
TRANSFORMERS_RENAMES = {
    "CLIPFeatureExtractor": "CLIPImageProcessor",
    "DPTFeatureExtractor": "DPTImageProcessor",
}

# transformers classes that resolve to sfumato's own implementation (same weights, same outputs)
TRANSFORMERS_IMPLEMENTED = frozenset(
    {"CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "CLIPTokenizerFast"}
)

# diffusers pipeline sub-packages that appear as `library` in real model_index.json files
PIPELINE_SUBPACKAGES = frozenset(
    {
        "stable_diffusion",
        "stable_diffusion_xl",
        "stable_diffusion_2",
        "latent_diffusion",
        "deepfloyd_if",
        "controlnet",
        "paint_by_example",
        "alt_diffusion",
        "deprecated",
    }
)

# (library, ClassName) of components sfumato accepts in a folder but does not load, and why
IGNORED = {
    ("stable_diffusion", "StableDiffusionSafetyChecker"): (
        "the safety checker is not loaded: sfumato does not ship one (pass your own filter on the outputs)"
    ),
    ("stable_diffusion", "FlaxStableDiffusionSafetyChecker"): "Flax safety checkers are not loaded",
    ("deepfloyd_if", "IFSafetyChecker"): "the IF safety checker is not loaded",
    ("deepfloyd_if", "IFWatermarker"): "the IF watermarker is not loaded",
}


class UnknownComponentError(ValueError):
    """A `[library, ClassName]` entry that sfumato cannot load."""


def _ours(class_name: str) -> type | None:
    from . import _lazy_lookup

    return _lazy_lookup(class_name)


def _transformers_class(class_name: str, component: str) -> type:
    try:
        transformers = importlib.import_module("transformers")
    except ImportError as err:
        raise UnknownComponentError(
            f"component {component!r} is the transformers class {class_name}, but transformers is not "
            "installed: `pip install transformers`"
        ) from err
    name = TRANSFORMERS_RENAMES.get(class_name, class_name)
    try:
        return getattr(transformers, name)
    except AttributeError:
        raise UnknownComponentError(
            f"component {component!r}: transformers {transformers.__version__} has no class {class_name!r}"
        ) from None


def is_ignored(library: str | None, class_name: str | None) -> bool:
    return (library, class_name) in IGNORED


def resolve(library: str | None, class_name: str | None, component: str = "?") -> type | None:
    """The class for a `[library, ClassName]` entry; None for `[null, null]` and ignored components."""
    if library is None and class_name is None:
        return None
    if not isinstance(library, str) or not isinstance(class_name, str):
        raise UnknownComponentError(
            f"component {component!r} has entry {[library, class_name]!r}; expected [library, ClassName] or [null, null]"
        )
    if (library, class_name) in IGNORED:
        logger.warning(
            "component %r (%s.%s): %s", component, library, class_name, IGNORED[library, class_name]
        )
        return None
    if library == "transformers" and class_name in TRANSFORMERS_IMPLEMENTED:
        return _ours(class_name)
    if library == "transformers":
        return _transformers_class(class_name, component)
    if library in OUR_LIBRARIES or library in PIPELINE_SUBPACKAGES:
        cls = _ours(class_name)
        if cls is not None:
            return cls
        raise UnknownComponentError(
            f"component {component!r} is the {library} class {class_name!r}, which sfumato does not implement"
        )
    raise UnknownComponentError(
        f"component {component!r} comes from library {library!r} (class {class_name!r}); sfumato loads "
        "components of diffusers/sfumato and transformers only"
    )


def entry_for(obj: Any) -> list[str | None]:
    """`[library, ClassName]` to write into `model_index.json` for a component object (None -> [null, null])."""
    if obj is None:
        return [None, None]
    cls = type(obj)
    top = cls.__module__.split(".", 1)[0]
    if top in OUR_LIBRARIES:  # our versions of transformers classes say so (`index_library`)
        return [getattr(cls, "index_library", "diffusers"), cls.__name__]
    return [top, cls.__name__]


# --------------------------------------------------------------------------- loading components


def _is_transformers_model(cls: type) -> bool:
    return (
        cls.__module__.startswith("transformers")
        and isinstance(cls, type)
        and issubclass(cls, torch_module())
    )


def torch_module() -> type:
    import torch

    return torch.nn.Module


def _transformers_dtype_key() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_component(
    root: Path,
    name: str,
    entry: Sequence[str | None],
    dtype: Any = None,
    *,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    allow_pickle: bool = False,
) -> Any:
    """Load component `name` of the pipeline folder `root` with the class its entry names (None if ignored)."""
    cls = resolve(*entry, component=name)
    if cls is None:
        return None
    folder = root / name if (root / name).is_dir() else root  # flat layout: everything at the root
    if not folder.is_dir():
        raise FileNotFoundError(f"component {name!r}: no folder {root / name}")
    if cls.__module__.startswith("sfumato."):
        from .models.base import ModelMixin

        if issubclass(cls, ModelMixin):
            return cls.from_pretrained(
                root, subfolder=name, torch_dtype=dtype, variant=variant,
                use_safetensors=use_safetensors, allow_pickle=allow_pickle,
            )  # fmt: skip
        return cls.from_pretrained(root, subfolder=name if (root / name).is_dir() else None)
    if _is_transformers_model(cls):
        options = {_transformers_dtype_key(): dtype, "variant": variant, "use_safetensors": use_safetensors}
        return cls.from_pretrained(folder, **{k: v for k, v in options.items() if v is not None})
    return cls.from_pretrained(folder)  # tokenizers, image processors


def dtype_for(name: str, dtype: Any) -> Any:
    """A component's dtype from a single dtype or a per-component dict with a "default" key (float32 default)."""
    import torch

    if isinstance(dtype, dict):
        dtype = dtype.get(name, dtype.get("default"))
    return dtype or torch.float32


# --------------------------------------------------------------------------- which Hub files to fetch

_FOREIGN = (
    ".onnx",
    ".onnx_data",
    ".pb",
    ".msgpack",
    ".h5",
    ".ot",
    ".ckpt",
    ".pt",
    ".pth",
    ".xml",
    ".mlmodel",
)
_WEIGHTS = (".safetensors", ".bin")
_NOT_VARIANT = {"safetensors", "bin", "index", "json", "of"}


def _variant_of(filename: str) -> str | None:
    """ "fp16" for `model.fp16.safetensors`, `x.fp16-00001-of-00002.safetensors`, `x.safetensors.index.fp16.json`."""
    tokens = [t for t in re.split(r"[.\-]", filename)[1:] if t not in _NOT_VARIANT and not t.isdigit()]
    return tokens[0] if tokens else None


def _pick_weights(files: list[str], variant: str | None, use_safetensors: bool | None) -> list[str]:
    weights = [f for f in files if f.endswith(_WEIGHTS) or ".index." in f or f.endswith(".index.json")]
    safetensors = [f for f in weights if ".safetensors" in f]
    if safetensors and use_safetensors is not False:
        weights = safetensors
    wanted = [f for f in weights if _variant_of(f.rsplit("/", 1)[-1]) == variant]
    return wanted or [f for f in weights if _variant_of(f.rsplit("/", 1)[-1]) is None]


def pipeline_selector(
    components: Sequence[str], variant: str | None, use_safetensors: bool | None
) -> Callable[[Sequence[str]], list[str]]:
    """Hub file selection: model_index.json plus config/tokenizer files and one set of weights per component."""

    def select(files: Sequence[str]) -> list[str]:
        if "model_index.json" not in files:
            raise FileNotFoundError("no model_index.json")
        flat = not any(f.startswith(f"{c}/") for c in components for f in files)
        chosen = ["model_index.json"]
        for prefix in [""] if flat else [f"{c}/" for c in components]:
            inside = [f for f in files if f.startswith(prefix) and "/" not in f[len(prefix) :]]
            inside = [f for f in inside if not f.endswith(_FOREIGN) and "openvino" not in f]
            weights = _pick_weights(inside, variant, use_safetensors)
            others = [
                f for f in inside if f not in weights and not f.endswith(_WEIGHTS) and ".index." not in f
            ]
            chosen += others + weights
        return sorted(set(chosen))

    return select
