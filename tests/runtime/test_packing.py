"""Packed oneDNN weights: same results as the plain modules, never stale, never a second resident copy."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fixtures.cpus import SAPPHIRE, ZEN3, fake_cpu
from sfumato.runtime.cpu import cpu_info
from sfumato.runtime.packing import (
    MANY_ROWS,
    PackedConv2d,
    PackedLinear,
    mkldnn_packing_available,
    pack_weights,
    unpack_weights,
)

pytestmark = pytest.mark.skipif(not mkldnn_packing_available(), reason="needs x86 torch with oneDNN")


@pytest.fixture(autouse=True)
def every_float32_weight_packs(monkeypatch):
    """The packing's mechanics on a CPU where it packs every float32 weight (AMD's; not Intel's, below)."""
    fake_cpu(monkeypatch, ZEN3)


CASES = [
    (nn.Conv2d(64, 96, 3, padding=1), (2, 64, 16, 16)),
    (nn.Conv2d(4, 64, 3, padding=1), (1, 4, 8, 8)),
    (nn.Conv2d(64, 64, 3, stride=2, padding=1), (2, 64, 16, 16)),
    (nn.Conv2d(96, 32, 1, bias=False), (2, 96, 8, 8), torch.channels_last),
    (nn.Linear(64, 256), (2, 77, 64)),
    (nn.Linear(128, 64, bias=False), (3, 128)),
]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("case", CASES, ids=lambda c: type(c[0]).__name__)
def test_packed_modules_match_the_plain_ones(case: tuple) -> None:
    module, shape, *layout = case
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=layout[0] if layout else torch.contiguous_format)
    with torch.no_grad():
        expected = module(x)
        packed = copy.deepcopy(module)
        assert pack_weights(packed, "all") == 1
        assert type(packed) in (PackedConv2d, PackedLinear)
        first, second = packed(x), packed(x)
    assert packed._sfumato_pack is not None  # the oneDNN path ran, not the fallback
    assert relative_difference(first, expected) < 1e-5
    assert torch.equal(first, second)


def test_a_1x1_convolution_keeps_an_nchw_input_nchw() -> None:
    """Packed kernels compute channels-last; after NCHW layers (Winograd's) a 1x1 stays NCHW instead."""
    torch.manual_seed(0)
    conv = nn.Conv2d(96, 32, 1)
    packed = copy.deepcopy(conv)
    pack_weights(packed, "all")
    x = torch.randn(1, 96, 16, 16)
    with torch.no_grad():
        out, expected = packed(x), conv(x)
        assert packed._sfumato_pack is None  # no packed copy made for an NCHW input
        assert out.is_contiguous() and not out.is_contiguous(memory_format=torch.channels_last)
        assert relative_difference(out, expected) < 1e-5
        channels_last = packed(x.contiguous(memory_format=torch.channels_last))
        assert packed._sfumato_pack is not None
        assert channels_last.is_contiguous(memory_format=torch.channels_last)
        packed(x)  # NCHW again: the packed copy goes rather than sit beside the weight's pages
    assert packed._sfumato_pack is None


def test_conv_weights_are_staged_channels_last_in_a_scratch_released_after_the_forward() -> None:
    from sfumato.runtime import packing

    torch.manual_seed(0)
    convs = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 8, 3))
    model = nn.Sequential(convs)  # released after the root's children: here, after all three
    plain = copy.deepcopy(model)
    pack_weights(model, "all")
    staged = []
    original = packing._staged_channels_last

    def spy(weight: torch.Tensor) -> torch.Tensor:
        out = original(weight)
        staged.append((out.data_ptr(), packing._scratch.buffer.data_ptr(), torch.equal(out, weight)))
        assert out.is_contiguous(memory_format=torch.channels_last)
        return out

    packing._staged_channels_last = spy
    try:
        x = torch.randn(2, 8, 12, 12)
        with torch.no_grad():
            assert relative_difference(model(x), plain(x)) < 1e-5
    finally:
        packing._staged_channels_last = original
    assert len(staged) == 3 and all(same for *_, same in staged)  # equal values, in the scratch
    assert all(ptr == buffer for ptr, buffer, _ in staged)
    assert packing._scratch.buffer is None  # the forward hook let it go
    unpack_weights(model)
    assert not model._forward_hooks and "_sfumato_release_hooks" not in model.__dict__


