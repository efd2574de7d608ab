"""DiffusionPipeline: loading through model_index.json, overrides, saving, device/dtype helpers."""

import json
import logging

import pytest
import torch

from sfumato import DDIMPipeline, DDPMPipeline, DiffusionPipeline
from sfumato.pipelines import text
from sfumato.schedulers import DDIMScheduler, DDPMScheduler


class TextPipe(DiffusionPipeline):
    """A test pipeline with transformers components, a scheduler and a plain config value."""

    _optional_components = ("feature_extractor",)

    def __init__(self, tokenizer, text_encoder, scheduler, feature_extractor=None, flag: bool = True):
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            scheduler=scheduler,
            feature_extractor=feature_extractor,
        )
        self.register_to_config(flag=flag)


@pytest.fixture
def pipe(tokenizers, text_encoders):
    return TextPipe(tokenizers[0], text_encoders[0], DDIMScheduler(steps_offset=1))


@pytest.fixture
def saved(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    return tmp_path / "p"


def _embed(p):
    with torch.no_grad():
        return text.encode_prompt(
            p.tokenizer, p.text_encoder, "a cat", do_classifier_free_guidance=False
        ).prompt_embeds


def test_save_writes_diffusers_layout(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "TextPipe"
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["feature_extractor"] == [None, None] and index["flag"] is True
    assert (saved / "scheduler" / "scheduler_config.json").is_file()
    assert (saved / "text_encoder" / "model.safetensors").is_file()


def test_round_trip(pipe, saved):
    loaded = TextPipe.from_pretrained(saved)
    assert loaded.feature_extractor is None and loaded.config.flag is True
    assert loaded.scheduler.config.steps_offset == 1
    assert loaded.config._name_or_path == str(saved)
    torch.testing.assert_close(_embed(loaded), _embed(pipe))


def test_overrides_and_init_kwargs(saved, caplog):
    other = DDPMScheduler()
    loaded = TextPipe.from_pretrained(saved, scheduler=other, flag=False, text_encoder=None)
    assert loaded.scheduler is other and loaded.text_encoder is None and loaded.config.flag is False
    assert loaded.config.scheduler == ("diffusers", "DDPMScheduler")
    with pytest.raises(TypeError, match="unexpected arguments \\['bogus'\\]"):
        TextPipe.from_pretrained(saved, bogus=1)


def test_dtype_per_component(saved):
    loaded = TextPipe.from_pretrained(
        saved, torch_dtype={"text_encoder": torch.float16, "default": torch.float32}
    )
    assert loaded.text_encoder.dtype == torch.float16 and loaded.dtype == torch.float16
    assert TextPipe.from_pretrained(saved).dtype == torch.float32
    assert loaded.to(torch.float64).text_encoder.dtype == torch.float64
    assert loaded.device.type == "cpu"


def test_missing_and_unknown_components(saved):
    index_path = saved / "model_index.json"
    index = json.loads(index_path.read_text())
    broken = {k: v for k, v in index.items() if k != "text_encoder"}
    index_path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="expects components \\['text_encoder'\\]"):
        TextPipe.from_pretrained(saved)
    assert TextPipe.from_pretrained(saved, text_encoder=None).text_encoder is None
    index_path.write_text(json.dumps({**index, "text_encoder": ["mylib", "MyEncoder"]}))
    with pytest.raises(ValueError, match="library 'mylib'"):
        TextPipe.from_pretrained(saved)
    index_path.write_text(json.dumps({**index, "_class_name": "NoSuchPipeline"}))
    with pytest.raises(ValueError, match="'NoSuchPipeline', which sfumato does not implement"):
        DiffusionPipeline.from_pretrained(saved)


def test_safety_checker_and_feature_extractor_entries(saved, caplog):
    import transformers

    index_path = saved / "model_index.json"
    index = json.loads(index_path.read_text())
    index["feature_extractor"] = ["transformers", "CLIPFeatureExtractor"]
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index_path.write_text(json.dumps(index))
    transformers.CLIPImageProcessor().save_pretrained(saved / "feature_extractor")
    with caplog.at_level(logging.WARNING):
        loaded = TextPipe.from_pretrained(saved)
    assert isinstance(loaded.feature_extractor, transformers.CLIPImageProcessor)
    assert "safety_checker" in caplog.text  # listed but not a TextPipe component: noted once


def test_components_repr_setattr_and_from_pipe(pipe):
    assert list(pipe.components) == ["tokenizer", "text_encoder", "scheduler", "feature_extractor"]
    shown = repr(pipe)
    assert "TextPipe(" in shown and "text_encoder: CLIPTextModel" in shown and "flag=True" in shown
    pipe.scheduler = DDPMScheduler()
    assert pipe.config.scheduler == ("diffusers", "DDPMScheduler")
    copy = TextPipe.from_pipe(pipe, flag=False)
    assert copy.text_encoder is pipe.text_encoder and copy.config.flag is False


def test_progress_bar_config_and_offload(pipe, caplog):
    pipe.set_progress_bar_config(disable=True)
    assert pipe.progress_bar_config == {"disable": True}
    if not torch.cuda.is_available():
        with caplog.at_level(logging.WARNING):
            pipe.enable_model_cpu_offload()
        assert "no GPU" in caplog.text


def _unet():
    from sfumato import UNet2DModel

    return UNet2DModel(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip


def test_from_pipe_across_unconditional_pipelines():
    ddpm = DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler())
    ddim = DDIMPipeline.from_pipe(ddpm)
    assert ddim.unet is ddpm.unet and type(ddim.scheduler).__name__ == "DDIMScheduler"


def test_wrong_model_kind_is_a_type_error(tmp_path):
    from sfumato import AutoencoderKL

    DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    vae = AutoencoderKL(
        block_out_channels=(8,), norm_num_groups=4, down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
    )  # fmt: skip
    with pytest.raises(TypeError, match="`unet` must be a UNet2DModel, got AutoencoderKL"):
        DDPMPipeline.from_pretrained(tmp_path, unet=vae)


def test_hub_id_from_the_cache_offline(tmp_path, monkeypatch):
    import shutil

    from sfumato.hub import HubError

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--org--tiny-ddpm"
    DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path / "src")
    shutil.copytree(tmp_path / "src", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = DiffusionPipeline.from_pretrained("org/tiny-ddpm")
    assert type(pipe).__name__ == "DDPMPipeline" and pipe.config._name_or_path == "org/tiny-ddpm"
    with pytest.raises(HubError, match="org/not-cached"):
        DiffusionPipeline.from_pretrained("org/not-cached")


def test_deleted_component_folder_is_named(tmp_path):
    import shutil

    DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    shutil.rmtree(tmp_path / "unet")
    with pytest.raises(FileNotFoundError, match="unet"):
        DDPMPipeline.from_pretrained(tmp_path)


def test_diffusers_loading_options(saved):
    index_path = saved / "model_index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(
        json.dumps({**index, "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]})
    )
    # tutorial-style kwargs: no-ops here, or a component the class does not have set to None
    loaded = TextPipe.from_pretrained(
        saved, low_cpu_mem_usage=True, use_safetensors=True, safety_checker=None
    )
    assert loaded.text_encoder is not None
    with pytest.raises(ValueError, match="`custom_pipeline` is not supported"):
        TextPipe.from_pretrained(saved, custom_pipeline="lpw_stable_diffusion")
    with pytest.raises(ValueError, match="`use_onnx=True` is not supported"):
        TextPipe.from_pretrained(saved, use_onnx=True)


def test_unsaveable_component_fails_before_writing(pipe, tmp_path):
    pipe.feature_extractor = object()
    with pytest.raises(TypeError, match="\\['feature_extractor'\\]"):
        pipe.save_pretrained(tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_passed_component_replaces_an_unloadable_entry(saved, text_encoders):
    index_path = saved / "model_index.json"
    index = json.loads(index_path.read_text())
    index_path.write_text(json.dumps({**index, "text_encoder": ["mylib", "MyEncoder"]}))
    loaded = TextPipe.from_pretrained(saved, text_encoder=text_encoders[0])
    assert loaded.text_encoder is text_encoders[0]


def test_variant_round_trip_readable_by_diffusers(tmp_path):
    import diffusers

    ours = DDPMPipeline(unet=_unet(), scheduler=DDPMScheduler())
    ours.save_pretrained(tmp_path, variant="fp16")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    again = DiffusionPipeline.from_pretrained(tmp_path, variant="fp16")
    theirs = diffusers.DDPMPipeline.from_pretrained(tmp_path, variant="fp16")
    for name, value in ours.unet.state_dict().items():
        torch.testing.assert_close(again.unet.state_dict()[name], value)
        torch.testing.assert_close(theirs.unet.state_dict()[name], value)


def test_attention_slice_sizes_are_checked(pipe):
    for size in ("auto", "max", 2, [1, 2], None):
        pipe.enable_attention_slicing(size)
    pipe.set_attention_slice(4)
    pipe.disable_attention_slicing()
    for bad in ("half", 0, -1, [], [2, 0], 1.5, True):
        with pytest.raises(ValueError, match="slice_size must be 'auto', 'max', a positive int"):
            pipe.enable_attention_slicing(bad)


def test_sequential_offload_and_hooks_on_a_cpu_only_machine(pipe, caplog):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only behaviour")
    with caplog.at_level(logging.WARNING):
        pipe.enable_sequential_cpu_offload()
    assert "no GPU" in caplog.text
    assert pipe._execution_device == torch.device("cpu")
    pipe.remove_all_hooks()
    pipe.reset_device_map()
    assert pipe.device == torch.device("cpu") and pipe.hf_device_map is None


def test_name_or_path_is_the_loaded_folder(pipe, saved):
    assert pipe.name_or_path is None
    assert TextPipe.from_pretrained(saved).name_or_path == str(saved)
