"""The conditional UNet of Stable Diffusion 1.x/2.x and SDXL (`UNet2DConditionModel`).

time embedding (+ class / SDXL text-time embedding) → conv_in → down stages (skips kept) → mid
stage → up stages (skips consumed) → GroupNorm, act, conv_out. Transformer stages attend to the
text context `encoder_hidden_states`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..config import register_to_config
from ..nn.activations import get_activation
from ..nn.attention import mask_to_bias
from ..nn.block_types import DOWN_BLOCKS, MID_BLOCKS, UP_BLOCKS, BlockSpec, lookup
from ..nn.blocks import CrossAttnInputs
from ..nn.embeddings import TimestepEmbedding, Timesteps
from ..nn.transformer import Transformer2DModel
from ._unet_common import (
    batch_timesteps,
    check_sample,
    needs_upsample_size,
    per_block,
    reversed_list,
    take_skips,
)
from .base import ModelMixin
from .outputs import UNet2DConditionOutput, finish
from .unet_2d_condition_embeds import (
    build_class_embedding,
    check_embedding_options,
    embed_class,
    embed_text_time,
)

logger = logging.getLogger(__name__)
IntOrList = int | tuple[int, ...]


class UNet2DConditionModel(ModelMixin):
    """Text-conditioned UNet; constructor arguments and defaults equal diffusers' (config round-trips).

    `attention_head_dim` is, for historical reasons, the number of heads of each transformer stage
    (SD1.5: 8; SDXL: (5, 10, 20) → 64-wide heads). Options that sfumato does not implement raise
    NotImplementedError naming the option.
    """

    _supports_gradient_checkpointing = True
    # `_shared_batch`: off by default, so a plain model computes as diffusers does, bit for bit;
    # `pipe.optimize()` (and so `from_pretrained`) turns it on
    share_guidance_halves: bool = False

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        up_block_types: tuple[str, ...] = (
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: IntOrList = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        dropout: float = 0.0,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: IntOrList = 1280,
        transformer_layers_per_block: int | tuple[int, ...] | tuple[tuple[int, ...], ...] = 1,
        reverse_transformer_layers_per_block: tuple[tuple[int, ...], ...] | None = None,
        encoder_hid_dim: int | None = None,
        encoder_hid_dim_type: str | None = None,
        attention_head_dim: IntOrList = 8,
        num_attention_heads: IntOrList | None = None,
        dual_cross_attention: bool = False,
        use_linear_projection: bool = False,
        class_embed_type: str | None = None,
        addition_embed_type: str | None = None,
        addition_time_embed_dim: int | None = None,
        num_class_embeds: int | None = None,
        upcast_attention: bool | None = False,
        resnet_time_scale_shift: Literal["default", "scale_shift", "ada_group", "spatial"] = "default",
        resnet_skip_time_act: bool = False,
        resnet_out_scale_factor: float = 1.0,
        time_embedding_type: Literal["positional", "fourier"] = "positional",
        time_embedding_dim: int | None = None,
        time_embedding_act_fn: str | None = None,
        timestep_post_act: str | None = None,
        time_cond_proj_dim: int | None = None,
        conv_in_kernel: int = 3,
        conv_out_kernel: int = 3,
        projection_class_embeddings_input_dim: int | None = None,
        attention_type: str = "default",
        class_embeddings_concat: bool = False,
        mid_block_only_cross_attention: bool | None = None,
        cross_attention_norm: str | None = None,
        addition_embed_type_num_heads: int = 64,
    ):
        super().__init__()
        if num_attention_heads is not None:
            raise ValueError(
                "num_attention_heads cannot be set for UNet2DConditionModel because of a naming issue in "
                "diffusers (issue #2011): `attention_head_dim` already means the number of heads; set that instead"
            )
        check_embedding_options(self.config)
        n = len(down_block_types)
        if len(up_block_types) != n:
            raise ValueError(
                f"down_block_types ({n}) and up_block_types ({len(up_block_types)}) must be as long"
            )
        if len(block_out_channels) != n:
            raise ValueError(
                f"block_out_channels needs {n} entries (one per down block); got {len(block_out_channels)}"
            )
        for option, value in (
            ("dual_cross_attention", dual_cross_attention),
            ("attention_type", attention_type),
        ):
            if value not in (False, "default"):
                raise NotImplementedError(f"{option}={value!r} is not supported by sfumato")
        if time_embedding_type != "positional":
            raise NotImplementedError(
                f"time_embedding_type={time_embedding_type!r} is not supported by sfumato"
            )
        if resnet_time_scale_shift not in ("default", "scale_shift"):
            raise NotImplementedError(f"resnet_time_scale_shift={resnet_time_scale_shift!r} is not supported")

        self.conv_in = nn.Conv2d(
            in_channels, block_out_channels[0], conv_in_kernel, padding=(conv_in_kernel - 1) // 2
        )

        # time
        time_embed_dim = time_embedding_dim or block_out_channels[0] * 4
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(
            block_out_channels[0],
            time_embed_dim,
            act_fn,
            post_act_fn=timestep_post_act,
            cond_proj_dim=time_cond_proj_dim,
        )
        self.encoder_hid_proj = None
        if encoder_hid_dim is not None:
            # the only projection sfumato implements: "text_proj" (a Linear on the text states)
            self.encoder_hid_proj = nn.Linear(
                encoder_hid_dim, per_block(cross_attention_dim, n, "cross_attention_dim")[0]
            )
        self.class_embedding = build_class_embedding(self.config, block_out_channels[0], time_embed_dim)
        if addition_embed_type == "text_time":
            self.add_time_proj = Timesteps(addition_time_embed_dim, flip_sin_to_cos, freq_shift)
            self.add_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim)
        self.time_embed_act = (
            get_activation(time_embedding_act_fn) if time_embedding_act_fn is not None else None
        )

        self._build_stages(time_embed_dim * 2 if class_embeddings_concat else time_embed_dim)

        if norm_num_groups is not None:
            self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
            self.conv_act = get_activation(act_fn)
        else:
            self.conv_norm_out = self.conv_act = None
        self.conv_out = nn.Conv2d(
            block_out_channels[0], out_channels, conv_out_kernel, padding=(conv_out_kernel - 1) // 2
        )

    def _build_stages(self, temb_channels: int) -> None:
        c = self.config
        n = len(c.down_block_types)
        heads = per_block(c.attention_head_dim, n, "attention_head_dim")
        cross_dims = per_block(c.cross_attention_dim, n, "cross_attention_dim")
        layers = per_block(c.layers_per_block, n, "layers_per_block")
        only_cross = per_block(c.only_cross_attention, n, "only_cross_attention")
        depth = per_block(c.transformer_layers_per_block, n, "transformer_layers_per_block")
        if c.reverse_transformer_layers_per_block is not None:
            up_depth = list(c.reverse_transformer_layers_per_block)
        elif any(isinstance(d, (list, tuple)) for d in depth):
            raise ValueError(
                "reverse_transformer_layers_per_block is needed when transformer layers are given per layer"
            )
        else:
            up_depth = reversed_list(depth)

        def spec(i: int, up: bool = False) -> BlockSpec:
            pick = reversed_list if up else list
            return BlockSpec(
                temb_channels=temb_channels,
                eps=c.norm_eps,
                act_fn=c.act_fn,
                groups=c.norm_num_groups,
                dropout=c.dropout,
                time_scale_shift=c.resnet_time_scale_shift,
                downsample_padding=c.downsample_padding,
                heads=pick(heads)[i],
                transformer_layers=up_depth[i] if up else depth[i],
                cross_attention_dim=pick(cross_dims)[i],
                use_linear_projection=c.use_linear_projection,
                only_cross_attention=pick(only_cross)[i],
            )

        channels = list(c.block_out_channels)
        self.down_blocks = nn.ModuleList()
        for i, name in enumerate(c.down_block_types):
            cin = channels[max(i - 1, 0)]
            build = lookup(DOWN_BLOCKS, name, "down_block_types")
            self.down_blocks.append(build(spec(i), cin, channels[i], layers[i], i < n - 1))

        self.mid_block = None
        if c.mid_block_type is not None:
            build = lookup(MID_BLOCKS, c.mid_block_type, "mid_block_type")
            mid = spec(n - 1)
            mid.output_scale_factor = c.mid_block_scale_factor
            mid.transformer_layers = depth[-1]
            # a plain UNetMidBlock2D here is a single resnet (no attention)
            num_layers = 1 if c.mid_block_type == "UNetMidBlock2DCrossAttn" else 0
            self.mid_block = build(mid, channels[-1], num_layers)

        self.num_upsamplers = 0
        self.up_blocks = nn.ModuleList()
        rev = reversed_list(channels)
        rev_layers = reversed_list(layers)
        for i, name in enumerate(c.up_block_types):
            prev, cout, cin = rev[max(i - 1, 0)], rev[i], rev[min(i + 1, n - 1)]
            add_upsample = i < n - 1
            self.num_upsamplers += int(add_upsample)
            build = lookup(UP_BLOCKS, name, "up_block_types")
            self.up_blocks.append(build(spec(i, up=True), cin, prev, cout, rev_layers[i] + 1, add_upsample))

    # ------------------------------------------------------------------ forward

    def _check_inputs(self, sample: Tensor, encoder_hidden_states: Tensor | None) -> None:
        check_sample(sample, self.config.in_channels, type(self).__name__)
        uses_context = any(getattr(b, "has_cross_attention", False) for b in self._stages())
        if uses_context and encoder_hidden_states is None:
            raise ValueError(
                "UNet2DConditionModel needs encoder_hidden_states (the text embeddings, shape (batch, tokens, "
                f"{self.config.cross_attention_dim})) because its blocks use cross-attention"
            )
        if encoder_hidden_states is None:
            return
        c = self.config
        width = c.encoder_hid_dim if c.encoder_hid_dim is not None else c.cross_attention_dim
        if encoder_hidden_states.ndim != 3 or (
            isinstance(width, int) and encoder_hidden_states.shape[-1] != width
        ):
            raise ValueError(
                f"encoder_hidden_states must have shape (batch, tokens, {width}) for this UNet; "
                f"got {tuple(encoder_hidden_states.shape)} (is the text encoder the one the model was trained with?)"
            )

    def enable_freeu(self, s1: float, s2: float, b1: float, b2: float) -> None:
        """FreeU (`nn.freeu`): the first up stage scales half its backbone channels by `b1` and its skips'
        lowest frequencies by `s1`, the second by `b2` and `s2`. Values that work: SD1.5 s1=0.9, s2=0.2,
        b1=1.5, b2=1.6; SD2.x 0.9, 0.2, 1.4, 1.6; SDXL 0.6, 0.4, 1.1, 1.2 (the FreeU authors').

        As in diffusers, a factor of 0 turns FreeU off rather than zeroing anything.
        """
        factors = [(b1, s1), (b2, s2)]
        if not all((s1, s2, b1, b2)):
            logger.warning("enable_freeu: a factor of 0 turns FreeU off (as in diffusers); nothing is scaled")
            factors = []
        for i, stage in enumerate(self.up_blocks):
            stage.freeu = tuple(float(f) for f in factors[i]) if i < len(factors) else None

    def disable_freeu(self) -> None:
        """Undo `enable_freeu`."""
        for stage in self.up_blocks:
            stage.freeu = None

    def _stages(self) -> list[nn.Module]:
        return [*self.down_blocks, *([self.mid_block] if self.mid_block is not None else []), *self.up_blocks]

    def _embed(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        class_labels: Tensor | None,
        timestep_cond: Tensor | None,
        added_cond_kwargs: dict[str, Tensor] | None,
    ) -> Tensor:
        """The embedding every resnet reads: time (+ class) (+ SDXL text/time ids), (B, time_embed_dim)."""
        t_emb = self.time_proj(batch_timesteps(timestep, sample)).to(sample.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)
        if self.class_embedding is not None:
            class_emb = embed_class(self, class_labels, sample.dtype)
            emb = (
                torch.cat([emb, class_emb], dim=-1)
                if self.config.class_embeddings_concat
                else emb + class_emb
            )
        elif class_labels is not None:
            raise ValueError(
                "class_labels were given but the model has no class embedding (class_embed_type)"
            )
        if self.config.addition_embed_type == "text_time":
            emb = emb + embed_text_time(self, added_cond_kwargs, emb.dtype)
        return self.time_embed_act(emb) if self.time_embed_act is not None else emb

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor | None = None,
        class_labels: Tensor | None = None,
        timestep_cond: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
        down_block_additional_residuals: tuple[Tensor, ...] | None = None,
        mid_block_additional_residual: Tensor | None = None,
        down_intrablock_additional_residuals: tuple[Tensor, ...] | None = None,
        encoder_attention_mask: Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[Tensor]:
        """Predict noise (or v) for `sample` (B, C, H, W) at `timestep` given text `encoder_hidden_states`.

        Args:
            down_block_additional_residuals / mid_block_additional_residual: ControlNet residuals,
                added to the skips and to the mid-block output.
            down_intrablock_additional_residuals: T2I-Adapter features added inside the down stages.
            attention_mask / encoder_attention_mask: (B, keys) keep-masks (1 keep, 0 drop) for the
                self- / cross-attention.
        """
        self._check_inputs(sample, encoder_hidden_states)
        if cross_attention_kwargs and cross_attention_kwargs.get("gligen") is not None:
            raise NotImplementedError("GLIGEN (cross_attention_kwargs['gligen']) is not supported by sfumato")
        emb = self._embed(sample, timestep, class_labels, timestep_cond, added_cond_kwargs)
        context = encoder_hidden_states
        if self.encoder_hid_proj is not None:
            context = self.encoder_hid_proj(context)
        cross_bias = None
        if context is not None:
            cross_bias = mask_to_bias(encoder_attention_mask, sample.dtype, context.shape[1])
        cond = CrossAttnInputs(context, attention_mask, cross_bias)  # self mask converted per resolution
        controlnet = None
        if down_block_additional_residuals is not None and mid_block_additional_residual is not None:
            controlnet = (down_block_additional_residuals, mid_block_additional_residual)
        adapter = list(down_intrablock_additional_residuals or ())
        if down_block_additional_residuals is not None and mid_block_additional_residual is None:
            adapter = list(down_block_additional_residuals)  # legacy T2I-Adapter spelling

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        shared = self._shared_batch(sample, emb, cond)
        x, skips = self._down(self.conv_in(sample), emb, cond, adapter, shared)
        if controlnet is not None:
            skips = [s + r for s, r in zip(skips, controlnet[0])]
        if self.mid_block is not None:
            x = self.mid_block(x, emb, self._cond_for(self.mid_block, cond, x))
            if adapter and x.shape == adapter[0].shape:
                x = x + adapter.pop(0)
        if controlnet is not None:
            x = x + controlnet[1]
        x = self._up(x, skips, emb, cond, needs_upsample_size(sample, self.num_upsamplers))
        if self.conv_norm_out is not None:
            x = self.conv_act(self.conv_norm_out(x))
        # channels-last weights (runtime.optimize) give channels-last maps; hand back the usual layout
        return finish(UNet2DConditionOutput(sample=self.conv_out(x).contiguous()), return_dict)

    def _down(
        self,
        x: Tensor,
        emb: Tensor,
        cond: CrossAttnInputs,
        adapter: list[Tensor],
        shared: int | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Down stages; returns the output and every skip tensor (conv_in output first).

        `shared` (see `_shared_batch`): the first stage starts on the first half of the batch.
        """
        skips = [x]
        for i, block in enumerate(self.down_blocks):
            if block.has_cross_attention:
                extra = adapter.pop(0) if adapter else None
                part = shared if i == 0 else None  # the first stage may start on one half
                x = x if part is None else x[: part // 2]
                x, res = block(x, emb, self._cond_for(block, cond, x), extra, shared_batch=part)
            else:
                x, res = block(x, emb)
                if adapter:
                    x = x + adapter.pop(0)
                    res = (*res[:-1], x)  # the last skip is the block output itself
            skips.extend(res)
        return x, skips

    def _up(
        self, x: Tensor, skips: list[Tensor], emb: Tensor, cond: CrossAttnInputs, forward_size: bool
    ) -> Tensor:
        """Up stages, each consuming its skips; with odd sizes each upsampler matches the next skip's size."""
        for i, block in enumerate(self.up_blocks):
            res = take_skips(skips, len(block.resnets))
            size = tuple(skips[-1].shape[2:]) if forward_size and i < len(self.up_blocks) - 1 else None
            x = block(x, res, emb, self._cond_for(block, cond, x), upsample_size=size)
        return x

    def _shared_batch(self, sample: Tensor, emb: Tensor, cond: CrossAttnInputs) -> int | None:
        """The batch size if its two halves are equal up to the text context, else None.

        Under classifier-free guidance the negative and positive halves get the same latents and
        timestep: everything before the first cross-attention computes the same values twice
        (diffusers does). When the halves' latents and embeddings are equal, the first down stage's
        first resnet and first self-attention run on one half and the result is repeated (SD1.5 at
        512 px: the 4096-token self-attention, ~4% of a UNet call). Each sample is computed as
        before; only kernels that block by batch round differently (1e-5 of SD1.5's output). Only with
        `share_guidance_halves` (set by `pipe.optimize()`); not with autograd, attention masks,
        torch.compile, or hooks on those layers (they would see half the batch).
        """
        n = sample.shape[0]
        block = self.down_blocks[0] if len(self.down_blocks) else None
        if (
            not self.share_guidance_halves
            or n < 2
            or n % 2
            or torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or not getattr(block, "has_cross_attention", False)
            or cond.context is None
            or cond.context.shape[0] != n
            or cond.self_bias is not None
            or cond.cross_bias is not None
        ):
            return None
        first = getattr(block, "attentions", None)
        first = first[0] if first else None
        if not isinstance(first, Transformer2DModel) or not first.transformer_blocks:
            return None
        if first.transformer_blocks[0].only_cross_attention or _hooked(block.resnets[0], first):
            return None
        half = n // 2
        if not (torch.equal(sample[:half], sample[half:]) and torch.equal(emb[:half], emb[half:])):
            return None
        return n

    @staticmethod
    def _cond_for(block: nn.Module, cond: CrossAttnInputs, x: Tensor) -> CrossAttnInputs | None:
        """Attention inputs of `block` at the resolution of `x` (a self-attention mask covers its H·W tokens)."""
        if not block.has_cross_attention:
            return None
        if cond.self_bias is None:
            return cond
        bias = mask_to_bias(cond.self_bias, x.dtype, x.shape[-2] * x.shape[-1])
        return CrossAttnInputs(cond.context, bias, cond.cross_bias)


def _hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook (of these modules, their children, or global) would see their calls."""
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for top in modules for m in top.modules())
