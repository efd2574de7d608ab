"""The unconditional (optionally class-conditional) UNet of DDPM (Ho et al. 2020): `UNet2DModel`."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import register_to_config
from ..nn.attention import rename_legacy_attention_keys
from ..nn.block_types import DOWN_BLOCKS, MID_BLOCKS, UP_BLOCKS, BlockSpec, lookup
from ..nn.embeddings import TimestepEmbedding, Timesteps
from ._unet_common import check_sample, reversed_list, take_skips
from .base import ModelMixin
from .outputs import UNet2DOutput, finish


class UNet2DModel(ModelMixin):
    """DDPM-style UNet: resnet stages with spatial self-attention, conditioned on the timestep only
    (plus class labels with `num_class_embeds` / `class_embed_type`). Arguments equal diffusers'."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: Literal["positional", "fourier", "learned"] = "positional",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: tuple[str, ...] = (
            "DownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
        ),
        mid_block_type: str | None = "UNetMidBlock2D",
        up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels: tuple[int, ...] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: Literal["conv", "resnet"] = "conv",
        upsample_type: Literal["conv", "resnet"] = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 8,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: Literal["default", "scale_shift", "ada_group", "spatial"] = "default",
        add_attention: bool = True,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        num_train_timesteps: int | None = None,
    ):
        super().__init__()
        n = len(down_block_types)
        if len(up_block_types) != n or len(block_out_channels) != n:
            raise ValueError(
                f"down_block_types ({n}), up_block_types ({len(up_block_types)}) and block_out_channels "
                f"({len(block_out_channels)}) must have the same length"
            )
        for option, value in (("downsample_type", downsample_type), ("upsample_type", upsample_type)):
            if value != "conv":
                raise NotImplementedError(f"{option}={value!r} is not supported by sfumato (only 'conv')")
        if resnet_time_scale_shift not in ("default", "scale_shift"):
            raise NotImplementedError(f"resnet_time_scale_shift={resnet_time_scale_shift!r} is not supported")
        if time_embedding_type == "fourier":
            raise NotImplementedError("time_embedding_type='fourier' is not supported by sfumato")
        if class_embed_type not in (None, "timestep", "identity"):
            raise NotImplementedError(f"class_embed_type={class_embed_type!r} is not supported by sfumato")

        time_embed_dim = time_embedding_dim or block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self._build_embeddings(time_embed_dim)

        spec = BlockSpec(
            temb_channels=time_embed_dim,
            eps=norm_eps,
            act_fn=act_fn,
            groups=norm_num_groups,
            dropout=dropout,
            time_scale_shift=resnet_time_scale_shift,
            downsample_padding=downsample_padding,
            attention_head_dim=attention_head_dim,
        )
        channels = list(block_out_channels)
        self.down_blocks = nn.ModuleList(
            lookup(DOWN_BLOCKS, name, "down_block_types")(
                spec, channels[max(i - 1, 0)], channels[i], layers_per_block, i < n - 1
            )
            for i, name in enumerate(down_block_types)
        )
        self.mid_block = None
        if mid_block_type is not None:
            mid = replace(
                spec,
                output_scale_factor=mid_block_scale_factor,
                attn_groups=attn_norm_num_groups,
                add_attention=add_attention,
            )
            self.mid_block = lookup(MID_BLOCKS, mid_block_type, "mid_block_type")(mid, channels[-1], 1)
        rev = reversed_list(channels)
        self.up_blocks = nn.ModuleList(
            lookup(UP_BLOCKS, name, "up_block_types")(
                spec, rev[min(i + 1, n - 1)], rev[max(i - 1, 0)], rev[i], layers_per_block + 1, i < n - 1
            )
            for i, name in enumerate(up_block_types)
        )
        groups_out = norm_num_groups if norm_num_groups is not None else min(block_out_channels[0] // 4, 32)
        self.conv_norm_out = nn.GroupNorm(groups_out, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def _build_embeddings(self, time_embed_dim: int) -> None:
        """`time_proj` + `time_embedding`, and `class_embedding` when the config asks for one."""
        c = self.config
        width = c.block_out_channels[0]
        if c.time_embedding_type == "learned":
            if c.num_train_timesteps is None:
                raise ValueError("time_embedding_type='learned' needs num_train_timesteps")
            self.time_proj = nn.Embedding(c.num_train_timesteps, width)
        else:
            self.time_proj = Timesteps(width, c.flip_sin_to_cos, c.freq_shift)
        self.time_embedding = TimestepEmbedding(width, time_embed_dim)
        if c.class_embed_type is None and c.num_class_embeds is not None:
            self.class_embedding = nn.Embedding(c.num_class_embeds, time_embed_dim)
        elif c.class_embed_type == "timestep":
            self.class_embedding = TimestepEmbedding(width, time_embed_dim)
        elif c.class_embed_type == "identity":
            self.class_embedding = nn.Identity()
        else:
            self.class_embedding = None

    @classmethod
    def _convert_legacy_keys(cls, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return rename_legacy_attention_keys(state_dict)

    def _check_inputs(self, sample: Tensor, class_labels: Tensor | None) -> None:
        check_sample(sample, self.config.in_channels, type(self).__name__)
        factor = 2 ** (len(self.down_blocks) - 1)
        if any(d % factor for d in sample.shape[-2:]):
            raise ValueError(
                f"UNet2DModel: height and width must be multiples of {factor} (the model downsamples "
                f"{len(self.down_blocks) - 1} times); got {tuple(sample.shape[-2:])}"
            )
        if self.class_embedding is not None and class_labels is None:
            raise ValueError("class_labels should be provided when doing class conditioning")
        if self.class_embedding is None and class_labels is not None:
            raise ValueError(
                "class_labels were given but the model has no class embedding (num_class_embeds)"
            )

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        class_labels: Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple[Tensor]:
        """Predict the noise of `sample` (B, C, H, W) at `timestep`."""
        self._check_inputs(sample, class_labels)
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        t = timestep
        if not torch.is_tensor(t):
            t = torch.tensor([t], dtype=torch.long, device=sample.device)  # diffusers truncates python floats
        elif t.ndim == 0:
            t = t[None].to(sample.device)
        t = t.expand(sample.shape[0]) if t.shape[0] == 1 else t
        dtype = self.dtype
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        if self.class_embedding is not None:
            if self.config.class_embed_type == "timestep":
                class_labels = self.time_proj(class_labels)
            emb = emb + self.class_embedding(class_labels).to(dtype)

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, res = block(x, emb)
            skips.extend(res)
        if self.mid_block is not None:
            x = self.mid_block(x, emb)
        for block in self.up_blocks:
            x = block(x, take_skips(skips, len(block.resnets)), emb)
        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return finish(UNet2DOutput(sample=x), return_dict)
