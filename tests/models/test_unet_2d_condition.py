"""UNet2DConditionModel: parity with diffusers on tiny SD1.5 / SD2.1 / SDXL / inpainting-shaped configs."""

from __future__ import annotations

import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from sfumato import UNet2DConditionModel  # noqa: E402

pytestmark = pytest.mark.parity

SD15 = dict(
    sample_size=8,
    block_out_channels=(32, 64),
    layers_per_block=2,
    cross_attention_dim=32,
    attention_head_dim=4,
    norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)
CONFIGS = {
    "sd15": SD15,
    # SD2.1: linear projections, per-block head counts, upcast flag, 1024-style context width
    "sd21": {
        **SD15,
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
        "upcast_attention": True,
        "cross_attention_dim": 24,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    },
    # SDXL base: no attention at level 0, text_time embedding, deeper transformers further down
    "sdxl": dict(
        sample_size=8,
        block_out_channels=(16, 32, 64),
        layers_per_block=2,
        cross_attention_dim=40,
        attention_head_dim=(2, 4, 8),
        norm_num_groups=8,
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2, 3),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=12 + 6 * 8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ),
    "sd_inpaint": {**SD15, "in_channels": 9},
    # less common switches in one model: FiLM resnets, class projection, LCM w-embedding, text projection,
    # only-cross-attention, per-block cross dims, plain mid block, 1x1 conv_in/out kernels, extra activations
    "exotic": {
        **SD15,
        "resnet_time_scale_shift": "scale_shift",
        "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": 6,
        "time_cond_proj_dim": 5,
        "encoder_hid_dim": 12,
        "only_cross_attention": (True, False),
        "mid_block_type": "UNetMidBlock2D",
        "conv_in_kernel": 1,
        "conv_out_kernel": 1,
        "time_embedding_act_fn": "silu",
        "timestep_post_act": "mish",
        "freq_shift": 1,
        "flip_sin_to_cos": False,
        "center_input_sample": True,
        "class_embeddings_concat": True,
        "layers_per_block": (1, 2),
    },
    # x4-upscaler-like class ids, per-layer transformer depths with an explicit reverse table
    "classes_asymmetric": {
        **SD15,
        "num_class_embeds": 10,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "transformer_layers_per_block": ((1, 2), (2, 1)),
        "reverse_transformer_layers_per_block": ((1, 1, 2), (2, 1, 1)),
    },
    "timestep_class": {**SD15, "class_embed_type": "timestep", "resnet_time_scale_shift": "scale_shift"},
}


