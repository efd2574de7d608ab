"""Text-to-image training from scratch on shapes: learning, exact resume, a folder diffusers can load."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import CLIPTextModel

from sfumato.models.autoencoder_kl import AutoencoderKL
from sfumato.models.unet_2d_condition import UNet2DConditionModel
from sfumato.training.latents import measure_scaling_factor
from sfumato.training.shapes import ShapesDataset, shape_coverage
from sfumato.training.text_to_image import PRESETS, ShapesTrainConfig, foreground_weights, train_shapes


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead (and the machine is shared)
    yield
    torch.set_num_threads(before)


def _config(output, **kw):
    defaults = dict(model=PRESETS["tiny"], vae_steps=2, unet_steps=4, batch_size=8, vae_batch_size=8,
                    num_images=32, save_every=2, warmup_steps=1, progress=False)  # fmt: skip
    return ShapesTrainConfig(output_dir=output, **(defaults | kw))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    output = tmp_path_factory.mktemp("shapes")
    folder, result = train_shapes(
        _config(output, vae_steps=20, unet_steps=30, learning_rate=3e-3, save_every=100)
    )
    return folder, result


def test_a_few_steps_lower_the_loss(trained):
    losses = trained[1].losses
    assert len(losses) == 30
    assert sum(losses[-8:]) / 8 < 0.7 * sum(losses[:8]) / 8


def test_folder_layout_and_sfumato_loading(trained):
    folder, _ = trained
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["safety_checker"] == [None, None]
    for name in ("unet", "vae"):
        assert (folder / name / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "text_encoder" / "model.safetensors").is_file()
    assert (folder / "scheduler" / "scheduler_config.json").is_file()

    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    moments = torch.load(folder / "training" / "latents.pt", weights_only=True)["moments"]
    assert vae.config.scaling_factor == pytest.approx(measure_scaling_factor(moments))
    assert vae.config.scaling_factor != 0.18215
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    assert unet.config.sample_size == PRESETS["tiny"].latent_size
    assert unet.config.cross_attention_dim == PRESETS["tiny"].text_hidden_size


def test_diffusers_loads_and_generates(trained):
    from diffusers import StableDiffusionPipeline

    folder, _ = trained
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a small red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (16, 16)

    import sfumato

    ours_pipe = sfumato.DiffusionPipeline.from_pretrained(folder)
    assert type(ours_pipe).__name__ == "StableDiffusionPipeline"
    ours_pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=2, output_type="np")
    a = pipe("a small red circle", generator=torch.Generator().manual_seed(0), **kw).images
    b = ours_pipe("a small red circle", generator=torch.Generator().manual_seed(0), **kw).images
    assert abs(a - b).max() < 1e-3

    ours = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 16, generator=g)
    with torch.no_grad():
        expected = pipe.unet(x, 500, encoder_hidden_states=context).sample
        torch.testing.assert_close(ours(x, 500, encoder_hidden_states=context).sample, expected)


def test_resumed_run_continues_where_it_stopped(tmp_path):
    # a constant rate: a cosine schedule depends on unet_steps, which the interrupted run changes
    straight, _ = train_shapes(_config(tmp_path / "a", weights_dtype="float16", lr_schedule="constant"))
    train_shapes(_config(tmp_path / "b", unet_steps=2, lr_schedule="constant"))
    resumed, result = train_shapes(_config(tmp_path / "b", weights_dtype="float16", lr_schedule="constant"))
    assert result.step == 4 and len(result.losses) == 2
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        with safe_open(straight / name, "pt") as a, safe_open(resumed / name, "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys())
            for key in a.keys():
                assert a.get_tensor(key).dtype == torch.float16
                assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
    unet = UNet2DConditionModel.from_pretrained(resumed, subfolder="unet")
    assert unet.dtype == torch.float32
    # stored in float16 for size, but transformers must not compute in it by default (CPU, mixed dtypes)
    assert CLIPTextModel.from_pretrained(resumed / "text_encoder").dtype == torch.float32


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unet_steps must be at least 1"):
        _config(tmp_path, unet_steps=0)
    with pytest.raises(ValueError, match="caption_dropout must be in"):
        _config(tmp_path, caption_dropout=1.0)


def test_foreground_weights_mark_the_shape():
    data = ShapesDataset(length=4, seed=3, size=32)
    x = torch.stack([data[i]["pixel_values"] for i in range(4)])
    weights = foreground_weights(x, 9.0)
    assert weights.shape == (4, 1, 32, 32) and set(weights.unique().tolist()) <= {1.0, 10.0}
    for i in range(4):
        scene = data.scene(i)
        cover = shape_coverage(
            scene.shape, scene.center[0] * 32, scene.center[1] * 32, scene.extent * 32, 32, 32
        )
        marked = weights[i, 0] > 1
        assert marked[torch.from_numpy(cover) > 0.99].all()  # every fully covered pixel is shape
        assert not marked[torch.from_numpy(cover) == 0].any()  # no untouched pixel is
