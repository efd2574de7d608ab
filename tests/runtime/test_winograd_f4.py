"""Our Winograd F(4x4, 3x3): equal to a direct convolution within float rounding in every band and
chunk layout, its buffers kept per thread, and taken where it wins (Intel's AVX-512, AVX2's 32x32 maps)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixtures.cpus import SAPPHIRE, ZEN3, ZEN5, fake_cpu
from sfumato.runtime import winograd, winograd_f4
from sfumato.runtime.packing import PackedConv2d, pack_weights
from sfumato.runtime.winograd import winograd_kernel, winograd_usable
from sfumato.runtime.winograd_f4 import SPAN, TILE, transform_weight, winograd_f4_conv2d


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).abs().max() / b.abs().max())


def direct(x, w, b, padding, upsample=1) -> torch.Tensor:
    """The float64 convolution every result here is compared with."""
    if upsample > 1:
        x = F.interpolate(x, scale_factor=float(upsample), mode="nearest")
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=padding)


def test_the_transforms_compute_a_correlation_exactly() -> None:
    a_t, g, b_t = winograd_f4._transforms_1d()
    assert a_t.shape == (TILE, SPAN) and g.shape == (SPAN, 3) and b_t.shape == (SPAN, SPAN)
    assert torch.equal(b_t * 2, torch.round(b_t * 2))  # halves: exact in float32
    torch.manual_seed(0)
    d, k = torch.randn(SPAN, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    expected = torch.stack([d[i : i + 3] @ k for i in range(TILE)])
    assert torch.allclose(a_t @ ((g @ k) * (b_t @ d)), expected, atol=1e-13)


@pytest.mark.parametrize(
    ("shape", "out_channels", "padding", "upsample", "bias"),
    [
        ((1, 8, 13, 7), 5, 1, 1, True),  # sides that are not multiples of the tile
        ((2, 16, 9, 12), 4, 1, 2, False),  # fused nearest enlargement
        ((3, 4, 20, 20), 6, 0, 1, True),
        ((2, 6, 11, 10), 3, 2, 1, True),
        ((1, 3, 2, 2), 2, 1, 1, True),  # smaller than one tile
    ],
)
def test_it_matches_a_float64_direct_convolution(shape, out_channels, padding, upsample, bias) -> None:
    torch.manual_seed(0)
    x, w = torch.randn(shape), torch.randn(out_channels, shape[1], 3, 3)
    b = torch.randn(out_channels) if bias else None
    expected = direct(x, w, b, padding, upsample)
    out = winograd_f4_conv2d(x, w, b, (padding, padding), upsample)
    assert out.shape == expected.shape and out.dtype == torch.float32 and out.is_contiguous()
    assert relative_difference(out, expected) < 1e-5


def test_it_rounds_more_tightly_than_nnpack() -> None:
    """~5e-6 of the output's scale on 64 channels, against NNPACK's ~1.7e-5 (module docstring)."""
    torch.manual_seed(0)
    x, w = torch.randn(1, 64, 48, 48), torch.randn(64, 64, 3, 3) / 24
    assert relative_difference(winograd_f4_conv2d(x, w, None, (1, 1)), direct(x, w, None, 1)) < 8e-6


@pytest.mark.parametrize(
    ("whole", "band", "weight", "plan"),
    [
        (2**30, 2**30, 2**30, (3, 10, 8)),  # the whole batch at once
        (1000, 40_000, 2**30, (1, 3, 8)),  # bands of tile rows
        (1000, 250_000, 2**30, (2, 10, 8)),  # whole samples, two per band
        (10**6, 1000, 3000, (3, 10, 2)),  # a big weight on a small map: chunks of output channels
        (20_000, 1000, 3000, (1, 1, 2)),  # both: bands as large as `WHOLE_BYTES` allows
    ],
)
def test_bands_and_weight_chunks_give_the_same_numbers(monkeypatch, whole, band, weight, plan) -> None:
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 10, 37, 29), torch.randn(8, 10, 3, 3), torch.randn(8)
    expected = direct(x, w, b, 1)
    reference = winograd_f4_conv2d(x, w, b, (1, 1))
    monkeypatch.setattr(winograd_f4, "WHOLE_BYTES", whole)
    monkeypatch.setattr(winograd_f4, "BAND_BYTES", band)
    monkeypatch.setattr(winograd_f4, "WEIGHT_BYTES", weight)
    assert winograd_f4._plan(3, 10, 8, 37, 29, 4) == plan
    out = winograd_f4_conv2d(x, w, b, (1, 1))
    assert relative_difference(out, expected) < 1e-5
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()
    # each sample's result does not depend on the others in its band
    assert relative_difference(winograd_f4_conv2d(x[1:2], w, b, (1, 1)), out[1:2].double()) < 1e-6


@pytest.mark.parametrize("factor", [2, 3])
def test_an_enlarged_input_in_bands_matches_one_band(monkeypatch, factor) -> None:
    """Bands start on odd enlarged rows too (a 1-row padding): each row phase is copied apart."""
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 6, 13, 11), torch.randn(5, 6, 3, 3), torch.randn(5)
    whole = winograd_f4_conv2d(x, w, b, (1, 1), upsample=factor)
    monkeypatch.setattr(winograd_f4, "WHOLE_BYTES", 1000)
    monkeypatch.setattr(winograd_f4, "BAND_BYTES", 1000)  # one tile row per band
    assert winograd_f4._plan(2, 6, 5, 13 * factor, 11 * factor, 4)[:2] == (1, 1)
    banded = winograd_f4_conv2d(x, w, b, (1, 1), upsample=factor)
    assert relative_difference(banded, whole.double()) < 5e-6  # float rounding only: other GEMM sizes
    assert relative_difference(banded, direct(x, w, b, 1, factor)) < 1e-5


def test_the_weight_transform_is_the_kronecker_product_of_the_1d_one() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    _, g, _ = winograd_f4._transforms_1d()
    expected = torch.einsum("ai,kcij,bj->abkc", g, w, g).reshape(SPAN * SPAN, 4, 3)
    assert torch.allclose(transform_weight(w), expected, atol=1e-12)


def test_buffers_are_kept_between_calls_and_per_thread() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(1, 8, 16, 16), torch.randn(8, 8, 3, 3)
    winograd_f4.release_scratch()
    winograd_f4_conv2d(x, w, None, (1, 1))
    kept = {name: buf.data_ptr() for name, buf in winograd_f4._local.scratch.buffers.items()}
    assert set(kept) >= {"weight", "band", "gathered", "spectrum", "product", "result"}
    first = winograd_f4_conv2d(x, w, None, (1, 1))
    again = winograd_f4_conv2d(x, w, None, (1, 1))
    assert {name: buf.data_ptr() for name, buf in winograd_f4._local.scratch.buffers.items()} == kept
    assert torch.equal(first, again)  # a reused buffer holds nothing of the last call (its borders)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(getattr(winograd_f4._local, "scratch", None)))
    thread.start()
    thread.join()
    assert seen == [None]
    winograd_f4.release_scratch()
    assert winograd_f4._local.scratch is None


def test_buffers_made_under_inference_mode_serve_calls_outside_it() -> None:
    """A pipeline called under `torch.inference_mode()`, then its VAE under `torch.no_grad()`."""
    torch.manual_seed(0)
    x, w = torch.randn(1, 8, 16, 16), torch.randn(8, 8, 3, 3)
    winograd_f4.release_scratch()
    with torch.inference_mode():
        first = winograd_f4_conv2d(x, w, None, (1, 1))
    with torch.no_grad():
        assert torch.equal(winograd_f4_conv2d(x, w, None, (1, 1)), first)
    with torch.inference_mode():
        assert torch.equal(winograd_f4_conv2d(x, w, None, (1, 1)), first)


def test_a_narrower_call_after_a_wider_one_keeps_its_border_zero() -> None:
    """The kept band buffer held a wider map before: the columns beside the new one must be zero."""
    torch.manual_seed(0)
    w = torch.randn(4, 4, 3, 3)
    winograd_f4_conv2d(torch.randn(1, 4, 30, 40) + 100, w, None, (1, 1))
    x = torch.randn(1, 4, 30, 17)
    assert relative_difference(winograd_f4_conv2d(x, w, None, (1, 1)), direct(x, w, None, 1)) < 1e-5


def test_the_shape_rule_on_intel_avx512(monkeypatch) -> None:
    fake_cpu(monkeypatch, SAPPHIRE)
    for shape in ((128, 128, 512, 512), (320, 320, 32, 32), (1920, 640, 32, 32), (1280, 1280, 16, 16)):
        assert winograd_kernel(*shape) == "f4"
    for shape in ((640, 640, 16, 16), (1280, 1280, 8, 8), (128, 3, 512, 512), (4, 320, 64, 64)):
        assert winograd_kernel(*shape) is None  # small maps, few channels


def test_a_switched_conv_takes_it_where_it_wins(monkeypatch, f4_calls, nnpack_calls) -> None:
    """Intel's AVX-512: every map from 32x32; AVX2: 32x32 maps, NNPACK from 64x64; AMD's AVX-512: never."""
    monkeypatch.setattr(winograd, "OWN_MIN_CHANNELS", 16)  # a small module stands in for SD's
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    switched = copy.deepcopy(conv)
    pack_weights(switched, "none", winograd=True)
    assert type(switched) is PackedConv2d
    large, small = torch.randn(2, 16, 32, 32), torch.randn(2, 16, 8, 8)
    fake_cpu(monkeypatch, SAPPHIRE)
    with torch.no_grad():
        assert relative_difference(switched(large), conv(large).double()) < 1e-5
        assert relative_difference(switched(small), conv(small).double()) < 1e-5
        assert f4_calls == [(2, 16, 32, 32)] and not nnpack_calls  # the 8x8 map went to oneDNN
        assert not winograd_usable(large.bfloat16(), switched.weight.bfloat16(), "f4")
        fake_cpu(monkeypatch, ZEN3)
        switched(torch.randn(1, 16, 64, 64))
        assert f4_calls == [(2, 16, 32, 32)] and nnpack_calls == [(1, 16, 64, 64)]
        assert relative_difference(switched(large[:1]), conv(large[:1]).double()) < 1e-5
        assert f4_calls == [(2, 16, 32, 32), (1, 16, 32, 32)]
        fake_cpu(monkeypatch, ZEN5)
        switched(large)
    assert len(f4_calls) == 2 and len(nnpack_calls) == 1
