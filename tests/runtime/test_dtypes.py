"""CPU capability reading, `torch_dtype="fast"`, and the slow-dtype warnings (CPU faked)."""

from __future__ import annotations

import warnings

import pytest
import torch

from fixtures.cpus import SAPPHIRE, ZEN3, ZEN5, fake_cpu
from sfumato.runtime import cpu
from sfumato.runtime.dtypes import SlowDtypeWarning, slow_dtype_message


def test_parse_cpuinfo_reads_the_first_processor() -> None:
    info = cpu.parse_cpuinfo(ZEN3 + "model name\t: other\nflags\t: avx512_bf16\n", "AVX2")
    assert info.model == "AMD EPYC 7B13"
    assert "avx2" in info.flags and "avx512_bf16" not in info.flags
    assert info.vendor == "AuthenticAMD" and not info.intel
    intel = cpu.parse_cpuinfo(SAPPHIRE, "AVX512")
    assert intel.intel and intel.amx_bf16


@pytest.mark.parametrize(
    ("text", "bf16", "fp16", "fast"),
    [
        (ZEN3, False, False, torch.float32),
        (ZEN5, True, False, torch.bfloat16),
        (SAPPHIRE, True, True, torch.bfloat16),
    ],
)
def test_fast_dtype_follows_the_isa(monkeypatch, text, bf16, fp16, fast) -> None:
    info = fake_cpu(monkeypatch, text)
    assert (info.native_bf16, info.native_fp16) == (bf16, fp16)
    assert cpu.fast_dtype("cpu") == fast
    assert cpu.fast_dtype("cuda") == torch.float16  # no CUDA needed to answer
    assert info.is_slow(torch.bfloat16) is not bf16
    assert not info.is_slow(torch.float32)


def test_the_real_cpu_is_read() -> None:
    info = cpu.cpu_info()
    assert info.model and info.capability
    assert info.isa.startswith(info.capability)


def test_message_names_the_cost_and_the_fix(monkeypatch) -> None:
    fake_cpu(monkeypatch, ZEN3)
    message = slow_dtype_message(torch.bfloat16)
    assert "bfloat16" in message and "AMD EPYC 7B13" in message and "100-500x slower" in message
    assert "torch_dtype=torch.float32" in message and 'torch_dtype="fast"' in message
    assert slow_dtype_message(torch.float32) is None
    fake_cpu(monkeypatch, ZEN5)
    assert slow_dtype_message(torch.bfloat16) is None
    assert "float16" in slow_dtype_message(torch.float16)


def test_loading_in_a_slow_dtype_warns_at_load(monkeypatch, sd_folder) -> None:
    from sfumato import StableDiffusionPipeline

    fake_cpu(monkeypatch, ZEN3)
    with pytest.warns(SlowDtypeWarning, match="float16") as record:
        StableDiffusionPipeline.from_pretrained(sd_folder, torch_dtype=torch.float16)
    assert record[0].filename == __file__  # points at the user's line


def test_to_a_slow_dtype_warns_once_and_before_the_first_step(monkeypatch, sd_folder) -> None:
    from sfumato import StableDiffusionPipeline

    fake_cpu(monkeypatch, ZEN3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 is fine: nothing may warn
        pipe = StableDiffusionPipeline.from_pretrained(sd_folder)
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(SlowDtypeWarning, match="bfloat16"):
        pipe.to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.to(torch.bfloat16)  # same dtype again: already said

    # a pipeline whose modules were cast behind its back warns when called, before the UNet runs
    pipe = StableDiffusionPipeline.from_pretrained(sd_folder)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.to(torch.bfloat16)
    seen = []
    pipe.unet.register_forward_pre_hook(lambda *_: seen.append(len(caught)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe("a cat", num_inference_steps=1, output_type="latent")
    assert [w.category for w in caught] == [SlowDtypeWarning]
    assert seen and seen[0] == 1  # the warning came before the first UNet call


def test_fast_dtype_option(monkeypatch, sd_folder) -> None:
    from sfumato import StableDiffusionPipeline, UNet2DConditionModel

    fake_cpu(monkeypatch, ZEN5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe = StableDiffusionPipeline.from_pretrained(sd_folder, torch_dtype="fast")
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
    fake_cpu(monkeypatch, ZEN3)
    assert (
        UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet", torch_dtype="fast").dtype
        == torch.float32
    )
    assert pipe.to("fast").unet.dtype == torch.float32
    with pytest.raises(TypeError, match='or "fast"'):
        UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet", torch_dtype="quick")
