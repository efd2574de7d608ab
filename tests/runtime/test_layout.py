"""Exact-mode bfloat16 convolutions computed channels-last: the plain modules' values and layout, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fixtures.cpus import SAPPHIRE, ZEN5, fake_cpu
from sfumato import AutoencoderKL
from sfumato.runtime import layout
from sfumato.runtime.cpu import cpu_info
from sfumato.runtime.layout import channels_last_pays, to_channels_first
from sfumato.runtime.packing import PackedConv2d, mkldnn_packing_available, pack_weights

needs_amx = pytest.mark.skipif(
    not (mkldnn_packing_available() and cpu_info().amx_bf16),
    reason="the route is taken, and bit-equal, with oneDNN's native bf16 kernels (AMX)",
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (2, 3, 64, 64), (2, 640, 33, 31), (1, 128, 96, 96)])
def test_to_channels_first_copies_a_channels_last_tensor_exactly(shape, dtype) -> None:
    x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    out = to_channels_first(x)
    assert out.is_contiguous() and not out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, x)


def test_the_route_takes_large_maps_that_do_not_narrow_many_channels() -> None:
    assert channels_last_pays(128, 128, 512, 512) and channels_last_pays(320, 320, 64, 64)
    assert channels_last_pays(256, 128, 256, 256)  # narrowing few channels still pays
    assert not channels_last_pays(512, 512, 32, 32)  # small map
    assert not channels_last_pays(640, 320, 64, 64) and not channels_last_pays(512, 256, 128, 128)


@pytest.fixture
def routed(monkeypatch) -> list[tuple]:
    """Each call of the channels-last route, recorded (on the Xeon with AMX the rule is measured on)."""
    fake_cpu(monkeypatch, SAPPHIRE)
    calls: list[tuple] = []
    route = layout.conv2d_channels_last

    def recording(x, *args):
        calls.append(tuple(x.shape))
        return route(x, *args)

    monkeypatch.setattr("sfumato.runtime.packing.conv2d_channels_last", recording)
    return calls


@needs_amx
@pytest.mark.parametrize("kernel", [3, 1])
def test_exact_bfloat16_convolutions_on_large_maps_run_channels_last_with_the_plain_values(
    routed, kernel
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, kernel, padding=kernel // 2).bfloat16()
    exact = copy.deepcopy(conv)
    assert pack_weights(exact, "neutral") == 1  # switched though nothing packs: not from a file
    large, small = (torch.randn(2, 16, side, side, dtype=torch.bfloat16) for side in (64, 32))
    with torch.no_grad():
        out = exact(large)
        assert routed == [large.shape]
        assert torch.equal(out, conv(large)) and out.is_contiguous()
        assert torch.equal(exact(small), conv(small)) and routed == [large.shape]  # small map: plain


@needs_amx
def test_the_route_is_for_exact_bfloat16_nchw_inputs_on_that_cpu_only(routed, monkeypatch) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1).bfloat16()
    fast, exact = copy.deepcopy(conv), copy.deepcopy(conv)
    pack_weights(fast, "all", exact=False)
    pack_weights(exact, "all")
    x = torch.randn(1, 16, 64, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        fast(x)  # fast mode keeps the packed kernels' channels-last output
        exact(x.contiguous(memory_format=torch.channels_last))  # already channels-last
        exact.float()(x.float())  # float32 has its own kernels (Winograd, oneDNN)
        assert routed == []
        fake_cpu(monkeypatch, ZEN5)  # not measured on AMD's AVX-512
        other = copy.deepcopy(conv)
        pack_weights(other, "all")
        other(x)
        assert routed == []


@needs_amx
def test_an_exact_bfloat16_vae_decodes_as_the_plain_one_bit_for_bit(routed) -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=8, latent_channels=4,
    ).eval().to(torch.bfloat16)  # fmt: skip
    exact = copy.deepcopy(vae)
    pack_weights(exact, "neutral", winograd=True)
    z = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with torch.inference_mode():
        expected, out = vae.decode(z).sample, exact.decode(z).sample
    assert any(shape[-1] >= 64 for shape in routed)  # the 64x64 and 128x128 maps took the route
    assert isinstance(exact.decoder.conv_out, PackedConv2d)
    assert torch.equal(out, expected)
