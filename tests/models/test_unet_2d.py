"""UNet2DModel: parity with diffusers on a tiny ddpm-cat-256-shaped config, legacy weights, errors."""

from __future__ import annotations

import inspect

import pytest
import torch
from safetensors.torch import save_file

diffusers = pytest.importorskip("diffusers")

from sfumato import UNet2DModel  # noqa: E402

pytestmark = pytest.mark.parity

# google/ddpm-cat-256 conventions (flip_sin_to_cos False, freq_shift 1, eps 1e-6, padding 0, one wide head)
CAT = dict(
    sample_size=16,
    block_out_channels=(16, 16, 32, 32),
    layers_per_block=2,
    attention_head_dim=None,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_eps=1e-6,
    downsample_padding=0,
    center_input_sample=False,
)
CONFIGS = {
    "cat": CAT,
    # diffusers defaults shape: attention everywhere but level 0, multi-head attention
    "default": dict(
        sample_size=16,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ),
    # class-conditional, FiLM resnets (the mid attention then has no group norm), scaled mid block
    "class_scale_shift": dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=8,
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
        num_class_embeds=4,
        resnet_time_scale_shift="scale_shift",
        mid_block_scale_factor=1.414,
        attn_norm_num_groups=4,
        center_input_sample=True,
    ),
    "learned_time": dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        add_attention=False,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        time_embedding_type="learned",
        num_train_timesteps=1000,
        class_embed_type="timestep",
    ),
}


def inputs(config: dict, batch: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    kw = dict(sample=torch.randn(batch, 3, 16, 16, generator=g), timestep=torch.tensor([999, 3][:batch]))
    if config.get("num_class_embeds"):
        kw["class_labels"] = torch.tensor([0, 3][:batch])
    if config.get("class_embed_type") == "timestep":
        kw["class_labels"] = torch.tensor([5, 700][:batch])
    return kw


def run(model, kw: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**kw).sample


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loads_diffusers_folder_and_matches(name, tmp_path, make_seeded, assert_close):
    config = CONFIGS[name]
    ref = make_seeded(diffusers.UNet2DModel, config)
    ref.save_pretrained(tmp_path)
    model = UNet2DModel.from_pretrained(tmp_path)
    kw = inputs(config)
    assert_close(run(ref, kw), run(model, kw))
    scalar = {**kw, "timestep": 250}
    if "class_labels" in kw:
        scalar = {**kw, "timestep": 250, "class_labels": kw["class_labels"]}
    assert_close(run(ref, scalar), run(model, scalar))


def test_saved_folder_loads_in_diffusers(tmp_path, make_seeded, assert_close):
    model = make_seeded(UNet2DModel, CAT, seed=4)
    model.save_pretrained(tmp_path)
    ref = diffusers.UNet2DModel.from_pretrained(tmp_path).eval()
    kw = inputs(CAT)
    assert_close(run(ref, kw), run(model, kw))


def test_legacy_attention_names_are_renamed_on_load(tmp_path, make_seeded, assert_close):
    ref = make_seeded(diffusers.UNet2DModel, CAT)
    ref.save_pretrained(tmp_path)
    legacy = {}
    for key, value in ref.state_dict().items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = value.contiguous()
    assert any(".proj_attn." in k for k in legacy)
    save_file(legacy, tmp_path / "diffusion_pytorch_model.safetensors")
    model = UNet2DModel.from_pretrained(tmp_path)
    kw = inputs(CAT)
    assert_close(run(ref, kw), run(model, kw))


def test_signature_and_defaults_match_diffusers():
    ours = inspect.signature(UNet2DModel.__init__).parameters
    theirs = inspect.signature(diffusers.UNet2DModel.__init__).parameters
    assert list(ours) == list(theirs)
    assert all(ours[n].default == p.default for n, p in theirs.items())


def test_real_ddpm_cat_config_has_diffusers_parameter_names():
    config = {
        **CAT,
        "block_out_channels": [128, 128, 256, 256, 512, 512],
        "norm_num_groups": 32,
        "sample_size": 256,
        "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    }

    def shapes(cls):
        with torch.device("meta"):
            model = cls.from_config(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    ours = shapes(UNet2DModel)
    assert ours == shapes(diffusers.UNet2DModel)
    assert len(ours) == 450


def test_bad_inputs_are_explained():
    model = UNet2DModel(**CONFIGS["class_scale_shift"]).eval()
    kw = inputs(CONFIGS["class_scale_shift"])
    with pytest.raises(ValueError, match="in_channels=3"):
        model(torch.randn(2, 4, 16, 16), 1, kw["class_labels"])
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.randn(2, 3, 15, 16), 1, kw["class_labels"])
    with pytest.raises(ValueError, match="class_labels should be provided"):
        model(kw["sample"], 1)
    with pytest.raises(ValueError, match="no class embedding"):
        UNet2DModel(**CAT)(torch.randn(1, 3, 16, 16), 1, class_labels=torch.tensor([1]))


@pytest.mark.parametrize("option", [{"downsample_type": "resnet"}, {"time_embedding_type": "fourier"}])
def test_unsupported_options_name_themselves(option):
    with pytest.raises(NotImplementedError, match=next(iter(option))):
        UNet2DModel(**{**CAT, **option})
