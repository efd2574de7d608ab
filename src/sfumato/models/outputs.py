"""Output dataclasses with diffusers' attribute names (`.sample`, `.latent_dist`).

Like diffusers' outputs (ordered dicts) they can also be indexed by position or name (`out[0]`,
`out["sample"]`), iterate over their keys, and unpack with `to_tuple()`; `return_dict=False` returns
that tuple directly. Fields that are None are left out, as in diffusers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from .distributions import DiagonalGaussianDistribution


class ModelOutput:
    """Base of the output dataclasses: attribute, name and position access to the non-None fields."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v for v in (getattr(self, f.name) for f in dataclasses.fields(self)) if v is not None)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return dict(zip(self.keys(), self.to_tuple()))[key]
        return self.to_tuple()[key]

    def values(self) -> list[Any]:
        return list(self.to_tuple())

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self.keys(), self.to_tuple()))

    def __iter__(self):
        return iter(self.keys())  # like diffusers' outputs, which are ordered dicts

    def __len__(self) -> int:
        return len(self.to_tuple())


def finish(output: ModelOutput, return_dict: bool) -> ModelOutput | tuple[Any, ...]:
    """The public return value: the dataclass, or its tuple when `return_dict=False`."""
    return output if return_dict else output.to_tuple()


@dataclass
class UNet2DConditionOutput(ModelOutput):
    sample: Tensor


@dataclass
class UNet2DOutput(ModelOutput):
    sample: Tensor


@dataclass
class DecoderOutput(ModelOutput):
    sample: Tensor
    commit_loss: Tensor | None = None


@dataclass
class AutoencoderKLOutput(ModelOutput):
    latent_dist: DiagonalGaussianDistribution


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    """`CLIPTextModel`'s output, with transformers' field names."""

    last_hidden_state: Tensor  # (B, L, D), after the final LayerNorm
    pooler_output: Tensor  # (B, D), the hidden state at each sequence's end-of-text token
    hidden_states: tuple[Tensor, ...] | None = None  # embeddings, then each layer's output


@dataclass
class CLIPTextModelOutput(ModelOutput):
    """`CLIPTextModelWithProjection`'s output, with transformers' field names."""

    text_embeds: Tensor  # (B, projection_dim)
    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
