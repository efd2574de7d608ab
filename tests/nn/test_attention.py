"""Attention against the textbook formula and diffusers' Attention module."""

from __future__ import annotations

import pytest
import torch

from sfumato.nn.attention import (
    Attention,
    mask_to_bias,
    multi_head_attention,
    rename_legacy_attention_keys,
    reuse_context_projections,
)


def reference_attention(q, k, v, heads, bias=None):
    b, n, _ = q.shape
    split = lambda t: t.view(b, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + bias
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)


def test_multi_head_attention_is_softmax_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, 5, 12, generator=g),
        torch.randn(2, 7, 12, generator=g),
        torch.randn(2, 7, 12, generator=g),
    )
    bias = mask_to_bias(torch.tensor([[1, 1, 0, 1, 1, 1, 0], [1] * 7]), q.dtype, 7)
    for heads in (1, 3):
        torch.testing.assert_close(multi_head_attention(q, k, v, heads), reference_attention(q, k, v, heads))
        torch.testing.assert_close(
            multi_head_attention(q, k, v, heads, bias), reference_attention(q, k, v, heads, bias)
        )


def test_mask_of_wrong_length_is_explained():
    with pytest.raises(ValueError, match=r"shape \(batch, 7\)"):
        mask_to_bias(torch.ones(2, 5), torch.float32, 7)


def test_spatial_attention_matches_diffusers():
    attention_processor = pytest.importorskip("diffusers.models.attention_processor")
    torch.manual_seed(0)
    ref = attention_processor.Attention(
        16,
        heads=2,
        dim_head=8,
        norm_num_groups=4,
        residual_connection=True,
        bias=True,
        rescale_output_factor=2.0,
        eps=1e-6,
        upcast_softmax=True,
        _from_deprecated_attn_block=True,
    )
    ours = Attention(
        16,
        heads=2,
        dim_head=8,
        bias=True,
        norm_num_groups=4,
        eps=1e-6,
        residual_connection=True,
        rescale_output_factor=2.0,
    )
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 16, 5, 3)
    # same operations in the same order: equal to the last bit, also for channels-last inputs (which the
    # VAE produces after its mid-block attention)
    for inp in (x, x.to(memory_format=torch.channels_last)):
        torch.testing.assert_close(ours(inp), ref(inp), rtol=0, atol=0)


def test_legacy_attention_names():
    sd = {
        "encoder.mid_block.attentions.0.query.weight": 1,
        "encoder.mid_block.attentions.0.proj_attn.bias": 2,
        "encoder.mid_block.attentions.0.group_norm.weight": 3,
        "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight": 4,
        "key.weight": 5,  # not inside an attention block: untouched
    }
    assert rename_legacy_attention_keys(sd) == {
        "encoder.mid_block.attentions.0.to_q.weight": 1,
        "encoder.mid_block.attentions.0.to_out.0.bias": 2,
        "encoder.mid_block.attentions.0.group_norm.weight": 3,
        "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q.weight": 4,
        "key.weight": 5,
    }


def _counted_cross_attention():
    torch.manual_seed(0)
    attn = Attention(16, cross_attention_dim=12, heads=2, dim_head=8)
    calls = []
    for name in ("to_k", "to_v"):
        getattr(attn, name).register_forward_hook(lambda m, args, out, name=name: calls.append(name))
    return attn, calls


def test_context_projections_kept_within_the_block():
    attn, calls = _counted_cross_attention()
    x, context = torch.randn(2, 6, 16), torch.randn(2, 5, 12)
    with torch.no_grad():
        expected = attn(x, context)
        calls.clear()
        with reuse_context_projections():
            outs = [attn(x * (i + 1), context) for i in range(3)]
        assert calls == ["to_k", "to_v"]  # projected once for the three calls
        assert torch.equal(outs[0], expected)  # bit for bit the computation without the block
        assert torch.equal(outs[2], attn(x * 3, context))
        calls.clear()
        attn(x, context)  # the block has ended: nothing is kept
        assert calls == ["to_k", "to_v"]


def test_context_projections_follow_a_changed_context_or_weight():
    attn, calls = _counted_cross_attention()
    x, context = torch.randn(2, 6, 16), torch.randn(2, 5, 12)
    with torch.no_grad(), reuse_context_projections():
        attn(x, context)
        other = context.clone()  # equal contents, another tensor: projected anew
        assert torch.equal(attn(x, other), attn(x, context))
        assert calls.count("to_k") == 3
        context.mul_(2)  # edited in place
        edited = attn(x, context)
        attn.to_k.weight.mul_(0.5)  # a weight edited in place (e.g. a fused LoRA)
        reweighted = attn(x, context)
        assert calls.count("to_k") == 5
    with torch.no_grad():
        assert torch.equal(reweighted, attn(x, context))
        attn.to_k.weight.mul_(2)
        assert torch.equal(edited, attn(x, context))


def test_context_projections_not_kept_for_autograd_or_self_attention():
    attn, calls = _counted_cross_attention()
    x, context = torch.randn(2, 6, 16), torch.randn(2, 5, 12)
    with reuse_context_projections():
        for _ in range(2):
            attn(x, context).sum().backward()  # autograd records: each call its own graph
        assert calls.count("to_k") == 2
        self_attn, self_calls = Attention(16, heads=2, dim_head=8), []
        self_attn.to_k.register_forward_hook(lambda *a: self_calls.append(1))
        with torch.no_grad():
            self_attn(x)
            self_attn(x)
        assert len(self_calls) == 2  # keys of `x` itself change with every call
