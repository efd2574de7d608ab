"""Multi-head attention (`to_q`, `to_k`, `to_v`, `to_out.0` in checkpoints) on tokens or feature maps."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

AttentionKernel = Callable[[Tensor, Tensor, Tensor], "Tensor | None"]


def multi_head_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    bias: Tensor | None = None,
    kernel: AttentionKernel | None = None,
) -> Tensor:
    """Scaled dot-product attention of (B, N, heads*d) queries on (B, M, heads*d) keys/values.

    `bias` is an additive mask broadcastable to (B, heads, N, M), e.g. (B, 1, 1, M). `kernel(q, k, v)`
    on (B, heads, N, d) tensors may compute an unmasked attention instead of SDPA (None: it does not
    apply), e.g. `runtime.attention.fast_attention`.
    """
    b = q.shape[0]
    q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
    out = kernel(q, k, v) if kernel is not None and bias is None else None
    if out is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.transpose(1, 2).reshape(b, -1, heads * out.shape[-1])  # (B, N, h*d)


def check_slice_size(slice_size: object) -> None:
    """The forms diffusers' `set_attention_slice` takes: "auto", "max", heads per slice (one int, or one
    per attention layer), or None. sfumato's attention runs in bounded memory without slicing, so
    the size is only checked (see `DiffusionPipeline.enable_attention_slicing`)."""
    sizes = slice_size if isinstance(slice_size, (list, tuple)) else [slice_size]
    if slice_size in ("auto", "max", None) or (
        sizes and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)
    ):
        return
    raise ValueError(
        f"slice_size must be 'auto', 'max', a positive int (heads per slice), a list of those per "
        f"attention layer, or None; got {slice_size!r}"
    )


def mask_to_bias(mask: Tensor | None, dtype, key_len: int) -> Tensor | None:
    """A (B, M) keep-mask or (B, 1, M) bias → a (B, 1, 1, M) additive bias (discarded keys get -10000)."""
    if mask is None:
        return None
    if mask.ndim == 2:  # keep-mask: 1 keeps, 0 discards
        mask = ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)
    if mask.ndim != 3 or mask.shape[-1] != key_len:
        raise ValueError(
            f"attention mask must have shape (batch, {key_len}) for {key_len} keys; got {tuple(mask.shape)}"
        )
    return mask.to(dtype).unsqueeze(1)


# (context, stamp, keys, values) per attention module, while `reuse_context_projections` is active
_ContextMemo = dict[nn.Module, tuple[Tensor, tuple, Tensor, Tensor]]
_context_memo: ContextVar[_ContextMemo | None] = ContextVar("sfumato_context_memo", default=None)


@contextmanager
def reuse_context_projections() -> Iterator[None]:
    """Within this block, each attention projects a given context tensor to keys and values once.

    A denoising loop passes the same text embeddings at every step, and every cross-attention
    projects them again (diffusers does): 1.6% of an SD1.5 UNet call at 256 px on 2 cores, the
    projections' weights read for 154 rows. Inside this block the keys and values are kept while the
    same tensor object comes back with the same contents (its version counter; an inference tensor,
    which has none, by identity alone) and the projections' parameters are unchanged. They are the
    same computation on the same inputs, so the results are bit for bit those of recomputing.
    Nothing is kept while autograd records, or under torch.compile; everything kept goes when the
    block ends.
    """
    token = _context_memo.set({})
    try:
        yield
    finally:
        _context_memo.reset(token)


def _version_stamp(module: nn.Module, context: Tensor) -> tuple:
    """What must be unchanged for kept keys and values to hold: the context's version and the weights'."""
    return (None if context.is_inference() else context._version, _identities([module.to_k, module.to_v]))


def _identities(layers: list[nn.Linear]) -> tuple:
    """Which parameters the layers hold, with their write counts (None for inference tensors)."""
    return tuple(
        (id(p), None if p.is_inference() else p._version) for layer in layers for p in layer.parameters()
    )


class Attention(nn.Module):
    """Attention of `query_dim` tokens on themselves or on `cross_attention_dim` context tokens.

    The spatial form used by DDPM UNets and VAEs (`norm_num_groups` set, `residual_connection=True`)
    takes (B, C, H, W) maps: GroupNorm, attention over the H·W positions, then `+ x` and
    `/ rescale_output_factor`. `kernel` (None: SDPA) is the attention computation, set by
    `runtime.attention.use_cpu_attention` (`pipe.optimize()`).
    """

    kernel: AttentionKernel | None = None

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        out_bias: bool = True,
        norm_num_groups: int | None = None,
        eps: float = 1e-5,
        residual_connection: bool = False,
        rescale_output_factor: float = 1.0,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.is_cross_attention = cross_attention_dim is not None
        self.residual_connection = residual_connection
        self.rescale_output_factor = rescale_output_factor
        self.group_norm = None
        if norm_num_groups is not None:
            self.group_norm = nn.GroupNorm(norm_num_groups, query_dim, eps=eps)
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def forward(self, x: Tensor, context: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """x: (B, N, C) tokens or (B, C, H, W) maps; context: (B, M, C') or None for self-attention."""
        residual = x
        spatial = x.ndim == 4
        if spatial:
            b, c, height, width = x.shape
            x = x.reshape(b, c, height * width)  # normed as (B, C, HW), like diffusers (same float sums)
            if self.group_norm is not None:
                x = self.group_norm(x)
            x = x.transpose(1, 2)  # (B, HW, C)
        fused = self._fused_projection(context is None)
        if fused is not None and context is None:  # self-attention: query, key and value in one product
            queries, keys, values = F.linear(x, *fused).chunk(3, dim=-1)
        else:
            queries = self.to_q(x)
            keys, values = self._project_context(
                x if context is None else context, context is not None, fused
            )
        h = multi_head_attention(queries, keys, values, self.heads, bias, self.kernel)
        h = self.to_out[1](self.to_out[0](h))
        if spatial:
            h = h.transpose(1, 2).reshape(b, c, height, width)
        if self.residual_connection:
            h = h + residual
        return h / self.rescale_output_factor if self.rescale_output_factor != 1 else h

    def _project_context(
        self, context: Tensor, reusable: bool, fused: tuple[Tensor, Tensor | None] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Keys and values of `context` (through the fused key-value weight if given); a context given
        apart from `x` may reuse kept ones (`reuse_context_projections`)."""
        memo = _context_memo.get() if reusable else None
        if memo is None or torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._keys_values(context, fused)
        stamp = _version_stamp(self, context)
        kept = memo.get(self)
        if kept is not None and kept[0] is context and kept[1] == stamp:
            return kept[2], kept[3]
        keys, values = self._keys_values(context, fused)
        memo[self] = (context, stamp, keys, values)
        return keys, values

    def _keys_values(
        self, context: Tensor, fused: tuple[Tensor, Tensor | None] | None
    ) -> tuple[Tensor, Tensor]:
        if fused is None:
            return self.to_k(context), self.to_v(context)
        keys, values = F.linear(context, *fused).chunk(2, dim=-1)
        return keys, values

    # ------------------------------------------------------------------ fused projections

    def fuse_projections(self) -> None:
        """One matrix product for the query, key and value of a self-attention (for the key and value
        of a cross-attention) instead of three (two), as diffusers' `fuse_qkv_projections` does.

        The fused weight is a copy of the separate ones, taken now: it is not saved with the model,
        it follows `.to()`, and it is used only while the separate weights are unchanged and autograd
        is off (otherwise the separate products run, so gradients reach `to_q`, `to_k`, `to_v`).
        Results equal the separate products within float rounding.
        """
        layers = self.fused_layers()
        with torch.no_grad():
            weight = torch.cat([layer.weight for layer in layers])
            bias = None if layers[0].bias is None else torch.cat([layer.bias for layer in layers])
        self.register_buffer("_fused_weight", weight, persistent=False)
        self.register_buffer("_fused_bias", bias, persistent=False)
        self._fused_from = _identities(layers)

    def unfuse_projections(self) -> None:
        """Drop the fused weight of `fuse_projections`; the separate products run again."""
        for name in ("_fused_weight", "_fused_bias"):
            self._buffers.pop(name, None)
        self._fused_from = None

    _fused_from: tuple | None = None

    def _apply(self, fn: Callable, recurse: bool = True) -> Attention:
        # `.to()` converts the fused copy with the weights it came from (it may make new parameter
        # objects): still current afterwards; `ModelMixin.to`'s CPU casts keep the objects
        current = self._fused_projection_current()
        super()._apply(fn, recurse)
        if current:
            self._fused_from = _identities(self.fused_layers())
        return self

    def fused_layers(self) -> list[nn.Linear]:
        """The projections `fuse_projections` joins: query, key and value, or key and value for cross-attention."""
        names = ("to_k", "to_v") if self.is_cross_attention else ("to_q", "to_k", "to_v")
        return [getattr(self, name) for name in names]

    def _fused_projection(self, self_attention: bool) -> tuple[Tensor, Tensor | None] | None:
        """(weight, bias) fused by `fuse_projections`, if it applies to this call and is current."""
        if torch.is_grad_enabled() or self_attention == self.is_cross_attention:
            return None
        if not self._fused_projection_current():
            return None
        return self._buffers["_fused_weight"], self._buffers["_fused_bias"]

    def _fused_projection_current(self) -> bool:
        """Whether a fused copy exists and its weights are unchanged since (a weight replaced, written
        or cast without it makes the copy stale)."""
        if self._fused_from is None:
            return False
        layers = self.fused_layers()
        weight = self._buffers["_fused_weight"]
        same_kind = (weight.dtype, weight.device) == (layers[0].weight.dtype, layers[0].weight.device)
        return same_kind and _identities(layers) == self._fused_from


# Names of attention weights written by diffusers < 0.14 (old VAEs, DDPM UNets) → current names.
_LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_KEY = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")


def rename_legacy_attention_keys(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename `…attentions.N.query.weight`-style keys to `…attentions.N.to_q.weight` (others unchanged)."""
    renamed = {}
    for key, value in state_dict.items():
        m = _LEGACY_KEY.match(key)
        if m is not None:
            key = f"{m.group(1)}{_LEGACY_ATTENTION_NAMES[m.group(2)]}.{m.group(3)}"
        renamed[key] = value
    return renamed
