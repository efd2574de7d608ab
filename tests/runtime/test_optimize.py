"""`pipe.optimize()`: exact mode equals diffusers, fast mode stays close, the pipeline still saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.cpus import SAPPHIRE, ZEN3, ZEN5, fake_cpu
from sfumato.runtime import winograd
from sfumato.runtime.packing import MANY_ROWS, PackedConv2d, PackedLinear, mkldnn_packing_available
from sfumato.runtime.winograd import winograd_available

PROMPT = "a small red circle in the top left on a blue background"


def generate(pipe, size: int | None = None) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    return pipe(PROMPT, height=size, width=size, num_inference_steps=3, generator=g, output_type="np").images


def assert_vae_prepared_for_the_cpu(pipe) -> None:
    """Winograd (NCHW) where torch has NNPACK and it suits this CPU, else channels-last weights for oneDNN."""
    from sfumato.runtime.cpu import cpu_info
    from sfumato.runtime.optimize import _winograd_suits_vae

    conv = pipe.vae.decoder.conv_in
    if winograd_available() and _winograd_suits_vae(cpu_info()):
        assert isinstance(conv, PackedConv2d) and conv._sfumato_winograd and conv.weight.is_contiguous()
    else:
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("machine", ["amd-avx512", "intel-avx512"])
def test_exact_mode_equals_diffusers(sd_folder, monkeypatch, f4_calls, machine) -> None:
    import diffusers

    import sfumato

    fake_cpu(monkeypatch, {"amd-avx512": ZEN5, "intel-avx512": SAPPHIRE}[machine])  # what is packed
    monkeypatch.setattr(winograd, "OWN_MIN_CHANNELS", 1)  # this model's 32-64 channels take it too
    size = 256  # 32x32 latents: maps above and below the 16x16 of Intel's rule
    reference = generate(diffusers.StableDiffusionPipeline.from_pretrained(sd_folder), size)
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder).optimize()
    maps = {}  # each convolution's (enlarged) map side, each linear's rows
    for m in pipe.unet.modules():
        if isinstance(m, PackedConv2d):
            m.register_forward_pre_hook(lambda module, args: maps.__setitem__(module, args[0].shape[-1]))
            fused = m.forward_upsampled  # an upsampler's convolution, when it runs on the small map

            def recording(x, factor, m=m, fused=fused):
                maps[m] = x.shape[-1] * factor
                return fused(x, factor)

            monkeypatch.setattr(m, "forward_upsampled", recording)
        if isinstance(m, PackedLinear):
            m.register_forward_pre_hook(
                lambda module, args: maps.__setitem__(module, args[0].numel() // args[0].shape[-1])
            )
    assert_vae_prepared_for_the_cpu(pipe)
    assert np.abs(generate(pipe, size) - reference).max() < 1 / 255
    if not mkldnn_packing_available():
        return
    packed = [m for m in pipe.unet.modules() if isinstance(m, PackedConv2d | PackedLinear)]
    assert len(packed) > 10
    # the last convolution (to 4 latent channels) runs oneDNN's plain kernel, as diffusers does
    last = [m for m in packed if isinstance(m, PackedConv2d) and m.out_channels <= winograd.FEW_CHANNELS]
    assert [m.out_channels for m in last] == [4] and last[0]._sfumato_pack is None
    if machine == "amd-avx512":  # every other weight packed, and the packed kernels ran
        assert all(m._sfumato_pack is not None for m in packed if m not in last)
    else:  # float32 on Intel: oneDNN's own convolutions on large maps are as fast, MKL's few-row GEMMs too
        linears = [m for m in packed if isinstance(m, PackedLinear) and m in maps]
        assert linears  # (this model's attention runs at 16x16: 512 rows, none packed)
        assert all((m._sfumato_pack is not None) == (maps[m] >= MANY_ROWS) for m in linears)
        # 3x3: a 1x1 one takes the plain kernel for an NCHW input wherever it runs (runtime.packing)
        convs = [m for m in packed if isinstance(m, PackedConv2d) and m.kernel_size == (3, 3)]
        # packed on maps up to 16x16; from 32x32 on Winograd (these convolutions have 32-64 channels)
        assert {m._sfumato_pack is not None for m in convs} == {True, False}
        assert all((m._sfumato_pack is not None) == (maps[m] <= 16) for m in convs)
        unet_maps = {shape[1:] for shape in f4_calls if shape[0] == 2}  # the UNet's CFG batch
        few = winograd.FEW_CHANNELS  # to or from 4 channels: never Winograd
        wide = [m for m in convs if maps[m] >= 32 and min(m.in_channels, m.out_channels) > few]
        assert {(m.in_channels, maps[m], maps[m]) for m in wide} == unet_maps
        assert not any(shape[1] <= few for shape in f4_calls)


def test_exact_mode_is_the_default_and_can_be_turned_off(sd_folder) -> None:
    import sfumato

    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    assert_vae_prepared_for_the_cpu(pipe)
    if mkldnn_packing_available():
        assert isinstance(pipe.unet.conv_in, PackedConv2d)
    plain = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder, optimize=False)
    assert plain.vae.decoder.conv_in.weight.is_contiguous()
    assert not any(
        isinstance(m, PackedConv2d | PackedLinear) for m in [*plain.unet.modules(), *plain.vae.modules()]
    )
    unpacked = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder, optimize=False).optimize(
        packing=False, winograd=False
    )
    assert not any(isinstance(m, PackedConv2d | PackedLinear) for m in unpacked.unet.modules())


def test_a_pipeline_loaded_and_run_under_inference_mode_packs_and_matches(sd_folder) -> None:
    """Under `torch.inference_mode()` loading made inference tensors, whose writes torch does not
    count: packing asked for their version and crashed. Weights load as normal tensors now."""
    import sfumato

    expected = generate(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder))
    with torch.inference_mode():
        pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
        assert not any(p.is_inference() for p in pipe.unet.parameters())
        np.testing.assert_array_equal(generate(pipe), expected)
    if mkldnn_packing_available():
        assert pipe.unet.conv_in._sfumato_pack is not None


@pytest.mark.skipif(not winograd._nnpack_available(), reason="needs a torch build with NNPACK")
@pytest.mark.parametrize("machine", ["avx2", "avx512", "intel-avx512"])
def test_exact_mode_with_winograd_equals_diffusers_on_large_maps(
    sd_folder, nnpack_calls, f4_calls, monkeypatch, machine
) -> None:
    import diffusers

    import sfumato

    machines = {"avx2": ZEN3, "avx512": ZEN5, "intel-avx512": SAPPHIRE}
    fake_cpu(monkeypatch, machines[machine])  # which maps take Winograd
    monkeypatch.setattr(winograd, "OWN_MIN_CHANNELS", 1)  # this model's 8-64 channels take it too

    size = 512  # 64x64 latents: the UNet's first and last convolutions and the whole VAE decoder qualify
    reference = generate(diffusers.StableDiffusionPipeline.from_pretrained(sd_folder), size)
    nnpack_calls.clear()
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    image = generate(pipe, size)
    assert image.shape == reference.shape == (1, size, size, 3)
    assert np.abs(image - reference).max() < 1 / 255
    assert (2, 8, 512, 512) not in nnpack_calls
    assert_vae_prepared_for_the_cpu(pipe)
    if machine == "intel-avx512":  # our F(4x4, 3x3) everywhere, NNPACK nowhere
        assert not nnpack_calls
        assert (1, 8, 512, 512) in f4_calls  # the VAE decoder
        assert (2, 32, 64, 64) in f4_calls  # the UNet's 64x64 maps, both CFG halves in one call
        return
    # AVX2: ours on the UNet's 32x32 maps (its second level), NNPACK from 64x64
    assert bool(f4_calls) == (machine == "avx2")
    assert all(shape[2:] == (32, 32) for shape in f4_calls)
    assert ((2, 64, 32, 32) in f4_calls) == (machine == "avx2")
    # the VAE decoder, per sample; channels-last on AMD's AVX-512
    assert ((1, 8, 512, 512) in nnpack_calls) == (machine != "avx512")
    # the UNet's 64x64 maps (32 channels) on AVX2 only: AVX-512 oneDNN beats NNPACK there
    assert any(shape[:2] == (1, 32) and shape[2:] == (64, 64) for shape in nnpack_calls) == (
        machine == "avx2"
    )


def test_leaving_the_cpu_restores_the_plain_layout(sd_folder) -> None:
    import sfumato

    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    pipe.to("meta")  # stands in for CUDA / MPS: any device that is not the CPU
    assert all(p.is_contiguous() for p in pipe.vae.parameters())


def test_fast_mode_stays_close_to_exact(sd_folder) -> None:
    import sfumato
    from sfumato.runtime import fast_dtype

    exact = generate(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder))
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder).optimize("fast")
    assert pipe.unet.dtype == fast_dtype("cpu")
    assert (
        np.abs(generate(pipe) - exact).mean() < 0.02
    )  # bf16 on native-bf16 CPUs; identical layout math else


def test_optimized_pipeline_saves_and_reloads(sd_folder, tmp_path) -> None:
    import sfumato

    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder).optimize()
    pipe.save_pretrained(tmp_path / "saved")
    again = sfumato.StableDiffusionPipeline.from_pretrained(tmp_path / "saved")
    for name, value in pipe.unet.state_dict().items():
        assert torch.equal(value, again.unet.state_dict()[name]), name


def test_unknown_mode_is_refused(sd_folder) -> None:
    import sfumato

    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    with pytest.raises(ValueError, match='"exact" or "fast"'):
        pipe.optimize("turbo")


def test_compiled_unet_stays_close_to_eager_and_says_it_compiles(sd_folder, caplog) -> None:
    import logging

    import sfumato

    eager = generate(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder))
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    with caplog.at_level(logging.WARNING, logger="sfumato.runtime.optimize"):
        pipe.optimize(compile=True)
    assert "compiling the UNet" in caplog.text and "cached in" in caplog.text
    assert not any(isinstance(m, PackedConv2d | PackedLinear) for m in pipe.unet.modules())
    assert np.abs(generate(pipe) - eager).max() < 1 / 255


def test_a_user_compiled_unet_runs_through_the_packed_modules(sd_folder) -> None:
    import sfumato

    eager = generate(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder))
    pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder)
    pipe.unet = torch.compile(pipe.unet)  # what diffusers' docs tell users to do
    assert np.abs(generate(pipe) - eager).max() < 1 / 255


def test_exact_mode_in_bfloat16_equals_diffusers(sd_folder) -> None:
    """bf16 rounding grows over the steps: every op must round like diffusers' for the images to agree."""
    import warnings

    import diffusers

    import sfumato
    from sfumato.runtime.dtypes import SlowDtypeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowDtypeWarning)  # a tiny model: slow bf16 kernels don't matter
        reference = generate(
            diffusers.StableDiffusionPipeline.from_pretrained(sd_folder, torch_dtype=torch.bfloat16)
        )
        pipe = sfumato.StableDiffusionPipeline.from_pretrained(sd_folder, torch_dtype=torch.bfloat16)
        image = generate(pipe)
    assert np.abs(image - reference).max() < 1 / 255
    from sfumato.runtime.cpu import cpu_info

    if mkldnn_packing_available() and cpu_info().native_bf16:  # cast at load, packed all the same
        convs = [m for m in pipe.unet.modules() if isinstance(m, PackedConv2d) and m.kernel_size == (3, 3)]
        assert convs and all(m._sfumato_pack is not None for m in convs)
        linears = [m for m in pipe.unet.modules() if isinstance(m, PackedLinear)]
        assert all(m._sfumato_pack is None for m in linears)  # F.linear's rounding kept


@pytest.mark.skipif(not mkldnn_packing_available(), reason="needs torch's oneDNN packed-weight ops (x86)")
def test_exact_mode_with_long_attention_equals_diffusers(sd_folder, monkeypatch) -> None:
    """768 px: the tiny UNet's attention runs over 48x48 = 2304 tokens, oneDNN's chunks on AVX-512."""
    import diffusers

    import sfumato
    from sfumato.runtime import attention

    fake_cpu(monkeypatch, ZEN5)
    used = []
    original = attention.attend_in_chunks
    monkeypatch.setattr(attention, "attend_in_chunks", lambda *a, **kw: used.append(kw) or original(*a, **kw))
    reference = generate(diffusers.StableDiffusionPipeline.from_pretrained(sd_folder), 768)
    image = generate(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder), 768)
    assert used and all(kw == {"packed": True} for kw in used)
    assert np.abs(image - reference).max() < 1 / 255