def inputs(config: dict, batch: int = 2, size: tuple[int, int] = (16, 16), seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ctx_dim = config.get("encoder_hid_dim") or config["cross_attention_dim"]
    kw = dict(
        sample=torch.randn(batch, config.get("in_channels", 4), *size, generator=g),
        timestep=torch.tensor([999, 17][:batch]),
        encoder_hidden_states=torch.randn(batch, 7, ctx_dim, generator=g),
    )
    if config.get("addition_embed_type") == "text_time":
        kw["added_cond_kwargs"] = dict(
            text_embeds=torch.randn(batch, 12, generator=g),
            time_ids=torch.tensor([[64.0, 48, 0, 8, 64, 64]] * batch),
        )
    if config.get("class_embed_type") == "projection":
        kw["class_labels"] = torch.randn(batch, 6, generator=g)
    if config.get("num_class_embeds"):
        kw["class_labels"] = torch.tensor([3, 9][:batch])
    if config.get("class_embed_type") == "timestep":
        kw["class_labels"] = torch.tensor([20, 750][:batch])
    if config.get("time_cond_proj_dim"):
        kw["timestep_cond"] = torch.randn(batch, 5, generator=g)
    return kw


def seeded_pair(make_seeded, config: dict):
    """diffusers' UNet with seeded random weights, and ours loaded with the same weights."""
    ref = make_seeded(diffusers.UNet2DConditionModel, config)
    model = UNet2DConditionModel(**config).eval()
    model.load_state_dict(ref.state_dict())
    return ref, model


def run(model, kw: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**kw).sample


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loads_diffusers_folder_and_matches(name, tmp_path, make_seeded, assert_close):
    config = CONFIGS[name]
    ref = make_seeded(diffusers.UNet2DConditionModel, config)
    ref.save_pretrained(tmp_path)
    model = UNet2DConditionModel.from_pretrained(tmp_path)
    for kw in (
        inputs(config),
        inputs(config, batch=1, size=(13, 10), seed=2),
    ):  # also a size not divisible by 2
        assert_close(run(ref, kw), run(model, kw))


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_saved_folder_loads_in_diffusers(name, tmp_path, make_seeded, assert_close):
    config = CONFIGS[name]
    model = make_seeded(UNet2DConditionModel, config, seed=3)
    model.save_pretrained(tmp_path)
    ref = diffusers.UNet2DConditionModel.from_pretrained(tmp_path).eval()
    kw = inputs(config)
    assert_close(run(ref, kw), run(model, kw))
    again = UNet2DConditionModel.from_pretrained(tmp_path)
    assert torch.equal(run(model, kw), run(again, kw))


def test_signature_and_defaults_match_diffusers():
    ours = inspect.signature(UNet2DConditionModel.__init__).parameters
    theirs = inspect.signature(diffusers.UNet2DConditionModel.__init__).parameters
    assert list(ours) == list(theirs)
    for name, p in theirs.items():
        default = p.default if not isinstance(p.default, list) else tuple(p.default)
        assert ours[name].default == default, name
    fwd = set(inspect.signature(diffusers.UNet2DConditionModel.forward).parameters)
    assert fwd == set(inspect.signature(UNet2DConditionModel.forward).parameters)


SD15_FULL = dict(
    act_fn="silu",
    attention_head_dim=8,
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-05,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, verbatim
SDXL_FULL = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.19.0.dev0",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}


def meta_shapes(cls, config: dict) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = cls.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "config", [SD15_FULL, SDXL_FULL, {**SD15_FULL, "in_channels": 9}], ids=["sd15", "sdxl", "inpaint"]
)
def test_real_config_has_diffusers_parameter_names(config):
    ours = meta_shapes(UNet2DConditionModel, config)
    assert ours == meta_shapes(diffusers.UNet2DConditionModel, config)
    if config is SD15_FULL:
        assert len(ours) == 686
    if config is SDXL_FULL:
        assert len(ours) == 1680


@pytest.fixture(scope="module")
def sdxl_model():
    return UNet2DConditionModel(**CONFIGS["sdxl"]).eval()


def test_wrong_channel_count_is_explained(sdxl_model):
    kw = inputs(CONFIGS["sdxl"])
    kw["sample"] = torch.randn(2, 9, 16, 16)
    with pytest.raises(ValueError, match=r"9 channels .* in_channels=4"):
        sdxl_model(**kw)


def test_missing_text_states_is_explained(sdxl_model):
    kw = inputs(CONFIGS["sdxl"])
    kw["encoder_hidden_states"] = None
    with pytest.raises(ValueError, match="needs encoder_hidden_states"):
        sdxl_model(**kw)
    kw["encoder_hidden_states"] = torch.randn(2, 7, 32)
    with pytest.raises(ValueError, match=r"shape \(batch, tokens, 40\) .* got \(2, 7, 32\)"):
        sdxl_model(**kw)


@pytest.mark.parametrize("missing", ["text_embeds", "time_ids", None])
def test_missing_sdxl_added_cond_kwargs_is_explained(sdxl_model, missing):
    kw = inputs(CONFIGS["sdxl"])
    if missing is None:
        del kw["added_cond_kwargs"]
    else:
        del kw["added_cond_kwargs"][missing]
    with pytest.raises(ValueError, match=f"added_cond_kwargs.*`{missing or 'text_embeds'}` is missing"):
        sdxl_model(**kw)


def test_bad_timestep_shape_and_sample_rank(sdxl_model):
    kw = inputs(CONFIGS["sdxl"])
    with pytest.raises(ValueError, match="timestep must be"):
        sdxl_model(**{**kw, "timestep": torch.tensor([1, 2, 3])})
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        sdxl_model(**{**kw, "sample": torch.randn(4, 16, 16)})


def test_num_attention_heads_raises_like_diffusers():
    with pytest.raises(ValueError, match="naming issue"):
        UNet2DConditionModel(**SD15, num_attention_heads=4)
    with pytest.raises(ValueError):
        diffusers.UNet2DConditionModel(**SD15, num_attention_heads=4)


@pytest.mark.parametrize(
    "option",
    [
        {"addition_embed_type": "image"},
        {"encoder_hid_dim_type": "image_proj", "encoder_hid_dim": 8},
        {"dual_cross_attention": True},
        {"attention_type": "gated"},
        {"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"},
        {"time_embedding_type": "fourier"},
        {"down_block_types": ("SimpleCrossAttnDownBlock2D", "DownBlock2D")},
    ],
)
def test_unsupported_options_name_themselves(option):
    key = next(iter(option))
    with pytest.raises(NotImplementedError, match=key.split("_type")[0]):
        UNet2DConditionModel(**{**SD15, **option})


def test_controlnet_and_adapter_residuals_match(make_seeded, assert_close):
    config = CONFIGS["sd15"]
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config)
    g = torch.Generator().manual_seed(5)
    shapes = [(2, 32, 16, 16)] * 3 + [(2, 32, 8, 8)] + [(2, 64, 8, 8)] * 2
    down = tuple(torch.randn(s, generator=g) for s in shapes)
    mid = torch.randn(2, 64, 8, 8, generator=g)
    cn = dict(down_block_additional_residuals=down, mid_block_additional_residual=mid)
    assert_close(run(ref, {**kw, **cn}), run(model, {**kw, **cn}))
    adapter = [torch.randn(2, 32, 16, 16, generator=g), torch.randn(2, 64, 8, 8, generator=g)]
    expected = run(ref, {**kw, "down_intrablock_additional_residuals": list(adapter)})
    assert_close(expected, run(model, {**kw, "down_intrablock_additional_residuals": list(adapter)}))