def test_weights_made_under_inference_mode_take_the_plain_path() -> None:
    with torch.inference_mode():
        conv = nn.Conv2d(8, 8, 3, padding=1)  # an inference tensor: writes to it are not counted
        pack_weights(conv, "all")
        x = torch.randn(1, 8, 6, 6)
        out = conv(x)
        assert conv._sfumato_pack is None  # a packed copy could go stale unseen
        conv.weight.mul_(2)
        torch.testing.assert_close(conv(x) - conv.bias[:, None, None], 2 * (out - conv.bias[:, None, None]))


def test_a_packed_module_pickles_without_its_packed_copy_and_repacks() -> None:
    import io

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 36, 4))
    pack_weights(model, "all")
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        expected = model(x)
    assert model[0]._sfumato_pack is not None
    buffer = io.BytesIO()
    torch.save(model, buffer)  # oneDNN's opaque tensor has no storage: this raised before
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded[0]._sfumato_pack is None and model[0]._sfumato_pack is not None
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert loaded[0]._sfumato_pack is not None  # packed again at its first call


def test_a_new_input_shape_repacks_and_stays_correct() -> None:
    conv = nn.Conv2d(32, 32, 3, padding=1)
    packed = copy.deepcopy(conv)
    pack_weights(packed, "all")
    with torch.no_grad():
        for size in (8, 16, 8, 32):
            x = torch.randn(2, 32, size, size)
            assert relative_difference(packed(x), conv(x)) < 1e-5
            assert packed._sfumato_pack_key[0] == tuple(x.shape)


def test_a_weight_changed_in_place_is_never_served_stale() -> None:
    linear = nn.Linear(64, 64)
    pack_weights(linear, "all")
    x = torch.randn(4, 64)
    with torch.no_grad():
        linear(x)  # packs the original weight
        linear.weight.mul_(2.0)
        expected = torch.nn.functional.linear(x, linear.weight, linear.bias)
        assert relative_difference(linear(x), expected) < 1e-5


def test_autograd_and_other_dtypes_take_the_plain_path() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1)
    pack_weights(conv, "all")
    x = torch.randn(1, 8, 8, 8, requires_grad=True)
    conv(x).sum().backward()
    assert conv.weight.grad is not None and x.grad is not None
    assert conv._sfumato_pack is None
    conv.double()
    with torch.no_grad():
        out = conv(x.detach().double())
    assert out.dtype == torch.float64 and conv._sfumato_pack is None


def test_cpu_autocast_keeps_its_dtypes() -> None:
    conv, linear = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(16, 16)
    pack_weights(conv, "all")
    pack_weights(linear, "all")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(torch.randn(1, 8, 8, 8)).dtype == torch.bfloat16
        assert linear(torch.randn(2, 16)).dtype == torch.bfloat16


def test_state_dict_is_unchanged_and_unpacking_restores_the_classes() -> None:
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    keys = list(model.state_dict())
    assert pack_weights(model, "all") == 2
    with torch.no_grad():
        model(torch.randn(1, 4, 4, 4))
    assert list(model.state_dict()) == keys
    assert unpack_weights(model) == 2
    assert [type(m) for m in model] == [nn.Conv2d, nn.Flatten, nn.Linear]
    assert not any(name.startswith("_sfumato") for m in model for name in vars(m))


