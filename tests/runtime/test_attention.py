"""runtime.attention: the CPU attention kernels are close to exact attention and run only where they apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fixtures.cpus import SAPPHIRE, ZEN3, ZEN5, fake_cpu
from sfumato.runtime import attention
from sfumato.runtime.attention import exact_attention, fast_attention
from sfumato.runtime.packing import mkldnn_packing_available


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.double() - reference).abs().max() / reference.abs().max())


def qkv(n: int, m: int, heads: int, d: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    q = (1.5 * torch.randn(2, heads, n, d, generator=g)).to(dtype)  # scores of a few units, as in UNets
    return q, *((1.5 * torch.randn(2, heads, m, d, generator=g)).to(dtype) for _ in range(2))


@pytest.mark.parametrize(("n", "m", "heads", "d"), [(600, 600, 2, 40), (1100, 300, 1, 64)])
def test_fast_bf16_attention_matches_float64_to_bf16_rounding(monkeypatch, n, m, heads, d) -> None:
    fake_cpu(monkeypatch, ZEN5)  # chosen without AMX only; torch.mm runs bf16 on any CPU
    q, k, v = qkv(n, m, heads, d, torch.bfloat16)
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    with torch.no_grad():
        out = fast_attention(q, k, v)  # several query chunks, the last one short
    assert out is not None and out.dtype == torch.bfloat16 and out.shape == reference.shape
    assert relative_error(out, reference) < 3e-2  # bf16 scores; SDPA's own bf16 error is ~3e-3
    assert relative_error(out, reference) < 10 * relative_error(
        F.scaled_dot_product_attention(q, k, v), reference
    )


@pytest.mark.skipif(not mkldnn_packing_available(), reason="needs torch's oneDNN packed-weight ops (x86)")
def test_exact_float32_attention_equals_sdpa_within_float_rounding(monkeypatch) -> None:
    fake_cpu(monkeypatch, ZEN5)  # chosen on AVX-512 only; the oneDNN kernels run on any x86
    q, k, v = qkv(2100, 2100, 2, 40, torch.float32)  # over EXACT_MIN_KEYS, a short last chunk
    with torch.no_grad():
        out, sdpa = exact_attention(q, k, v), F.scaled_dot_product_attention(q, k, v)
        assert out is not None and fast_attention(q, k, v) is not None
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert relative_error(out, reference) < 1e-5 and relative_error(sdpa, reference) < 1e-5
    assert relative_error(out, sdpa.double()) < 1e-5


def test_what_is_not_faster_stays_on_sdpa(monkeypatch) -> None:
    fake_cpu(monkeypatch, ZEN5)
    q, k, v = qkv(300, 300, 1, 8, torch.float32)
    with torch.no_grad():
        assert exact_attention(q, k, v) is None and fast_attention(q, k, v) is None  # fp32 below 2048 keys
        assert exact_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()) is None  # bf16 rounding: not exact
        short = k[:, :, :77].bfloat16()
        assert fast_attention(q.bfloat16(), short, short) is None  # cross-attention on a prompt
    x = q.bfloat16().requires_grad_()
    assert fast_attention(x, x, x) is None  # autograd
    fake_cpu(monkeypatch, ZEN3)
    q, k, v = qkv(2100, 2100, 1, 8, torch.float32)
    with torch.no_grad():
        assert exact_attention(q, k, v) is None  # measured on AVX-512 only
    fake_cpu(monkeypatch, SAPPHIRE)  # SDPA multiplies on AMX tiles in bf16 and with MKL's AVX-512 in fp32
    q, k, v = qkv(2100, 2100, 1, 8, torch.float32)
    with torch.no_grad():
        assert exact_attention(q, k, v) is None and fast_attention(q, k, v) is None
        assert fast_attention(q.bfloat16(), k.bfloat16(), v.bfloat16()) is None


def test_a_mask_always_takes_sdpa() -> None:
    from sfumato.nn.attention import multi_head_attention

    calls = []
    x = torch.randn(1, 300, 16).bfloat16()
    bias = torch.zeros(1, 1, 1, 300).bfloat16()
    with torch.no_grad():
        out = multi_head_attention(x, x, x, 2, bias, kernel=lambda *a: calls.append(a))
    assert calls == [] and out.shape == x.shape


def test_fast_mode_uses_bf16_chunks_and_the_exact_mode_does_not(sd_folder, monkeypatch) -> None:
    import warnings

    import sfumato
    from sfumato.nn.attention import Attention

    fake_cpu(monkeypatch, ZEN5)  # fast dtype bfloat16 (slow kernels on an AVX2 host: a tiny model)
    chunked = []
    original = attention.attend_in_chunks
    monkeypatch.setattr(
        attention, "attend_in_chunks", lambda *a, **kw: chunked.append(a[0].dtype) or original(*a, **kw)
    )

    def generate(pipe) -> np.ndarray:
        pipe.set_progress_bar_config(disable=True)
        g = torch.Generator().manual_seed(0)
        return pipe(
            "a cat", height=256, width=256, num_inference_steps=2, generator=g, output_type="np"
        ).images

    exact_pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    kernels = {m.kernel for m in exact_pipe.unet.modules() if isinstance(m, Attention)}
    assert kernels == {exact_attention}
    exact = generate(exact_pipe)
    assert chunked == []  # 256 tokens at most at 256 px: below EXACT_MIN_KEYS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a host without it, if so
        fast_pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder).optimize("fast")
        fast = generate(fast_pipe)
    assert fast_pipe.unet.dtype == torch.bfloat16
    assert chunked and set(chunked) == {torch.bfloat16}  # the UNet's 256-token self-attention
    assert np.abs(fast - exact).mean() < 0.02
    fast_pipe.optimize("exact")
    assert {m.kernel for m in fast_pipe.unet.modules() if isinstance(m, Attention)} == {exact_attention}
    fast_pipe.to("meta")  # any device but the CPU: SDPA everywhere
    fast_pipe.optimize()
    assert {m.kernel for m in fast_pipe.unet.modules() if isinstance(m, Attention)} == {None}
