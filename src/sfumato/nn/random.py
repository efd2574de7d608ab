"""Seeded Gaussian noise drawn exactly like diffusers' `randn_tensor` (same calls → same numbers)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def randn_tensor(
    shape: Sequence[int],
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    layout: torch.layout | None = None,
) -> Tensor:
    """Standard normal noise of `shape` on `device`.

    Noise is drawn on the generator's device (a CPU generator gives the same numbers whatever the
    target device) and then moved. A list of generators draws one batch item per generator.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    layout = layout or torch.strided
    draw_device = device
    first = generator[0] if isinstance(generator, list) else generator
    if first is not None:
        gen_type = first.device.type
        if gen_type != device.type and gen_type == "cpu":
            draw_device = torch.device("cpu")
        elif gen_type != device.type and gen_type == "cuda":
            raise ValueError(f"cannot draw noise for a {device.type} tensor with a {gen_type} generator")
    if isinstance(generator, list) and len(generator) == 1:
        generator = generator[0]
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one per item")
        item_shape = (1, *shape[1:])
        parts = [
            torch.randn(item_shape, generator=g, device=draw_device, dtype=dtype, layout=layout)
            for g in generator
        ]
        return torch.cat(parts, dim=0).to(device)
    return torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype, layout=layout).to(
        device
    )
