"""Extra embeddings of the conditional UNet: class labels and SDXL's pooled-text + size/crop ids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..nn.embeddings import TimestepEmbedding

_CLASS_TYPES = (None, "timestep", "identity", "projection", "simple_projection")
_ADDITION_TYPES = (None, "text_time")


def check_embedding_options(config: Any) -> None:
    """Validate the embedding-related config before any layer is built."""
    if config.class_embed_type not in _CLASS_TYPES:
        raise NotImplementedError(
            f"class_embed_type={config.class_embed_type!r} is not supported; use one of {_CLASS_TYPES}"
        )
    if config.addition_embed_type not in _ADDITION_TYPES:
        raise NotImplementedError(
            f"addition_embed_type={config.addition_embed_type!r} is not supported; use one of {_ADDITION_TYPES}"
        )
    if (
        config.class_embed_type in ("projection", "simple_projection")
        or config.addition_embed_type == "text_time"
    ):
        if config.projection_class_embeddings_input_dim is None:
            raise ValueError(
                f"class_embed_type={config.class_embed_type!r} / addition_embed_type={config.addition_embed_type!r} "
                "need projection_class_embeddings_input_dim (the size of the projected input)"
            )
    if config.addition_embed_type == "text_time" and config.addition_time_embed_dim is None:
        raise ValueError("addition_embed_type='text_time' needs addition_time_embed_dim (SDXL: 256)")
    hid_type = config.encoder_hid_dim_type
    if hid_type not in (None, "text_proj"):
        raise NotImplementedError(f"encoder_hid_dim_type={hid_type!r} is not supported; only 'text_proj'")
    if hid_type is not None and config.encoder_hid_dim is None:
        raise ValueError(f"encoder_hid_dim_type={hid_type!r} needs encoder_hid_dim")


def build_class_embedding(config: Any, timestep_dim: int, time_embed_dim: int) -> nn.Module | None:
    """The `class_embedding` module for `class_embed_type` / `num_class_embeds`, or None."""
    kind = config.class_embed_type
    if kind is None:
        if config.num_class_embeds is None:
            return None
        return nn.Embedding(config.num_class_embeds, time_embed_dim)
    if kind == "timestep":
        return TimestepEmbedding(timestep_dim, time_embed_dim, act_fn=config.act_fn)
    if kind == "identity":
        return nn.Identity()
    if kind == "projection":
        return TimestepEmbedding(config.projection_class_embeddings_input_dim, time_embed_dim)
    return nn.Linear(config.projection_class_embeddings_input_dim, time_embed_dim)  # simple_projection


def embed_class(model: nn.Module, class_labels: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Embedding of `class_labels` (ids, timesteps or vectors depending on `class_embed_type`)."""
    if class_labels is None:
        raise ValueError(
            "class_labels should be provided: this UNet has a class embedding "
            f"(class_embed_type={model.config.class_embed_type!r}, num_class_embeds={model.config.num_class_embeds})"
        )
    if model.config.class_embed_type == "timestep":
        class_labels = model.time_proj(class_labels).to(dtype)  # sinusoidal features are float32
    return model.class_embedding(class_labels).to(dtype)


def embed_text_time(
    model: nn.Module, added_cond_kwargs: dict[str, Tensor] | None, dtype: torch.dtype
) -> Tensor:
    """SDXL: pooled text embeddings ++ sinusoidal features of the 6 size/crop ids → `add_embedding`."""
    added = added_cond_kwargs or {}
    for key in ("text_embeds", "time_ids"):
        if added.get(key) is None:
            raise ValueError(
                "this UNet has addition_embed_type='text_time' (SDXL) and needs "
                f"added_cond_kwargs={{'text_embeds': ..., 'time_ids': ...}}; `{key}` is missing"
            )
    text_embeds, time_ids = added["text_embeds"], added["time_ids"]
    time_embeds = model.add_time_proj(time_ids.flatten()).reshape(text_embeds.shape[0], -1)
    add_embeds = torch.cat([text_embeds, time_embeds], dim=-1).to(dtype)
    expected = model.config.projection_class_embeddings_input_dim
    if add_embeds.shape[-1] != expected:
        raise ValueError(
            f"text_embeds ({text_embeds.shape[-1]}) + time_ids ({time_ids.shape[-1]} × "
            f"{model.config.addition_time_embed_dim}) give {add_embeds.shape[-1]} features; the model expects "
            f"projection_class_embeddings_input_dim={expected}"
        )
    return model.add_embedding(add_embeds)
