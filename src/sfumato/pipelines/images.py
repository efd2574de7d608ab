"""Image and mask conversions between PIL, numpy and torch, with size checks.

Conventions (diffusers' `VaeImageProcessor`): numpy images are `(B, H, W, C)` float in [0, 1];
torch images for the VAE are `(B, C, H, W)` in [-1, 1]; masks are `(B, 1, H, W)` in {0, 1} with
1 = repaint. PIL images are resized with Lanczos, arrays and tensors with nearest-neighbour
interpolation, to a multiple of the VAE factor (rounding down), as diffusers does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)

ImageLike = Union[PIL.Image.Image, np.ndarray, Tensor, str, os.PathLike]
PipelineImageInput = Union[ImageLike, Sequence[ImageLike]]
OutputType = Literal["pil", "np", "pt", "latent"]
OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")

_RESAMPLE = {
    "nearest": PIL.Image.Resampling.NEAREST,
    "bilinear": PIL.Image.Resampling.BILINEAR,
    "bicubic": PIL.Image.Resampling.BICUBIC,
    "lanczos": PIL.Image.Resampling.LANCZOS,
}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what PIL's convert("L") uses


# --------------------------------------------------------------------------- size checks


def check_size(height: int, width: int, multiple: int = 8) -> None:
    """Raise a clear error unless `height`/`width` are positive ints divisible by `multiple`."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`{name}` must be an int, got {value!r} of type {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"`{name}` must be a positive multiple of {multiple}, got {value}")
    bad = [(n, v) for n, v in (("height", height), ("width", width)) if v % multiple]
    if bad:
        hints = ", ".join(f"{n}={v} -> {_nearest_multiples(v, multiple)}" for n, v in bad)
        raise ValueError(
            f"`height` and `width` have to be divisible by {multiple} but are {height} and {width}; "
            f"nearest valid values: {hints}"
        )


DEFAULT_MAX_PIXELS = 4096 * 4096


