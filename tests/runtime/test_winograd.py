"""Winograd 3x3 convolutions through NNPACK, on AVX2's large maps and AMD's AVX-512: equal to direct ones
within float rounding, taken only where they win. Our own F(4x4, 3x3): test_winograd_f4.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixtures.cpus import SAPPHIRE, ZEN3, ZEN5, fake_cpu
from sfumato.runtime import winograd
from sfumato.runtime.packing import PackedConv2d, pack_weights
from sfumato.runtime.winograd import nnpack_conv2d, winograd_kernel

# our F(4x4, 3x3) makes Winograd available without NNPACK (winograd_available): ask for NNPACK itself
pytestmark = pytest.mark.skipif(not winograd._nnpack_available(), reason="needs a torch build with NNPACK")


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("batch", "padding", "bias"), [(1, 1, True), (3, 1, False), (2, 2, True), (1, 0, True)]
)
def test_winograd_matches_a_float64_direct_convolution(
    monkeypatch, nnpack_calls, batch: int, padding: int, bias: bool
) -> None:
    fake_cpu(monkeypatch, ZEN3)
    torch.manual_seed(0)
    x, w = torch.randn(batch, 24, 40, 36), torch.randn(16, 24, 3, 3) / 15
    b = torch.randn(16) if bias else None
    expected = F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=padding)
    out = nnpack_conv2d(x, w, b, (padding, padding))
    assert out.shape == expected.shape and out.dtype == torch.float32
    assert relative_difference(out.double(), expected) < 1e-4
    # each sample's result does not depend on the batch it came in
    assert torch.equal(out[-1:], nnpack_conv2d(x[-1:], w, b, (padding, padding)))
    assert nnpack_calls


@pytest.mark.parametrize(("padding", "upsample"), [(1, 1), (0, 1), (2, 1), (1, 2)])
def test_bands_of_rows_give_the_numbers_of_one_call(
    monkeypatch, nnpack_calls, padding: int, upsample: int
) -> None:
    fake_cpu(monkeypatch, ZEN3)
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 8, 45, 30), torch.randn(4, 8, 3, 3) / 9, torch.randn(4)
    enlarged = F.interpolate(x, scale_factor=float(upsample), mode="nearest")
    whole = torch.cat(
        [torch._nnpack_spatial_convolution(s, w, b, [padding] * 2, [1, 1]) for s in enlarged.split(1)]
    )
    nnpack_calls.clear()
    monkeypatch.setattr(winograd, "BAND_BYTES", 8 * 30 * upsample * 4 * 10)  # 10 input rows: 6-row bands
    banded = nnpack_conv2d(x, w, b, (padding, padding), upsample=upsample)
    assert torch.equal(banded, whole)
    assert max(c[2] for c in nnpack_calls) == 8  # 6 output rows and the 2 more they read
    assert sum(c[2] - 2 for c in nnpack_calls) == 2 * whole.shape[2]  # every output row once per sample


def test_an_upsampler_fuses_the_enlargement_into_its_convolution(nnpack_calls, monkeypatch) -> None:
    from sfumato.nn.resampling import Upsample2D

    fake_cpu(monkeypatch, ZEN3)  # the AVX2 rule: Winograd from 64x64 maps on

    torch.manual_seed(0)
    up = Upsample2D(8)
    fused = copy.deepcopy(up)
    pack_weights(fused, "none", winograd=True)
    x = torch.randn(1, 8, 40, 40)
    with torch.no_grad():
        assert relative_difference(fused(x), up(x)) < 1e-4
    assert nnpack_calls and all(c[3] == 80 for c in nnpack_calls)  # the enlarged width, band by band


def test_the_shape_rule_follows_the_bench_on_avx2(monkeypatch) -> None:
    """NNPACK from 64x64 maps on; our F(4x4, 3x3) on 32x32 with enough channels; oneDNN below."""
    fake_cpu(monkeypatch, ZEN3)
    for shape in ((128, 128, 512, 512), (320, 320, 64, 64), (960, 320, 64, 64), (16, 16, 512, 512)):
        assert winograd_kernel(*shape) == "nnpack"
    # to or from an image's or a latent's channels the transforms are most of the work: oneDNN
    for shape in ((4, 320, 64, 64), (320, 4, 64, 64), (128, 3, 512, 512), (3, 128, 512, 512)):
        assert winograd_kernel(*shape) is None
    for shape in ((320, 320, 32, 32), (640, 640, 32, 32), (1920, 640, 32, 32), (512, 512, 32, 32)):
        assert winograd_kernel(*shape) == "f4"
    assert winograd_kernel(4, 320, 32, 32) is None and winograd_kernel(320, 4, 32, 32) is None
    assert winograd_kernel(1280, 1280, 16, 16) is None and winograd_kernel(1280, 1280, 8, 8) is None


def test_the_shape_rule_follows_the_bench_on_avx512(monkeypatch) -> None:
    """oneDNN's AVX-512 kernels beat NNPACK's AVX2 ones on SD1.5's UNet maps; the VAE's still go to Winograd."""
    fake_cpu(monkeypatch, ZEN5)
    assert winograd_kernel(128, 3, 512, 512) is None  # the VAE's last convolution
    for shape in ((128, 128, 512, 512), (256, 256, 128, 128), (512, 512, 64, 64), (320, 320, 128, 128)):
        assert winograd_kernel(*shape) == "nnpack"
    for shape in ((320, 320, 64, 64), (640, 640, 32, 32), (512, 512, 32, 32)):
        assert winograd_kernel(*shape) is None


@pytest.mark.parametrize("machine", ["avx2", "avx512"])
def test_a_switched_conv_takes_winograd_on_large_maps_only(nnpack_calls, monkeypatch, machine) -> None:
    fake_cpu(monkeypatch, ZEN3 if machine == "avx2" else ZEN5)
    large_side = 64 if machine == "avx2" else 128
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    switched = copy.deepcopy(conv)
    assert pack_weights(switched, "none", winograd=True) == 1 and type(switched) is PackedConv2d
    with torch.no_grad():
        large, small = torch.randn(2, 16, large_side, large_side), torch.randn(2, 16, 32, 32)
        assert relative_difference(switched(large), conv(large)) < 1e-4
        assert nnpack_calls == [(1, 16, large_side, large_side)] * 2  # one call per sample
        assert relative_difference(switched(small), conv(small)) < 1e-5
    assert len(nnpack_calls) == 2


def test_a_convolution_to_few_channels_runs_the_plain_kernel(monkeypatch) -> None:
    """128 to 3 channels (a VAE's last convolution): no packed copy, no Winograd, diffusers' own numbers."""
    fake_cpu(monkeypatch, ZEN3)
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 3, 3, padding=1)
    switched = copy.deepcopy(conv)
    pack_weights(switched, "all", winograd=True)
    with torch.no_grad():
        x = torch.randn(1, 32, 64, 64)
        assert torch.equal(switched(x), conv(x))
    assert switched._sfumato_pack is None


def test_only_3x3_stride_1_convolutions_are_switched_for_winograd() -> None:
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)
    )
    assert pack_weights(model, "none", winograd=True) == 1
    assert [type(m) for m in model] == [nn.Conv2d, nn.Conv2d, PackedConv2d]


@pytest.mark.parametrize("machine", [ZEN3, SAPPHIRE])
@pytest.mark.parametrize("options", [{"padding": 1, "padding_mode": "reflect"}, {"padding": "same"}])
def test_other_padding_modes_keep_their_own_padding(monkeypatch, machine, options) -> None:
    """Winograd pads with zeros: a reflecting (or 'same') convolution stays on its usual path."""
    fake_cpu(monkeypatch, machine)
    monkeypatch.setattr(winograd, "OWN_MIN_CHANNELS", 1)  # our F(4x4, 3x3) would take 8 channels
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, **options)
    switched = copy.deepcopy(conv)
    pack_weights(switched, "none", winograd=True)
    assert not getattr(switched, "_sfumato_winograd", False)
    x = torch.randn(1, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(switched(x), conv(x))


def test_autograd_other_dtypes_and_a_changed_thread_count_take_the_direct_path(
    nnpack_calls, monkeypatch
) -> None:
    fake_cpu(monkeypatch, ZEN3)  # the AVX2 rule: Winograd from 64x64 maps on
    conv = nn.Conv2d(8, 8, 3, padding=1)
    pack_weights(conv, "none", winograd=True)
    x = torch.randn(1, 8, 64, 64, requires_grad=True)
    conv(x).sum().backward()  # autograd needs the weight: the plain forward, with its backward
    assert conv.weight.grad is not None and x.grad is not None
    with torch.no_grad():
        assert conv.double()(x.detach().double()).dtype == torch.float64
        conv.float()
        conv(x.detach())
        assert len(nnpack_calls) == 1  # float32 without autograd: Winograd
        # NNPACK's thread pool keeps the size it was made with; a new count goes to oneDNN instead
        monkeypatch.setattr(winograd, "_pool_threads", torch.get_num_threads() + 1)
        conv(x.detach())
    assert len(nnpack_calls) == 1


def test_winograd_can_be_turned_off() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    assert pack_weights(conv, "none", winograd=False) == 0 and type(conv) is nn.Conv2d


def test_nnpack_called_where_it_does_not_run_says_so(monkeypatch) -> None:
    monkeypatch.setattr(winograd, "_nnpack_available", lambda: False)
    with pytest.raises(RuntimeError, match="no working NNPACK"):
        nnpack_conv2d(torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3), None, (1, 1))
