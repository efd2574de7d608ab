"""AutoencoderKL: parity with diffusers (encode, posterior sampling, decode, tiling, slicing), loading."""

from __future__ import annotations

import inspect

import pytest
import torch
from safetensors.torch import save_file

diffusers = pytest.importorskip("diffusers")

from sfumato import AutoencoderKL  # noqa: E402

pytestmark = pytest.mark.parity

SD_VAE = dict(
    block_out_channels=(8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=2,
    norm_num_groups=4,
    latent_channels=4,
    sample_size=32,
)
CONFIGS = {
    "sd": SD_VAE,
    "no_quant_no_mid_attention": {
        **SD_VAE,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "mid_block_add_attention": False,
        "scaling_factor": 0.3611,
        "shift_factor": 0.1159,
        "latent_channels": 3,
        "layers_per_block": 1,
    },
}


def image(batch: int = 2, h: int = 24, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory, make_seeded):
    """A seeded diffusers VAE and the sfumato VAE loaded from its saved folder."""
    folder = tmp_path_factory.mktemp("vae")
    ref = make_seeded(diffusers.AutoencoderKL, SD_VAE)
    ref.save_pretrained(folder)
    return ref, AutoencoderKL.from_pretrained(folder)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loads_diffusers_folder_and_matches(name, tmp_path, make_seeded, assert_close):
    config = CONFIGS[name]
    ref = make_seeded(diffusers.AutoencoderKL, config)
    ref.save_pretrained(tmp_path)
    model = AutoencoderKL.from_pretrained(tmp_path)
    assert model.config.scaling_factor == ref.config.scaling_factor
    assert model.config.shift_factor == ref.config.shift_factor
    x = image()
    with torch.no_grad():
        post_ref, post = ref.encode(x).latent_dist, model.encode(x).latent_dist
        for attr in ("mean", "std", "var", "logvar"):
            assert_close(getattr(post_ref, attr), getattr(post, attr))
        assert_close(post_ref.kl(), post.kl())
        assert_close(post_ref.kl(post_ref), post.kl(post))
        z = post_ref.mode()
        assert_close(ref.decode(z).sample, model.decode(z).sample)
        assert_close(ref(x).sample, model(x).sample)


def test_posterior_sample_draws_diffusers_noise(pair, assert_close):
    ref, model = pair
    x = image()
    with torch.no_grad():
        post_ref, post = ref.encode(x).latent_dist, model.encode(x).latent_dist
        for gen in (
            lambda: torch.Generator().manual_seed(7),
            lambda: [torch.Generator().manual_seed(s) for s in (1, 2)],
        ):
            assert_close(post_ref.sample(generator=gen()), post.sample(generator=gen()))
        a = ref(x, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
        b = model(x, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
    assert_close(a, b)
    assert post.sample(torch.Generator().manual_seed(7)).dtype == x.dtype


def test_saved_folder_loads_in_diffusers(tmp_path, make_seeded, assert_close):
    model = make_seeded(AutoencoderKL, SD_VAE, seed=5)
    model.save_pretrained(tmp_path)
    ref = diffusers.AutoencoderKL.from_pretrained(tmp_path).eval()
    x = image()
    with torch.no_grad():
        assert_close(ref(x).sample, model(x).sample)


def test_tiling_matches_diffusers_and_is_close_to_untiled(pair, assert_close):
    ref, model = pair
    x = image(batch=1, h=72, w=48)  # larger than the 32-pixel tiles
    z = torch.randn(1, 4, 11, 7, generator=torch.Generator().manual_seed(1))  # larger than 4-latent tiles
    with torch.no_grad():
        plain_enc, plain_dec = model.encode(x).latent_dist.mean, model.decode(z).sample
        ref.enable_tiling()
        model.enable_tiling()
        try:
            tiled_enc = model.encode(x).latent_dist.mean
            tiled_dec = model.decode(z).sample
            assert_close(ref.encode(x).latent_dist.mean, tiled_enc)
            assert_close(ref.decode(z).sample, tiled_dec)
            assert_close(ref.tiled_decode(z).sample, model.tiled_decode(z).sample)
        finally:
            ref.disable_tiling()
            model.disable_tiling()
    assert tiled_enc.shape == plain_enc.shape and tiled_dec.shape == plain_dec.shape
    assert not torch.equal(tiled_dec, plain_dec)  # tiling really happened
    # tiles see less context than the whole image, and random weights make that matter more than in a
    # trained VAE; the tiled result must still be essentially the same picture
    for tiled, plain in ((tiled_enc, plain_enc), (tiled_dec, plain_dec)):
        assert torch.corrcoef(torch.stack([tiled.flatten(), plain.flatten()]))[0, 1] > 0.7


def test_slicing_gives_the_batched_result(pair, assert_close):
    ref, model = pair
    x = image(batch=3)
    z = torch.randn(3, 4, 5, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        enc, dec = model.encode(x).latent_dist.mean, model.decode(z).sample
        model.enable_slicing()
        try:
            # batched convolutions may round differently from single-image ones: equal up to float error
            assert_close(enc, model.encode(x).latent_dist.mean)
            assert_close(dec, model.decode(z).sample)
            ref.enable_slicing()
            assert_close(ref.decode(z).sample, model.decode(z).sample)
            for i in range(3):  # each slice equals the model run on that image alone
                assert torch.equal(model.decode(z[i : i + 1]).sample[0], model.decode(z).sample[i])
        finally:
            model.disable_slicing()
            ref.disable_slicing()


def test_legacy_attention_names_are_renamed_on_load(tmp_path, make_seeded, assert_close):
    ref = make_seeded(diffusers.AutoencoderKL, SD_VAE)
    ref.save_pretrained(tmp_path)
    legacy = {}
    for key, value in ref.state_dict().items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".{new}.", f".{old}.")
        legacy[key] = value.contiguous()
    assert "encoder.mid_block.attentions.0.query.weight" in legacy
    save_file(legacy, tmp_path / "diffusion_pytorch_model.safetensors")
    model = AutoencoderKL.from_pretrained(tmp_path)
    with torch.no_grad():
        assert_close(ref(image()).sample, model(image()).sample)


def test_signature_and_defaults_match_diffusers():
    ours = inspect.signature(AutoencoderKL.__init__).parameters
    theirs = inspect.signature(diffusers.AutoencoderKL.__init__).parameters
    assert list(ours) == list(theirs)
    assert all(ours[n].default == p.default for n, p in theirs.items())


def test_real_sd_vae_config_has_diffusers_parameter_names():
    config = dict(
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=512,
    )

    def shapes(cls):
        with torch.device("meta"):
            model = cls.from_config(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    ours = shapes(AutoencoderKL)
    assert ours == shapes(diffusers.AutoencoderKL)
    assert len(ours) == 248


def test_bad_inputs_are_explained(pair):
    _, model = pair
    with pytest.raises(ValueError, match=r"encode expects a \(batch, 3, height, width\)"):
        model.encode(torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"decode expects a \(batch, 4, height, width\)"):
        model.decode(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="same length"):
        AutoencoderKL(block_out_channels=(8, 16))


def test_bfloat16_load(tmp_path, make_seeded, assert_close):
    ref = make_seeded(diffusers.AutoencoderKL, SD_VAE)
    ref.save_pretrained(tmp_path)
    model = AutoencoderKL.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    x = image()
    with torch.no_grad():
        out = model(x.bfloat16()).sample
        assert out.dtype == torch.bfloat16
        ref16 = diffusers.AutoencoderKL.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
        assert_close(ref16(x.bfloat16()).sample, out, tol=0.1)  # both round differently
        assert_close(ref(x).sample, out, tol=0.2)  # bf16 keeps ~3 significant digits per layer
    assert model.to(torch.float16).dtype == torch.float16


def test_outputs_behave_like_diffusers_outputs(pair):
    ref, model = pair
    z = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        ours, theirs = model.decode(z), ref.decode(z)
        assert list(ours) == list(theirs) == ["sample"]  # commit_loss=None is left out
        assert list(ours.keys()) == list(theirs.keys())
        assert len(ours.to_tuple()) == len(theirs.to_tuple()) == 1
        assert isinstance(model.decode(z, return_dict=False), tuple)
        assert isinstance(
            model.encode(image(1), return_dict=False)[0], type(model.encode(image(1)).latent_dist)
        )


def test_fused_qkv_projections_match_diffusers(pair, assert_close):
    ref, model = pair
    x = image(batch=1)
    z = torch.randn(1, 4, 5, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = model.decode(z).sample
        ref.fuse_qkv_projections()
        model.fuse_qkv_projections()
        try:
            assert model.encoder.mid_block.attentions[0]._fused_projection(True) is not None
            assert_close(ref.decode(z).sample, model.decode(z).sample)
            assert_close(ref.encode(x).latent_dist.mean, model.encode(x).latent_dist.mean)
        finally:
            model.unfuse_qkv_projections()
            ref.unfuse_qkv_projections()
        assert torch.equal(model.decode(z).sample, plain)
