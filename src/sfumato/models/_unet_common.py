"""Pieces both UNets share: per-block config expansion, timestep batching, skip bookkeeping, checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def per_block(value: Any, n: int, name: str) -> list[Any]:
    """A scalar config value repeated for each of `n` blocks, or a per-block list checked for length."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"`{name}` has {len(value)} entries but there are {n} down blocks; give one per block"
            )
        return list(value)
    return [value] * n


def batch_timesteps(timestep: Tensor | float | int, sample: Tensor) -> Tensor:
    """The timestep(s) as a 1-D tensor of length batch on the sample's device."""
    if not torch.is_tensor(timestep):
        dtype = torch.float64 if isinstance(timestep, float) else torch.int64
        timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(sample.device)
    batch = sample.shape[0]
    if timestep.ndim != 1 or timestep.shape[0] not in (1, batch):
        raise ValueError(
            f"timestep must be a number, a 0-d tensor or a 1-d tensor of length 1 or batch ({batch}); "
            f"got shape {tuple(timestep.shape)}"
        )
    return timestep.to(sample.device).expand(batch)


def check_sample(sample: Any, in_channels: int, model: str) -> None:
    if not torch.is_tensor(sample):
        raise TypeError(f"{model}: sample must be a torch.Tensor of shape (batch, channels, height, width)")
    if sample.ndim != 4:
        raise ValueError(
            f"{model}: sample must have shape (batch, channels, height, width); got {tuple(sample.shape)}"
        )
    if sample.shape[1] != in_channels:
        raise ValueError(
            f"{model}: sample has {sample.shape[1]} channels but the model was configured with "
            f"in_channels={in_channels}; pass a (batch, {in_channels}, height, width) tensor"
        )


def needs_upsample_size(sample: Tensor, num_upsamplers: int) -> bool:
    """True when height or width is not a multiple of 2**num_upsamplers (upsamplers then match skip sizes)."""
    factor = 2**num_upsamplers
    return any(d % factor != 0 for d in sample.shape[-2:])


def take_skips(skips: list[Tensor], n: int) -> tuple[Tensor, ...]:
    """Pop the last `n` skip tensors (in order) for one up block."""
    taken = tuple(skips[-n:])
    del skips[-n:]
    return taken


def reversed_list(values: Sequence[Any]) -> list[Any]:
    return list(reversed(list(values)))