def test_encoder_attention_mask_matches(make_seeded, assert_close):
    config = CONFIGS["sd21"]
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config)
    kw["encoder_attention_mask"] = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    assert_close(run(ref, kw), run(model, kw))
    assert not torch.allclose(run(model, {**kw, "encoder_attention_mask": None}), run(model, kw))


def test_return_dict_false_and_indexing(sdxl_model):
    kw = inputs(CONFIGS["sdxl"], batch=1)
    with torch.no_grad():
        out = sdxl_model(**kw)
        tup = sdxl_model(**kw, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1
    assert torch.equal(out.sample, tup[0]) and torch.equal(out[0], out["sample"])


def test_bfloat16_load_and_dtype_casts(tmp_path, make_seeded, assert_close):
    config = CONFIGS["sd15"]
    ref = make_seeded(diffusers.UNet2DConditionModel, config)
    ref.save_pretrained(tmp_path)
    model = UNet2DConditionModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    kw = inputs(config)
    kw16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in kw.items()}
    out = run(model, kw16)
    assert out.dtype == torch.bfloat16
    ref16 = diffusers.UNet2DConditionModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert_close(run(ref16, kw16), out, tol=2e-2)
    assert_close(run(ref, kw), out, tol=5e-2)  # bf16 keeps ~3 significant digits
    fp16 = UNet2DConditionModel.from_pretrained(tmp_path, torch_dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in fp16.parameters())
    half = model.to(torch.float16)
    assert half.dtype == torch.float16 and all(p.dtype == torch.float16 for p in half.parameters())


def test_gradient_checkpointing_gives_same_gradients(make_seeded):
    config = {**CONFIGS["sdxl"], "layers_per_block": 1}
    kw = inputs(config, batch=1, size=(8, 8))
    grads = []
    for checkpointing in (False, True):
        model = make_seeded(UNet2DConditionModel, config).train()
        if checkpointing:
            model.enable_gradient_checkpointing()
            assert model.is_gradient_checkpointing
        model(**kw).sample.square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_self_attention_mask_and_no_mid_block_match(make_seeded, assert_close):
    # diffusers applies `attention_mask` to the self-attention, so it must cover H·W tokens of every
    # transformer stage: here both sit at full resolution (no mid block)
    config = {**SD15, "layers_per_block": 1, "mid_block_type": None}
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config)
    kw["attention_mask"] = (torch.rand(2, 256, generator=torch.Generator().manual_seed(0)) > 0.3).long()
    assert_close(run(ref, kw), run(model, kw))
    with pytest.raises(ValueError, match=r"attention mask must have shape \(batch, 256\)"):
        model(**{**kw, "attention_mask": torch.ones(2, 7)})


def _cfg_inputs(config: dict, prompts: int = 1) -> dict:
    """Classifier-free guidance's batch: the same latents and timestep in both halves, two contexts."""
    kw = inputs(config, batch=2 * prompts)
    kw["sample"] = kw["sample"][:prompts].repeat(2, 1, 1, 1)
    kw["timestep"] = torch.tensor(421)
    if "class_labels" in kw:
        kw["class_labels"] = kw["class_labels"][:prompts].repeat(2, *[1] * (kw["class_labels"].dim() - 1))
    return kw


