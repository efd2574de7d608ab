"""The spatial transformer of Stable Diffusion UNets (`Transformer2DModel` / `BasicTransformerBlock`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .attention import Attention


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): one projection to 2·inner, split into value and gate."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim * 2)

    def forward(self, x: Tensor) -> Tensor:
        # runtime.packing's linears can apply the GELU inside the gate's GEMM (fast mode)
        fused = getattr(self.proj, "forward_gated_gelu", None)
        out = fused(x) if fused is not None else None
        if out is not None:
            return out
        h, gate = self.proj(x).chunk(2, dim=-1)
        if _needs_graph(x, self.proj.weight):
            return h * F.gelu(gate)
        return F.gelu(gate).mul_(h)  # the same values, one activation fewer to allocate


class FeedForward(nn.Module):
    """GEGLU MLP with 4× expansion (`ff.net.0.proj`, `ff.net.2` in checkpoints)."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        if (
            rows <= CPU_FEED_FORWARD_ROWS * 2
            or x.device.type != "cpu"
            or self.training  # dropout draws per call: keep one draw over all rows
            or _needs_graph(x, self.net[0].proj.weight)
        ):
            return self._forward(x)
        # Rows are independent: in chunks, the 4x wider activations stay in cache and are not
        # page-faulted afresh (SD1.5 at 512 px: 8192 rows, 200 ms a block instead of 280-370 on an
        # AVX2 EPYC; the same values bit for bit there)
        flat = x.reshape(rows, x.shape[-1])
        out = torch.empty_like(flat)
        for start in range(0, rows, CPU_FEED_FORWARD_ROWS):
            out[start : start + CPU_FEED_FORWARD_ROWS] = self._forward(
                flat[start : start + CPU_FEED_FORWARD_ROWS]
            )
        return out.view_as(x)

    def _forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


CPU_FEED_FORWARD_ROWS = 1024  # chunks of 512 and 2048 rows were slower; 2048 rows whole are a tie


def _needs_graph(x: Tensor, weight: Tensor) -> bool:
    """Whether autograd records this call (then no in-place shortcuts or chunked writes)."""
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, cross-attention on the text context, feed-forward."""

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None,
        only_cross_attention: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.only_cross_attention = only_cross_attention
        self.norm1 = nn.LayerNorm(dim)
        # With only_cross_attention the first attention also reads the context instead of itself.
        self.attn1 = Attention(
            dim, cross_attention_dim if only_cross_attention else None, heads, dim_head, dropout=dropout
        )
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim, heads, dim_head, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None,
        self_bias: Tensor | None = None,
        cross_bias: Tensor | None = None,
        widen_to: int | None = None,
    ) -> Tensor:
        """`widen_to`: `x` is the first part of a batch of that size whose parts are equal up to the
        context (`Transformer2DModel.forward`); it is repeated after the self-attention."""
        # each sublayer's output is a fresh tensor: without autograd the residual sum reuses it
        add = torch.Tensor.add_ if not torch.is_grad_enabled() else torch.add
        x = add(self.attn1(self.norm1(x), context if self.only_cross_attention else None, self_bias), x)
        if widen_to is not None and widen_to != x.shape[0]:
            x = x.repeat(widen_to // x.shape[0], 1, 1)
        x = add(self.attn2(self.norm2(x), context, cross_bias), x)
        return add(self.ff(self.norm3(x)), x)


class Transformer2DModel(nn.Module):
    """GroupNorm → proj_in → transformer blocks over the H·W tokens → proj_out, plus the input.

    `use_linear_projection` (SD2, SDXL) makes proj_in/proj_out Linear layers applied on tokens;
    otherwise they are 1×1 convs applied on the map (SD1).
    """

    def __init__(
        self,
        num_attention_heads: int,
        attention_head_dim: int,
        in_channels: int,
        num_layers: int = 1,
        cross_attention_dim: int | None = None,
        norm_num_groups: int = 32,
        use_linear_projection: bool = False,
        only_cross_attention: bool = False,
    ):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6)
        if use_linear_projection:
            self.proj_in = nn.Linear(in_channels, inner)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, num_attention_heads, attention_head_dim, cross_attention_dim, only_cross_attention
            )
            for _ in range(num_layers)
        )
        if use_linear_projection:
            self.proj_out = nn.Linear(inner, in_channels)
        else:
            self.proj_out = nn.Conv2d(inner, in_channels, kernel_size=1)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None,
        self_bias: Tensor | None = None,
        cross_bias: Tensor | None = None,
        widen_to: int | None = None,
    ) -> Tensor:
        """`widen_to`: `x` holds the first 1/k of a batch of `widen_to` samples whose k parts are equal
        up to the text context (classifier-free guidance's negative and positive halves, same latents
        and timestep). Everything before the first cross-attention then runs on that part alone, and
        the result has the whole batch. Needs a first block that attends to itself first."""
        b, _, height, width = x.shape
        residual = x
        h = self.norm(x)
        if self.use_linear_projection:
            h = self.proj_in(h.permute(0, 2, 3, 1).reshape(b, height * width, -1))  # (B, HW, inner)
        else:
            h = self.proj_in(h)
            h = h.permute(0, 2, 3, 1).reshape(b, height * width, -1)
        for i, block in enumerate(self.transformer_blocks):
            h = block(h, context, self_bias, cross_bias, widen_to if i == 0 else None)
        if h.shape[0] != b:
            residual, b = residual.repeat(h.shape[0] // b, 1, 1, 1), h.shape[0]
        # back to a dense (B, C, H, W) map in the input's memory format (free for channels-last input)
        layout = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        if self.use_linear_projection:
            h = (
                self.proj_out(h)
                .reshape(b, height, width, -1)
                .permute(0, 3, 1, 2)
                .contiguous(memory_format=layout)
            )
        else:
            h = self.proj_out(
                h.reshape(b, height, width, -1).permute(0, 3, 1, 2).contiguous(memory_format=layout)
            )
        return h.add_(residual) if not torch.is_grad_enabled() else h + residual


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
