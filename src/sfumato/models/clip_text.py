"""CLIP text encoders (`CLIPTextModel`, `CLIPTextModelWithProjection`), drop-in for transformers' classes.

Same parameter names and outputs as transformers 5's classes (`CLIPTextModel` holds `embeddings`,
`encoder` and `final_layer_norm` directly; the projection variant nests them under `text_model`), and
folders in transformers' layout (`config.json` with `architectures` and `model_type`,
`model.safetensors`). Loading imports no transformers modeling code, which saves 1.3 s per process.
Checkpoints with and without the `text_model.` prefix and with the old `position_ids` buffer load;
`save_pretrained` writes `text_model.`-prefixed keys like the Hub's checkpoints (the layout
transformers 4 expects; transformers 5 reads it too).

Escape hatch: pipelines use whatever text encoder they are given, so
`StableDiffusionPipeline.from_pretrained(path, text_encoder=transformers.CLIPTextModel.from_pretrained(
path, subfolder="text_encoder"))` runs transformers' implementation instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import checkpoint as ckpt
from ..config import register_to_config, to_json_value
from .base import ModelMixin
from .clip_text_layers import (
    CLIPEncoder,
    CLIPTextEmbeddings,
    attention_mask_for_sdpa,
    check_activation,
    pool_at_eos,
)
from .outputs import BaseModelOutputWithPooling, CLIPTextModelOutput, finish

MODEL_TYPE = "clip_text_model"
PREFIX = "text_model."


class CLIPTextModelBase(ModelMixin):
    """The config (the fields of transformers' `CLIPTextConfig`) and the file layout both encoders share."""

    _weights_stem = ckpt.TRANSFORMERS_STEM
    _supports_gradient_checkpointing = True
    # written as the library in model_index.json, so diffusers loads saved pipelines with transformers
    index_library: ClassVar[str] = "transformers"

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 49408,
        hidden_size: int = 512,
        intermediate_size: int = 2048,
        projection_dim: int | None = 512,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 8,
        max_position_embeddings: int = 77,
        hidden_act: str = "quick_gelu",
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 1.0,
        pad_token_id: int | None = 1,
        bos_token_id: int | None = 49406,
        eos_token_id: int | None = 49407,
    ):
        super().__init__()
        check_activation(hidden_act)
        self._build_layers()

    def _build_layers(self) -> None:
        """Create the submodules from `self.config`; `self.text_model` must then be the CLIPTextModel part."""
        raise NotImplementedError

    # ------------------------------------------------------------------ files

    @classmethod
    def _class_for(cls, config: dict[str, Any], folder: Path) -> type[ModelMixin]:
        model_type = config.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ValueError(
                f"{folder / cls.config_name} describes a {model_type!r} model, not a CLIP text encoder "
                f"(model_type {MODEL_TYPE!r}); load it with transformers"
            )
        return super()._class_for(config, folder)

    def to_json_string(self) -> str:
        """`config.json` as transformers writes it, so transformers loads the saved folder."""
        data = {k: v for k, v in self.config.items() if not k.startswith("_") and k != "torch_dtype"}
        data["architectures"] = [type(self).__name__]
        data["model_type"] = MODEL_TYPE
        data["dtype"] = str(self.dtype).removeprefix("torch.")
        return json.dumps(to_json_value(data), indent=2, sort_keys=True) + "\n"

    # ------------------------------------------------------------------ transformers' model API

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.embeddings.token_embedding = value

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """transformers' name for `enable_gradient_checkpointing` (the kwargs are not used)."""
        self.enable_gradient_checkpointing()

    def gradient_checkpointing_disable(self) -> None:
        self.disable_gradient_checkpointing()

    def resize_token_embeddings(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Embedding:
        """Grow or shrink the token embedding (e.g. for tokens added to the tokenizer), as transformers does.

        Kept rows are copied. New rows are drawn around the old rows' mean with 1e-9 × their covariance
        (`mean_resizing=True`; exactly the mean when that covariance is singular), or from
        N(0, initializer_range²) with `mean_resizing=False`. The Parameter object stays the same (only
        its data changes), so references and optimizers stay valid. Updates `config.vocab_size`.
        """
        embedding = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embedding
        old = embedding.weight
        count = new_num_tokens if new_num_tokens is not None else old.shape[0]
        if pad_to_multiple_of is not None:
            count = -(-count // pad_to_multiple_of) * pad_to_multiple_of
        if count != old.shape[0]:
            with torch.no_grad():
                weight = torch.empty(count, old.shape[1], dtype=old.dtype, device=old.device)
                kept = min(count, old.shape[0])
                weight[:kept] = old[:kept]
                if count > kept:
                    std = self.config.initializer_range or 0.02
                    weight[kept:] = new_token_rows(old, count - kept, mean_resizing, std)
            old.data = weight
            embedding.num_embeddings = count
            if embedding.padding_idx is not None and embedding.padding_idx >= count:
                embedding.padding_idx = None
        for model in dict.fromkeys((self, self.text_model)):
            model.register_to_config(vocab_size=count)
        return embedding


def new_token_rows(old: Tensor, count: int, mean_resizing: bool, std: float) -> Tensor:
    """`count` embedding rows for new tokens (see `resize_token_embeddings`)."""
    if not mean_resizing:
        return torch.empty(count, old.shape[1], dtype=old.dtype, device=old.device).normal_(0.0, std)
    rows = old.detach().float()
    mean = rows.mean(dim=0)
    centered = rows - mean
    # a tiny spread: new tokens start as "an average token" (transformers' choice, kept for parity)
    covariance = 1e-9 * (centered.T @ centered / rows.shape[0])
    factor, info = torch.linalg.cholesky_ex(covariance)
    if info.item() != 0:  # not positive definite (e.g. fewer tokens than dimensions)
        return mean.expand(count, -1).to(old.dtype)
    noise = torch.randn(count, mean.shape[0], device=mean.device)
    return (mean + noise @ factor.T).to(old.dtype)


class CLIPTextModel(CLIPTextModelBase):
    """CLIP's text transformer (SD 1.x/2.x `text_encoder`, SDXL's first encoder), equal to transformers'.

    Arguments are the fields of transformers' `CLIPTextConfig` (`hidden_act` "quick_gelu" or "gelu").
    `from_pretrained(folder_or_id, subfolder="text_encoder", torch_dtype=..., variant="fp16")` loads
    float32 unless told otherwise (transformers 5 would use the dtype in `config.json`).
    """

    def _build_layers(self) -> None:
        c = self.config
        self.embeddings = CLIPTextEmbeddings(c.vocab_size, c.hidden_size, c.max_position_embeddings)
        self.encoder = CLIPEncoder(c)
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    @property
    def text_model(self) -> CLIPTextModel:
        # transformers 4 nested these layers under `.text_model`; code written for it keeps working
        return self

    @classmethod
    def _convert_legacy_keys(cls, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k.removeprefix(PREFIX): v for k, v in state_dict.items() if not _is_position_ids(k)}

    def _checkpoint_state_dict(self) -> dict[str, Tensor]:
        return {PREFIX + k: v for k, v in self.state_dict().items()}

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple[Any, ...]:
        """Encode (B, L) token ids; `attention_mask` (B, L) marks real tokens (1) and padding (0).

        Returns `last_hidden_state` (B, L, D) after the final LayerNorm, `pooler_output` (B, D) at
        each sequence's end-of-text token, and with `output_hidden_states` the embeddings and each
        layer's output (before the final LayerNorm).
        """
        if input_ids is None:
            raise ValueError("input_ids are required")
        if output_attentions:
            raise ValueError(
                "sfumato's CLIPTextModel computes attention with SDPA and cannot return attention weights; "
                "use transformers' CLIPTextModel with attn_implementation='eager' for them"
            )
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        x = self.embeddings(input_ids, position_ids)
        last, states = self.encoder(x, attention_mask_for_sdpa(attention_mask, x), bool(output_hidden_states))
        last = self.final_layer_norm(last)
        pooled = pool_at_eos(last, input_ids, self.config.eos_token_id)
        return finish(BaseModelOutputWithPooling(last, pooled, states), return_dict is not False)


class CLIPTextModelWithProjection(CLIPTextModelBase):
    """CLIPTextModel plus a linear projection of the pooled output (SDXL's `text_encoder_2`), equal to transformers'.

    `out.text_embeds` (B, projection_dim) are SDXL's pooled prompt embeddings.
    """

    def _build_layers(self) -> None:
        c = self.config
        self.text_model = CLIPTextModel.from_config(c)
        self.text_projection = nn.Linear(c.hidden_size, c.projection_dim, bias=False)

    @classmethod
    def _convert_legacy_keys(cls, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        def full(key: str) -> str:
            return key if key.startswith((PREFIX, "text_projection.")) else PREFIX + key

        return {full(k): v for k, v in state_dict.items() if not _is_position_ids(k)}

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CLIPTextModelOutput | tuple[Any, ...]:
        """`text_embeds` (B, projection_dim), `last_hidden_state`, and `hidden_states` if asked; see CLIPTextModel."""
        out = self.text_model(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states, return_dict=True
        )
        text_embeds = self.text_projection(out.pooler_output)
        output = CLIPTextModelOutput(text_embeds, out.last_hidden_state, out.hidden_states)
        return finish(output, return_dict is not False)


def _is_position_ids(key: str) -> bool:
    # transformers < 4.31 saved the constant `position_ids` buffer; it holds nothing to load
    return key.endswith("embeddings.position_ids")