def _first_resnet_batches(model) -> list[int]:
    """Turns the shared half on and records the batch size the first down stage's first resnet is
    called with (not a hook)."""
    model.share_guidance_halves = True
    resnet, seen = model.down_blocks[0].resnets[0], []
    forward = resnet.forward
    resnet.forward = lambda x, temb=None: (seen.append(x.shape[0]), forward(x, temb))[1]
    return seen


@pytest.mark.parametrize("name", ["sd15", "sd21", "sd_inpaint", "classes_asymmetric"])
@pytest.mark.parametrize("prompts", [1, 2])
def test_cfg_halves_share_the_layers_before_the_first_cross_attention(
    name, prompts, make_seeded, assert_close
):
    config = CONFIGS[name]
    ref, model = seeded_pair(make_seeded, config)
    seen = _first_resnet_batches(model)
    kw = _cfg_inputs(config, prompts)
    assert_close(run(ref, kw), run(model, kw))
    assert seen == [prompts]  # one half of the batch of 2 * prompts
    different = {**kw, "sample": kw["sample"].flip(0)} if prompts == 2 else None
    if different is not None:  # [b, a, b, a]: the halves are still equal
        assert_close(run(ref, different), run(model, different))
        assert seen[-1] == prompts


def test_unequal_halves_masks_hooks_and_autograd_run_the_whole_batch(make_seeded, assert_close):
    config = CONFIGS["sd21"]
    ref, model = seeded_pair(make_seeded, config)
    seen = _first_resnet_batches(model)
    kw = _cfg_inputs(config)
    cases = {
        "latents differ": {**kw, "sample": kw["sample"] + torch.tensor([0.0, 1e-3])[:, None, None, None]},
        "timesteps differ": {**kw, "timestep": torch.tensor([421, 420])},
        "context mask": {**kw, "encoder_attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])},
    }
    for label, case in cases.items():
        assert_close(run(ref, case), run(model, case))
        assert seen[-1] == 2, label
    hooked = []
    handle = (
        model.down_blocks[0]
        .attentions[0]
        .register_forward_pre_hook(lambda m, args: hooked.append(args[0].shape[0]))
    )
    try:
        assert_close(run(ref, kw), run(model, kw))
    finally:
        handle.remove()
    assert seen[-1] == 2 and hooked == [2]  # a hook sees the batch it was given
    model(**kw).sample.sum().backward()  # autograd: the whole batch, as recorded
    assert seen[-1] == 2
    run(model, kw)
    assert seen[-1] == 1


@pytest.mark.parametrize("name", ["sdxl", "exotic"])
def test_no_shared_half_where_the_halves_part_earlier(name, make_seeded, assert_close):
    """SDXL's first stage has no cross-attention; an only-cross-attention first block reads the
    context in its first attention."""
    config = CONFIGS[name]
    ref, model = seeded_pair(make_seeded, config)
    seen = _first_resnet_batches(model)
    kw = _cfg_inputs(config)
    assert_close(run(ref, kw), run(model, kw))
    assert seen == [2]


@pytest.mark.parametrize("prompts", [1, 2])
def test_a_plain_model_computes_guidance_halves_as_diffusers_bit_for_bit(prompts, make_seeded):
    """The shared half rounds in the last bits like batch-blocked kernels do, so only `optimize()`
    turns it on; the model as constructed or loaded gives diffusers' values exactly."""
    config = CONFIGS["sd15"]
    ref, model = seeded_pair(make_seeded, config)
    assert not model.share_guidance_halves
    kw = _cfg_inputs(config, prompts)
    assert torch.equal(run(ref, kw), run(model, kw))


FREEU = dict(s1=0.9, s2=0.2, b1=1.5, b2=1.6)


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
@pytest.mark.parametrize("size", [(16, 16), (13, 10)])  # power-of-two maps, and odd ones
def test_freeu_matches_diffusers(name, size, make_seeded, assert_close):
    config = CONFIGS[name]
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config, size=size)
    plain = run(model, kw)
    ref.enable_freeu(**FREEU)
    model.enable_freeu(**FREEU)
    with_freeu = run(model, kw)
    assert_close(run(ref, kw), with_freeu)
    assert (with_freeu - plain).abs().max() > 0.05 * plain.abs().max()  # it changes the output
    model.disable_freeu()
    assert torch.equal(run(model, kw), plain)


def test_freeu_zero_factor_is_off_as_in_diffusers(make_seeded, caplog):
    config = CONFIGS["sd15"]
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config)
    plain = run(model, kw)
    ref.enable_freeu(**{**FREEU, "b2": 0})
    model.enable_freeu(**{**FREEU, "b2": 0})
    assert "turns FreeU off" in caplog.text
    assert torch.equal(run(model, kw), plain)
    assert torch.allclose(run(ref, kw), plain, rtol=0, atol=1e-5)