def check_pixels(
    height: int, width: int, max_pixels: int | None = DEFAULT_MAX_PIXELS, vae_scale_factor: int = 8
) -> None:
    """Refuse output sizes above `max_pixels` before anything is allocated (`max_pixels=None` allows any size)."""
    if max_pixels is None or height * width <= max_pixels:
        return
    tokens = (height // vae_scale_factor) * (width // vae_scale_factor)
    gigabytes = (
        tokens**2 * 2 / 1e9
    )  # one fp16 attention map at latent resolution, without memory-efficient attention
    raise ValueError(
        f"{width}x{height} is {height * width:,} pixels, above max_pixels={max_pixels:,}; its highest-resolution "
        f"self-attention has {tokens:,} tokens (a naive fp16 attention map of one head: {gigabytes:,.0f} GB). "
        "Pass a smaller size, or max_pixels=None to try anyway"
    )


def _nearest_multiples(value: int, multiple: int) -> str:
    low = max(multiple, value - value % multiple)
    return f"{low} or {low + multiple}" if low < value else str(low)


def image_size(image: PipelineImageInput) -> tuple[int, int]:
    """(height, width) of the first image of an input in any accepted form."""
    first = image[0] if isinstance(image, (list, tuple)) else image
    if isinstance(first, (str, os.PathLike)):
        first = _open(first, "image")
    if isinstance(first, PIL.Image.Image):
        return first.height, first.width
    if isinstance(first, Tensor):
        return int(first.shape[-2]), int(first.shape[-1])
    if isinstance(first, np.ndarray):
        # (H, W), (H, W, C), (B, H, W, C); a 3-dim array with a channel-like last axis is (H, W, C)
        if first.ndim == 4 or (first.ndim == 3 and first.shape[-1] in (1, 3, 4)):
            return int(first.shape[-3]), int(first.shape[-2])
        return int(first.shape[-2]), int(first.shape[-1])
    raise _format_error("image", image)


def default_size(
    image: PipelineImageInput, height: int | None, width: int | None, vae_scale_factor: int = 8
) -> tuple[int, int]:
    """Target (height, width): given values, else the image's, rounded down to the VAE factor."""
    h, w = image_size(image)
    height = h if height is None else height
    width = w if width is None else width
    return height - height % vae_scale_factor, width - width % vae_scale_factor


# --------------------------------------------------------------------------- elementary conversions


def pil_to_numpy(images: PIL.Image.Image | Sequence[PIL.Image.Image]) -> np.ndarray:
    """PIL image(s) -> (B, H, W[, C]) float32 in [0, 1]."""
    if isinstance(images, PIL.Image.Image):
        images = [images]
    return np.stack([np.asarray(im).astype(np.float32) / 255.0 for im in images], axis=0)


def numpy_to_pt(images: np.ndarray) -> Tensor:
    """(B, H, W[, C]) -> (B, C, H, W); a missing channel axis becomes C = 1."""
    if images.ndim == 3:
        images = images[..., None]
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def pt_to_numpy(images: Tensor) -> np.ndarray:
    """(B, C, H, W) -> (B, H, W, C) float32 numpy."""
    return images.detach().cpu().permute(0, 2, 3, 1).float().numpy()


def numpy_to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
    """(B, H, W, C) or (H, W, C) in [0, 1] -> list of PIL images (C = 1 gives mode "L")."""
    if images.ndim == 3:
        images = images[None, ...]
    images = (images * 255).round().astype("uint8")
    if images.shape[-1] == 1:
        return [PIL.Image.fromarray(im[..., 0], mode="L") for im in images]
    return [PIL.Image.fromarray(im) for im in images]


def normalize(images: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return 2.0 * images - 1.0


def denormalize(images: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return (images * 0.5 + 0.5).clamp(0, 1)


# --------------------------------------------------------------------------- input validation


def _format_error(name: str, value: object) -> ValueError:
    return ValueError(
        f"`{name}` must be a PIL image, a numpy array, a torch tensor, a file path, or a list of them; "
        f"got {type(value).__name__}"
    )


def _open(path: str | os.PathLike, name: str) -> PIL.Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`{name}`: no image file at {path}")
    try:
        with PIL.Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, PIL.Image.DecompressionBombError) as err:
        raise ValueError(f"`{name}`: cannot read {path} as an image ({err})") from None


def _items(image: PipelineImageInput, name: str) -> list:
    """The input as a non-empty list of one kind (PIL, numpy or torch); paths are opened."""
    if image is None:
        raise ValueError(f"`{name}` is required; pass a PIL image, numpy array, torch tensor or file path")
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise ValueError(f"`{name}` is an empty list")
    items = [_open(i, name) if isinstance(i, (str, os.PathLike)) else i for i in items]
    kinds = [
        next((k for k in (PIL.Image.Image, np.ndarray, Tensor) if isinstance(i, k)), None) for i in items
    ]
    if None in kinds:
        raise _format_error(name, items[kinds.index(None)])
    if len(set(kinds)) > 1:
        raise ValueError(f"`{name}` mixes PIL images, arrays and tensors; pass a list of one kind")
    for i in items:
        if isinstance(i, PIL.Image.Image) and (i.width == 0 or i.height == 0):
            raise ValueError(f"`{name}` is an empty image ({i.width}x{i.height})")
    return items


def _stack_arrays(items: list, name: str) -> Tensor:
    """numpy / torch items -> (B, C, H, W) float tensor, values in [0, 1] (uint8 divided by 255)."""
    if isinstance(items[0], np.ndarray):
        arrays = [i.astype(np.float32) / 255.0 if i.dtype == np.uint8 else i for i in items]
        if any(a.ndim not in (2, 3, 4) for a in arrays):
            raise ValueError(f"`{name}`: numpy arrays must be (H, W), (H, W, C) or (B, H, W, C)")
        batch = np.concatenate(arrays, 0) if arrays[0].ndim == 4 else np.stack(arrays, 0)
        return numpy_to_pt(batch.astype(np.float32, copy=False))
    if any(t.ndim not in (2, 3, 4) for t in items):
        raise ValueError(f"`{name}`: tensors must be (H, W), (C, H, W) or (B, C, H, W)")
    if items[0].ndim == 2:
        return torch.stack(items, 0)[:, None]
    return torch.cat(items, 0) if items[0].ndim == 4 else torch.stack(items, 0)


def _check_values(x: Tensor, name: str) -> None:
    if torch.isnan(x).any():
        raise ValueError(f"`{name}` contains NaN values")
    if x.numel() and x.max() > 1.5:
        raise ValueError(
            f"`{name}` has values up to {float(x.max()):.1f}; arrays and tensors must be in [0, 1] "
            "(divide 0..255 data by 255, or pass uint8 numpy arrays / PIL images)"
        )


def _to_channels(x: Tensor, channels: int, name: str) -> Tensor:
    """Drop an alpha channel, expand greyscale, or average RGB to luma so that x has `channels`."""
    c = x.shape[1]
    if c == 4 or c == 2:  # RGBA / LA: drop alpha like PIL's convert
        x, c = x[:, : c - 1], c - 1
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise ValueError(f"`{name}` has {x.shape[1]} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA)")


# --------------------------------------------------------------------------- preprocess


def preprocess_image(
    image: PipelineImageInput,
    height: int | None = None,
    width: int | None = None,
    *,
    vae_scale_factor: int = 8,
    latent_channels: int | None = 4,
    resample: str = "lanczos",
    name: str = "image",
) -> Tensor:
    """Image input -> (B, 3, H, W) float tensor in [-1, 1] for the VAE encoder.

    A torch tensor with `latent_channels` channels is taken as latents and returned unchanged
    (diffusers' rule); PIL images and arrays never are, so RGBA photos are safe. Sizes default to
    the image's, rounded down to a multiple of `vae_scale_factor` (logged when that resizes).
    """
    items = _items(image, name)
    if isinstance(items[0], Tensor) and latent_channels is not None:
        stacked = _stack_arrays(items, name)
        if stacked.shape[1] == latent_channels:
            return stacked
    height, width = _target_size(items, height, width, vae_scale_factor, name)
    if isinstance(items[0], PIL.Image.Image):
        items = [_resize_pil(i, height, width, resample) for i in items]
        items = [i if i.mode == "RGB" else i.convert("RGB") for i in items]
        x = numpy_to_pt(pil_to_numpy(items))
    else:
        x = _stack_arrays(items, name)
        _check_values(x, name)
        x = _to_channels(x, 3, name)
        x = F.interpolate(x, size=(height, width))
    if x.min() < 0:
        # diffusers still accepts tensors already in [-1, 1] (deprecated there); keep them as they are.
        logger.warning("`%s` has negative values; taking it as already normalised to [-1, 1]", name)
        return x
    return normalize(x)


def preprocess_mask(
    mask_image: PipelineImageInput,
    height: int | None = None,
    width: int | None = None,
    *,
    vae_scale_factor: int = 8,
    resample: str = "lanczos",
    name: str = "mask_image",
) -> Tensor:
    """Mask input -> (B, 1, H, W) float tensor in {0, 1} (1 = repaint), as diffusers' inpaint pipelines.

    Colour masks become greyscale (luma), then values >= 0.5 become 1 and the rest 0.
    """
    items = _items(mask_image, name)
    height, width = _target_size(items, height, width, vae_scale_factor, name)
    if isinstance(items[0], PIL.Image.Image):
        items = [_resize_pil(i, height, width, resample).convert("L") for i in items]
        m = numpy_to_pt(pil_to_numpy(items))
    else:
        if isinstance(items[0], np.ndarray):
            # (B, H, W) greyscale batches: give them a channel axis so they are not read as (H, W, C)
            items = [a[..., None] if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) else a for a in items]
        elif items[0].ndim == 3:
            items = [t[:, None] for t in items]  # 3-dim mask tensors are (B, H, W), as in diffusers
        m = _stack_arrays(items, name)
        _check_values(m, name)
        m = F.interpolate(_to_channels(m, 1, name), size=(height, width))
    return (m >= 0.5).to(m.dtype)


def check_mask_matches(image: PipelineImageInput, mask_image: PipelineImageInput) -> None:
    """Raise a ValueError when image and mask differ in size (before any resizing)."""
    (ih, iw), (mh, mw) = image_size(image), image_size(mask_image)
    if (ih, iw) != (mh, mw):
        raise ValueError(
            f"`mask_image` is {mw}x{mh} (width x height) but `image` is {iw}x{ih}; resize the mask to the "
            f"image size first, e.g. `mask_image.resize(image.size)`"
        )


def check_batch_matches(image: Tensor, mask: Tensor) -> None:
    """Raise a ValueError when preprocessed image and mask batches cannot be paired."""
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"`mask_image` has batch size {mask.shape[0]} but `image` has {image.shape[0]}")


