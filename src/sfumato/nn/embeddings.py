"""Timestep embeddings: sinusoidal features (Vaswani et al. 2017, as used by DDPM) and their MLP."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .activations import get_activation


def timestep_embedding(
    t: Tensor,
    dim: int,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1.0,
    scale: float = 1.0,
    max_period: int = 10000,
) -> Tensor:
    """Sinusoidal features of 1-D timesteps `t` (N,) → (N, dim): [sin | cos] (or [cos | sin] if flipped)."""
    if t.ndim != 1:
        raise ValueError(f"timesteps must be a 1-D tensor, got shape {tuple(t.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(exponent / (half - downscale_freq_shift))
    args = scale * (t[:, None].float() * freqs[None, :])  # (N, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class Timesteps(nn.Module):
    """Parameter-free sinusoidal projection of timesteps (config: `flip_sin_to_cos`, `freq_shift`)."""

    def __init__(
        self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float, scale: float = 1
    ):
        super().__init__()
        self.num_channels = num_channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift
        self.scale = scale

    def forward(self, t: Tensor) -> Tensor:
        return timestep_embedding(
            t, self.num_channels, self.flip_sin_to_cos, self.downscale_freq_shift, self.scale
        )


class TimestepEmbedding(nn.Module):
    """MLP on timestep features: linear_1 → act → linear_2 (optional `cond_proj` and `post_act`)."""

    def __init__(
        self,
        in_channels: int,
        time_embed_dim: int,
        act_fn: str = "silu",
        out_dim: int | None = None,
        post_act_fn: str | None = None,
        cond_proj_dim: int | None = None,
    ):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, time_embed_dim)
        # LCM-style guidance embedding added to the input features.
        self.cond_proj = (
            nn.Linear(cond_proj_dim, in_channels, bias=False) if cond_proj_dim is not None else None
        )
        self.act = get_activation(act_fn)
        self.linear_2 = nn.Linear(time_embed_dim, out_dim if out_dim is not None else time_embed_dim)
        self.post_act = get_activation(post_act_fn) if post_act_fn is not None else None

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        if condition is not None:
            if self.cond_proj is None:
                raise ValueError("timestep_cond was given but the model has no time_cond_proj_dim")
            x = x + self.cond_proj(condition)
        x = self.linear_2(self.act(self.linear_1(x)))
        return self.post_act(x) if self.post_act is not None else x