def test_neutral_policy_packs_only_weights_used_in_place_from_a_file(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    mapped = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
    mapped.load_state_dict(load_file(tmp_path / "m.safetensors"), assign=True)  # mmapped in place
    mapped[1].weight.data = mapped[1].weight.data.clone()  # this one now lives in the heap
    assert pack_weights(model, "neutral") == 0
    assert pack_weights(mapped, "neutral") == 1
    assert type(mapped[0]) is PackedLinear and type(mapped[1]) is nn.Linear
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert relative_difference(mapped(x), model(x)) < 1e-5
        mapped.to(torch.bfloat16).float()  # cast away from the file: a pack would be a second copy
        mapped(x)
        assert mapped[0]._sfumato_pack is None
        assert pack_weights(mapped, "all") == 2  # asked for: the packed module takes the new policy
        assert relative_difference(mapped(x), model(x)) < 1e-2  # bf16 round trip of the weights
    assert mapped[0]._sfumato_pack is not None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only (/proc)")
def test_packing_mmapped_weights_does_not_grow_resident_memory(tmp_path) -> None:
    import subprocess
    import textwrap

    layers = {
        f"{i}.weight": torch.randn(2048, 4096, generator=torch.Generator().manual_seed(i)) for i in range(8)
    }
    save_file(layers, tmp_path / "m.safetensors")  # 256 MiB of fp32
    del layers
    script = textwrap.dedent(
        f"""
        import torch
        from torch import nn
        from safetensors.torch import load_file
        from sfumato.runtime.packing import pack_weights
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        model = nn.Sequential(*[nn.Linear(4096, 2048, bias=False) for _ in range(8)])
        model.load_state_dict(load_file({str(tmp_path / "m.safetensors")!r}), assign=True)
        x = torch.randn(16, 4096)
        with torch.no_grad():
            plain = [layer(x) for layer in model]  # every weight paged in
            before = rss()
            assert pack_weights(model) == 8
            packed = [layer(x) for layer in model]
        assert all(float((a - b).abs().max()) < 1e-3 for a, b in zip(plain, packed))
        print(rss() - before)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    growth = int(result.stdout.split()[-1])
    assert growth < 64 * 2**20, (
        f"resident memory grew by {growth / 2**20:.0f} MiB for 256 MiB of packed weights"
    )


def test_on_intel_avx512_float32_convolutions_pack_only_on_small_maps(monkeypatch) -> None:
    """oneDNN's own convolutions on large maps are as fast there: packing them only cost time in the
    first call."""
    fake_cpu(monkeypatch, SAPPHIRE)
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    packed_conv = copy.deepcopy(conv)
    pack_weights(packed_conv, "all")
    with torch.no_grad():
        small, large = torch.randn(2, 16, 16, 16), torch.randn(2, 16, 32, 32)
        assert relative_difference(packed_conv(small), conv(small)) < 1e-5
        assert packed_conv._sfumato_pack is not None
        assert torch.equal(packed_conv(large), conv(large))  # oneDNN's plain kernel, as nn.Conv2d
        assert packed_conv._sfumato_pack is None  # the small map's copy went


@pytest.mark.skipif(not cpu_info().native_bf16, reason="oneDNN's bf16 kernels need native bf16")
def test_on_intel_avx512_bfloat16_convolutions_on_large_maps_pack_in_fast_mode_only(monkeypatch) -> None:
    """Exact mode would copy a packed output back to NCHW, which the plain kernel does not need;
    fast mode keeps the packed kernels' channels-last output for the next ops."""
    fake_cpu(monkeypatch, SAPPHIRE)
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, padding=1).bfloat16()
    exact, fast = copy.deepcopy(conv), copy.deepcopy(conv)
    pack_weights(exact, "all")
    pack_weights(fast, "all", exact=False)
    small, large = (torch.randn(2, 16, side, side, dtype=torch.bfloat16) for side in (16, 32))
    with torch.no_grad():
        assert torch.equal(exact(small), conv(small)) and exact._sfumato_pack is not None
        assert torch.equal(exact(large), conv(large)) and exact._sfumato_pack is None
        assert relative_difference(fast(large).float(), conv(large).float()) < 1e-2
        assert fast._sfumato_pack is not None


def test_on_intel_avx512_float32_linears_pack_only_with_many_rows(monkeypatch) -> None:
    """MKL's GEMM is about as fast there: a reorder pays only with many rows. Never mid-run: a
    pipeline's results stay the same from one image to the next."""
    from sfumato.nn.transformer import GEGLU

    fake_cpu(monkeypatch, SAPPHIRE)
    torch.manual_seed(0)
    linear, geglu = nn.Linear(64, 64), GEGLU(64, 32)
    packed_linear, packed_geglu = copy.deepcopy(linear), copy.deepcopy(geglu)
    pack_weights(packed_linear, "all")
    pack_weights(packed_geglu, "all", exact=False)  # fused where packed
    few, many = torch.randn(8, 64), torch.randn(MANY_ROWS, 64)
    with torch.no_grad():
        for _ in range(40):
            assert torch.equal(packed_linear(few), linear(few))  # F.linear, as nn.Linear
            assert torch.equal(packed_geglu(few), geglu(few))
        assert packed_linear._sfumato_pack is None and packed_geglu.proj._sfumato_pack is None
        assert relative_difference(packed_linear(many), linear(many)) < 1e-5
        assert packed_linear._sfumato_pack is not None
        assert relative_difference(packed_geglu(many), geglu(many)) < 1e-5
        assert isinstance(packed_geglu.proj._sfumato_pack, tuple)  # packed and fused
        assert torch.equal(packed_linear(few), linear(few))  # few rows again: plain, the copy gone
        assert packed_linear._sfumato_pack is None


@pytest.mark.parametrize(("batch", "bias"), [(1, True), (2, False), (3, True)])
def test_a_1x1_convolution_of_an_nchw_input_is_one_matrix_product_per_sample(batch, bias) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 24, 1, bias=bias)
    packed = copy.deepcopy(conv)
    pack_weights(packed, "all")
    x = torch.randn(batch, 48, 8, 8)
    with torch.no_grad():
        out = packed(x)
        assert out.shape == (batch, 24, 8, 8) and out.is_contiguous()
        assert relative_difference(out, conv(x)) < 1e-5
        strided = nn.Conv2d(48, 24, 1, stride=2)  # not a plain product: nn.Conv2d's own forward
        packed_strided = copy.deepcopy(strided)
        pack_weights(packed_strided, "all")
        assert torch.equal(packed_strided(x), strided(x))