def test_freeu_with_autograd_and_bfloat16(make_seeded, assert_close):
    config = CONFIGS["sd15"]
    _, model = seeded_pair(make_seeded, config)
    model.enable_freeu(**FREEU)
    kw = inputs(config, batch=1)
    expected = run(model, kw)
    sample = kw["sample"].clone().requires_grad_(True)
    out = model(**{**kw, "sample": sample}).sample
    assert_close(expected, out.detach())
    out.square().mean().backward()
    assert sample.grad is not None and sample.grad.abs().sum() > 0
    low = model.to(torch.bfloat16)  # the FFT runs in float32 for half-precision maps
    kw16 = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in kw.items()}
    out16 = run(low, kw16)
    assert out16.dtype == torch.bfloat16
    assert_close(expected, out16.float(), tol=5e-2)


def _separate_projection_calls(model) -> list[str]:
    """Records the name of every separate `to_q` / `to_k` / `to_v` call of `model`'s attentions."""
    calls = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v"):
            module.register_forward_hook(lambda *_, n=name: calls.append(n))
    return calls


@pytest.mark.parametrize("name", ["sd15", "sdxl", "exotic"])
def test_fused_projections_match_diffusers(name, make_seeded, assert_close):
    config = CONFIGS[name]
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config)
    plain = run(model, kw)
    calls = _separate_projection_calls(model)
    ref.fuse_qkv_projections()
    model.fuse_qkv_projections()
    assert_close(run(ref, kw), run(model, kw))
    assert calls and all(c.endswith("to_q") for c in calls)  # only cross-attention queries stay apart
    assert not any("fused" in key for key in model.state_dict())  # a copy, never saved
    model.unfuse_qkv_projections()
    assert torch.equal(run(model, kw), plain)


def test_fused_projections_follow_casts_and_go_stale_on_writes(make_seeded, assert_close):
    config = CONFIGS["sd15"]
    _, model = seeded_pair(make_seeded, config)
    _, reference = seeded_pair(make_seeded, config)
    kw = inputs(config)
    calls = _separate_projection_calls(model)
    model.fuse_qkv_projections()
    model.to(torch.float64)
    reference.to(torch.float64)
    kw64 = {k: v.double() if v.is_floating_point() else v for k, v in kw.items()}
    assert_close(run(reference, kw64), run(model, kw64))
    assert not any(c.endswith(("to_k", "to_v")) for c in calls)  # still fused after the cast
    attn = model.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    with torch.no_grad():
        for layer in (attn.to_k, reference.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_k):
            layer.weight.mul_(1.5)
    assert_close(run(reference, kw64), run(model, kw64))  # the stale copy is not used
    assert any(c.endswith("attn1.to_k") for c in calls)
    calls.clear()
    model(**kw64).sample.square().mean().backward()  # with autograd the separate weights run
    assert attn.to_q.weight.grad is not None and any(c.endswith("to_v") for c in calls)


MODEL_SWITCHES = [
    "set_attention_slice", "enable_xformers_memory_efficient_attention",
    "disable_xformers_memory_efficient_attention", "set_default_attn_processor", "get_memory_footprint",
    "fuse_qkv_projections", "unfuse_qkv_projections", "enable_freeu", "disable_freeu",
]  # fmt: skip


@pytest.mark.parametrize("name", MODEL_SWITCHES)
def test_model_switches_take_diffusers_arguments(name):
    def parameters(cls):
        return [(p.name, p.default) for p in inspect.signature(getattr(cls, name)).parameters.values()]

    assert parameters(UNet2DConditionModel) == parameters(diffusers.UNet2DConditionModel)


def test_attention_switches_change_nothing_and_footprint_matches(make_seeded):
    config = CONFIGS["sd15"]
    ref, model = seeded_pair(make_seeded, config)
    kw = inputs(config)
    plain = run(model, kw)
    model.set_attention_slice("max")
    model.enable_xformers_memory_efficient_attention()
    model.set_default_attn_processor()
    assert torch.equal(run(model, kw), plain)
    with pytest.raises(ValueError, match="slice_size must be"):
        model.set_attention_slice("half")
    assert model.get_memory_footprint(return_buffers=False) == ref.get_memory_footprint(return_buffers=False)
    assert model.get_memory_footprint() >= model.get_memory_footprint(return_buffers=False)
