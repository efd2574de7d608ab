"""The layers of CLIP's text transformer, with transformers' parameter names (`self_attn.q_proj`, `mlp.fc1`, ...).

A pre-LayerNorm transformer with causal self-attention: token + position embeddings, then per layer
`x + attn(ln1(x))` and `x + mlp(ln2(x))`. Attention runs through `F.scaled_dot_product_attention` the
way transformers' default ("sdpa") path calls it, so results agree to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..config import FrozenConfig
from ..nn.activations import ACTIVATIONS, get_activation


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"hidden_act {name!r} is not supported by sfumato's CLIP text encoder (only "
            f"{', '.join(ACTIVATIONS)}); load transformers' CLIPTextModel and pass it as `text_encoder=`"
        )


class CLIPTextEmbeddings(nn.Module):
    """Token embedding plus learned absolute position embedding."""

    def __init__(self, vocab_size: int, hidden_size: int, max_position_embeddings: int):
        super().__init__()
        self.token_embedding = _embedding(vocab_size, hidden_size)
        self.position_embedding = _embedding(max_position_embeddings, hidden_size)
        # no `position_ids` buffer (transformers has a non-persistent one): positions are made per call

    def forward(self, input_ids: Tensor, position_ids: Tensor | None = None) -> Tensor:
        length, limit = input_ids.shape[-1], self.position_embedding.weight.shape[0]
        if length > limit:
            raise ValueError(
                f"the text encoder takes at most {limit} tokens (max_position_embeddings), got {length}"
            )
        if position_ids is None:
            position_ids = torch.arange(length, device=self.position_embedding.weight.device)[None]  # (1, L)
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)  # (B, L, D)


def _embedding(count: int, width: int) -> nn.Embedding:
    """`nn.Embedding(count, width)`, but not initialised on the meta device (loading), where the random
    init goes through a decomposition that imports torch._dynamo (~0.9 s) for a tensor without data."""
    weight = torch.empty(count, width)
    if not weight.is_meta:
        nn.init.normal_(weight)  # nn.Embedding's own init
    return nn.Embedding(count, width, _weight=weight)


def attention_mask_for_sdpa(attention_mask: Tensor | None, hidden: Tensor) -> Tensor | None:
    """SDPA's `attn_mask` for causal attention with an optional (B, L) padding mask (nonzero keeps a token).

    None means "causality only" (SDPA's `is_causal`), as transformers does when nothing is padded;
    otherwise a (B, 1, L, L) boolean keep-mask: causal and not padding. A 4D mask is used as given.
    """
    if attention_mask is None or attention_mask.ndim == 4:
        return attention_mask
    batch, length = hidden.shape[:2]
    if attention_mask.shape != (batch, length):
        raise ValueError(
            f"attention_mask must have shape (batch, tokens) = {(batch, length)}, got {tuple(attention_mask.shape)}"
        )
    keep = attention_mask.to(device=hidden.device, dtype=torch.bool)
    if bool(keep.all()):
        return None
    causal = torch.ones(length, length, dtype=torch.bool, device=hidden.device).tril()
    return causal[None, None] & keep[:, None, None, :]


class CLIPAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v projections."""

    def __init__(self, hidden_size: int, heads: int, dropout: float):
        super().__init__()
        if hidden_size % heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {heads}")
        self.heads = heads
        self.scale = (hidden_size // heads) ** -0.5
        self.dropout = dropout
        # creation order as in transformers, so state_dict() lists the keys in the same order
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, _ = x.shape
        q, k, v = (
            proj(x).view(b, n, self.heads, -1).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )  # (B, h, L, d)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and n > 1, scale=self.scale,
        )  # fmt: skip
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class CLIPMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        check_activation(hidden_act)
        self.activation_fn = get_activation(hidden_act)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: FrozenConfig):
        super().__init__()
        width = config.hidden_size
        self.self_attn = CLIPAttention(width, config.num_attention_heads, config.attention_dropout)
        self.layer_norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(width, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    """`num_hidden_layers` encoder layers (`encoder.layers.N` in checkpoints)."""

    def __init__(self, config: FrozenConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.gradient_checkpointing = False

    def forward(
        self, x: Tensor, mask: Tensor | None, keep_states: bool
    ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """(last layer's output, (embeddings, each layer's output) if `keep_states`)."""
        states = [x] if keep_states else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
            if states is not None:
                states.append(x)
        return x, tuple(states) if states is not None else None


def pool_at_eos(hidden: Tensor, input_ids: Tensor, eos_token_id: int | None) -> Tensor:
    """(B, D): each sequence's hidden state at its first end-of-text token."""
    ids = input_ids.to(dtype=torch.int, device=hidden.device)
    if eos_token_id == 2:
        # configs written before transformers' PR #24773 say 2; CLIP's real EOS is the largest id in the vocabulary
        positions = ids.argmax(dim=-1)
    else:
        positions = (ids == eos_token_id).int().argmax(dim=-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]