def _target_size(
    items: list, height: int | None, width: int | None, vae_scale_factor: int, name: str
) -> tuple[int, int]:
    h, w = image_size(items[0])
    height, width = default_size(items[0], height, width, vae_scale_factor)
    if height <= 0 or width <= 0:
        raise ValueError(f"`{name}` is {w}x{h}; it must be at least {vae_scale_factor} pixels on each side")
    if (height, width) != (h, w):
        logger.info("`%s` resized from %dx%d to %dx%d (width x height)", name, w, h, width, height)
    return height, width


def _resize_pil(image: PIL.Image.Image, height: int, width: int, resample: str) -> PIL.Image.Image:
    return image.resize((width, height), resample=_RESAMPLE[resample])


# --------------------------------------------------------------------------- masks in latent space


def mask_to_latents(mask: Tensor, latent_height: int, latent_width: int) -> Tensor:
    """Pixel mask (B, 1, H, W) -> latent-resolution mask (nearest, as diffusers)."""
    return F.interpolate(mask, size=(latent_height, latent_width))


def masked_image(image: Tensor, mask: Tensor) -> Tensor:
    """The image with the region to repaint set to 0 (mid-grey in [-1, 1])."""
    return image * (mask < 0.5)


# --------------------------------------------------------------------------- postprocess


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(
            f"`output_type` must be one of {', '.join(map(repr, OUTPUT_TYPES))}; got {output_type!r}"
        )


def postprocess(
    image: Tensor, output_type: OutputType = "pil", do_denormalize: Sequence[bool] | None = None
) -> list[PIL.Image.Image] | np.ndarray | Tensor:
    """(B, C, H, W) in [-1, 1] -> PIL list / (B, H, W, C) numpy in [0, 1] / tensor in [0, 1].

    `"latent"` returns the input unchanged. `do_denormalize[i] = False` leaves image i as it is
    (diffusers uses this to keep the black image of a flagged NSFW result).
    """
    check_output_type(output_type)
    if not isinstance(image, Tensor):
        raise TypeError(f"postprocess takes a (B, C, H, W) torch tensor, got {type(image).__name__}")
    if output_type == "latent":
        return image
    if do_denormalize is None:
        image = denormalize(image)
    else:
        image = torch.stack([denormalize(x) if d else x for x, d in zip(image, do_denormalize)])
    if output_type == "pt":
        return image
    array = pt_to_numpy(image)
    return array if output_type == "np" else numpy_to_pil(array)
