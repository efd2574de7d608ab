"""The fast mode's chunked bf16 self-attention: close to exact attention, used only where it applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures.cpus import ZEN5, fake_cpu
from sfumato.runtime import attention
from sfumato.runtime.attention import chunked_attention


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.double() - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize(("n", "m", "heads", "d"), [(600, 600, 2, 40), (1100, 300, 1, 64)])
def test_matches_float64_attention_to_bf16_rounding(n: int, m: int, heads: int, d: int) -> None:
    g = torch.Generator().manual_seed(0)
    q = (1.5 * torch.randn(2, heads, n, d, generator=g)).bfloat16()  # scores of a few units, as in UNets
    k, v = ((1.5 * torch.randn(2, heads, m, d, generator=g)).bfloat16() for _ in range(2))
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.no_grad():
        out = chunked_attention(q, k, v)  # several query chunks, the last one short
    assert out is not None and out.dtype == torch.bfloat16 and out.shape == reference.shape
    assert relative_error(out, reference) < 3e-2  # bf16 scores; SDPA's own bf16 error is ~3e-3
    assert relative_error(out, reference) < 10 * relative_error(
        F.scaled_dot_product_attention(q, k, v), reference
    )


def test_leaves_what_it_does_not_speed_up_to_sdpa() -> None:
    q = torch.randn(1, 2, 300, 8)
    short = torch.randn(1, 2, 77, 8)
    with torch.no_grad():
        assert chunked_attention(q, q, q) is None  # float32: SDPA is faster and exact
        assert chunked_attention(q.bfloat16(), short.bfloat16(), short.bfloat16()) is None  # cross-attention
    x = q.bfloat16().requires_grad_()
    assert chunked_attention(x, x, x) is None  # autograd


def test_a_mask_always_takes_sdpa() -> None:
    from sfumato.nn.attention import multi_head_attention

    calls = []
    x = torch.randn(1, 300, 16).bfloat16()
    bias = torch.zeros(1, 1, 1, 300).bfloat16()
    with torch.no_grad():
        out = multi_head_attention(x, x, x, 2, bias, kernel=lambda *a: calls.append(a))
    assert calls == [] and out.shape == x.shape


def test_fast_mode_uses_it_on_bf16_cpus_and_the_exact_mode_does_not(sd_folder, monkeypatch) -> None:
    import warnings

    import sfumato
    from sfumato.nn.attention import Attention

    fake_cpu(monkeypatch, ZEN5)  # fast dtype bfloat16 (slow kernels on an AVX2 host: a tiny model)
    calls = []

    def spy(q, k, v):
        out = chunked_attention(q, k, v)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(attention, "chunked_attention", spy)

    def generate(pipe) -> np.ndarray:
        pipe.set_progress_bar_config(disable=True)
        g = torch.Generator().manual_seed(0)
        return pipe(
            "a cat", height=256, width=256, num_inference_steps=2, generator=g, output_type="np"
        ).images

    exact_pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    assert all(m.kernel is None for m in exact_pipe.unet.modules() if isinstance(m, Attention))
    exact = generate(exact_pipe)
    assert calls == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a host without it, if so
        fast_pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder).optimize("fast")
        fast = generate(fast_pipe)
    assert fast_pipe.unet.dtype == torch.bfloat16
    assert any(calls)  # the UNet's 256-token self-attention at 256 px
    assert np.abs(fast - exact).mean() < 0.02
    fast_pipe.optimize("exact")
    assert all(m.kernel is None for m in fast_pipe.unet.modules() if isinstance(m, Attention))
