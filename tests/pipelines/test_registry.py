import logging

import pytest

from sfumato import registry


def test_our_classes_for_diffusers_and_sfumato_entries():
    from sfumato.schedulers import DDIMScheduler

    assert registry.resolve("diffusers", "DDIMScheduler") is DDIMScheduler
    assert registry.resolve("sfumato", "DDIMScheduler") is DDIMScheduler
    assert registry.resolve(None, None) is None


def test_transformers_classes_and_renames():
    import transformers

    assert registry.resolve("transformers", "CLIPTextConfig") is transformers.CLIPTextConfig
    assert registry.resolve("transformers", "CLIPFeatureExtractor") is transformers.CLIPImageProcessor


def test_clip_text_encoders_and_tokenizer_resolve_to_ours():
    import sfumato

    for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "CLIPTokenizerFast"):
        cls = registry.resolve("transformers", name, "text_encoder")
        assert cls is getattr(sfumato, name) and cls.__module__.startswith("sfumato.")


def test_safety_checker_is_accepted_and_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        assert registry.resolve("stable_diffusion", "StableDiffusionSafetyChecker", "safety_checker") is None
    assert "safety_checker" in caplog.text and "not loaded" in caplog.text


def test_pipeline_subpackage_entry_resolves_to_our_class():
    from sfumato.schedulers import DDIMScheduler

    assert registry.resolve("stable_diffusion", "DDIMScheduler") is DDIMScheduler


@pytest.mark.parametrize(
    "entry,match",
    [
        (("onnxruntime.training", "OnnxModel"), "library 'onnxruntime.training'.*OnnxModel"),
        (("diffusers", "NoSuchModel"), "'NoSuchModel', which sfumato does not implement"),
        (("transformers", "NoSuchTransformersModel"), "no class 'NoSuchTransformersModel'"),
        (("diffusers", None), "expected \\[library, ClassName\\]"),
    ],
)
def test_unknown_entries_are_clear_errors(entry, match):
    with pytest.raises(ValueError, match=match):
        registry.resolve(*entry, component="unet")


def test_entry_for_objects():
    import transformers

    import sfumato
    from sfumato.schedulers import DDIMScheduler

    assert registry.entry_for(None) == [None, None]
    assert registry.entry_for(DDIMScheduler()) == ["diffusers", "DDIMScheduler"]
    config = transformers.CLIPTextConfig(
        hidden_size=8, intermediate_size=8, num_attention_heads=2, num_hidden_layers=1
    )
    assert registry.entry_for(transformers.CLIPTextModel(config)) == ["transformers", "CLIPTextModel"]
    small = dict(
        hidden_size=8, intermediate_size=8, num_attention_heads=2, num_hidden_layers=1, vocab_size=10
    )
    # ours are written as transformers' classes, so diffusers loads saved pipelines
    assert registry.entry_for(sfumato.CLIPTextModel(**small)) == ["transformers", "CLIPTextModel"]
    projection = sfumato.CLIPTextModelWithProjection(**small)
    assert registry.entry_for(projection) == ["transformers", "CLIPTextModelWithProjection"]


def test_hub_selector_picks_one_weight_set():
    files = [
        "model_index.json",
        "README.md",
        "v1-5-pruned.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.onnx",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors.index.json",
        "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
        "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
        "safety_checker/model.safetensors",
    ]
    select = registry.pipeline_selector(["unet", "text_encoder", "tokenizer", "vae"], None, None)
    assert select(files) == sorted(
        [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors.index.json",
            "vae/diffusion_pytorch_model-00001-of-00002.safetensors",
            "vae/diffusion_pytorch_model-00002-of-00002.safetensors",
        ]
    )
    fp16 = registry.pipeline_selector(["unet", "vae"], "fp16", None)(files)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16
    assert "unet/diffusion_pytorch_model.safetensors" not in fp16
    assert "vae/diffusion_pytorch_model-00001-of-00002.safetensors" in fp16  # no fp16 there: fall back
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        select(["unet/config.json"])


def test_hub_selector_flat_layout():
    files = [
        "model_index.json",
        "config.json",
        "scheduler_config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert registry.pipeline_selector(["unet", "scheduler"], None, None)(files) == sorted(files)