def test_geglu_applies_its_gelu_inside_the_packed_gate_projection() -> None:
    from sfumato.nn.transformer import GEGLU

    torch.manual_seed(0)
    plain = GEGLU(32, 64)
    fused = copy.deepcopy(plain)
    pack_weights(fused, "all", exact=False)
    x = torch.randn(2, 40, 32) * 3
    with torch.no_grad():
        out, expected = fused(x), plain(x)
    assert isinstance(fused.proj._sfumato_pack, tuple)  # the two halves packed apart: the fused path ran
    assert out.shape == expected.shape == (2, 40, 64)
    assert relative_difference(out, expected) < 1e-5
    with torch.no_grad():  # the projection called on its own still gives the whole 2x wide output
        assert relative_difference(fused.proj(x), plain.proj(x)) < 1e-5


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [
        (torch.float32, 1e-5),
        pytest.param(
            torch.bfloat16, 2e-2,
            marks=pytest.mark.skipif(not cpu_info().native_bf16, reason="oneDNN's bf16 kernels need native bf16"),
        ),
    ],
)  # fmt: skip
def test_geglu_fuses_only_outside_exact_mode(monkeypatch, dtype, tolerance) -> None:
    """Fused, the GELU sees the float32 sums before bf16 rounding: not diffusers' bf16 values."""
    from sfumato.nn.transformer import GEGLU

    fake_cpu(monkeypatch, SAPPHIRE)  # native bf16: bf16 weights are packed
    torch.manual_seed(0)
    plain = GEGLU(32, 64).to(dtype)
    exact, fast = copy.deepcopy(plain), copy.deepcopy(plain)
    pack_weights(exact, "all")
    pack_weights(fast, "all", exact=False)
    x = torch.randn(MANY_ROWS, 32, dtype=dtype) * 3  # rows that pack on Intel in float32 too
    with torch.no_grad():
        expected = plain(x)
        exact_out = exact(x)
        assert not isinstance(exact.proj._sfumato_pack, tuple)  # the projection, then the GELU
        close = fast(x)
    assert isinstance(fast.proj._sfumato_pack, tuple)
    if dtype == torch.bfloat16:  # the separate ops, rounded as the plain module rounds
        assert torch.equal(exact_out, expected)
    else:
        assert relative_difference(exact_out, expected) < 1e-5
    assert relative_difference(close.float(), expected.float()) < tolerance


@pytest.mark.skipif(not cpu_info().native_bf16, reason="oneDNN's bf16 kernels need native bf16")
def test_in_exact_mode_bfloat16_packed_modules_give_the_plain_ones_values_and_layout(monkeypatch) -> None:
    """bf16 rounding differences grow over the steps: exact mode must be bit for bit, layout included
    (a GroupNorm sums a channels-last input in another order)."""
    fake_cpu(monkeypatch, SAPPHIRE)
    torch.manual_seed(0)
    conv, linear = nn.Conv2d(64, 64, 3, padding=1).bfloat16(), nn.Linear(640, 64).bfloat16()
    packed_conv, packed_linear = copy.deepcopy(conv), copy.deepcopy(linear)
    pack_weights(packed_conv, "all")
    pack_weights(packed_linear, "all")
    x, rows = torch.randn(2, 64, 8, 8, dtype=torch.bfloat16), torch.randn(512, 640, dtype=torch.bfloat16)
    with torch.no_grad():
        out = packed_conv(x)
        assert packed_conv._sfumato_pack is not None
        assert torch.equal(out, conv(x)) and out.is_contiguous()
        assert torch.equal(packed_linear(rows), linear(rows))
        assert packed_linear._sfumato_pack is None  # F.linear: the packed GEMM rounded differently
