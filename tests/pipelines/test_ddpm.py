"""DDPM/DDIM pipelines: a tiny UNet2DModel saved by diffusers, loaded by both libraries, same seeds."""

import json

import numpy as np
import pytest
import torch

import sfumato
from sfumato import DDIMPipeline, DDPMPipeline, DiffusionPipeline
from sfumato.pipelines.outputs import ImagePipelineOutput


def _tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    import diffusers

    folder = tmp_path_factory.mktemp("ddpm")
    diffusers.DDPMPipeline(unet=_tiny_unet(), scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory):
    """The old google/ddpm-* layout: model_index.json, config.json, scheduler_config.json and weights at the root."""
    import diffusers

    folder = tmp_path_factory.mktemp("flat")
    _tiny_unet().save_pretrained(folder)
    diffusers.DDPMScheduler(num_train_timesteps=40).save_config(folder)
    index = {
        "_class_name": "DDPMPipeline",
        "_diffusers_version": "0.1.1",
        "scheduler": ["diffusers", "DDPMScheduler"],
    }
    index["unet"] = ["diffusers", "UNet2DModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def _pair(cls_name, folder):
    import diffusers

    theirs = getattr(diffusers, cls_name).from_pretrained(folder)
    ours = (
        DiffusionPipeline.from_pretrained(folder)
        if cls_name == "DDPMPipeline"
        else DDIMPipeline.from_pretrained(folder)
    )
    for pipe in (theirs, ours):
        pipe.set_progress_bar_config(disable=True)
    return theirs, ours


@pytest.mark.parametrize(
    "cls_name,kwargs",
    [
        ("DDPMPipeline", dict(num_inference_steps=8)),
        ("DDIMPipeline", dict(num_inference_steps=6)),
        ("DDIMPipeline", dict(num_inference_steps=6, eta=0.7)),
    ],
)
def test_images_equal_to_diffusers(ddpm_folder, cls_name, kwargs):
    theirs, ours = _pair(cls_name, ddpm_folder)
    assert type(ours).__name__ == cls_name
    expected = theirs(
        batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs
    ).images
    got = ours(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images
    assert got.shape == expected.shape == (2, 8, 8, 3)
    assert np.abs(got - expected).max() <= 1 / 255
    pil = ours(generator=torch.Generator().manual_seed(1), **kwargs).images
    pil_expected = theirs(generator=torch.Generator().manual_seed(1), **kwargs).images
    diff = np.abs(np.asarray(pil[0], np.int16) - np.asarray(pil_expected[0], np.int16))
    assert diff.max() <= 1


def test_generator_list_and_return_tuple(ddpm_folder):
    theirs, ours = _pair("DDIMPipeline", ddpm_folder)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    expected = theirs(batch_size=2, generator=gens(), num_inference_steps=3, output_type="np").images
    out = ours(batch_size=2, generator=gens(), num_inference_steps=3, output_type="np", return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1
    assert np.abs(out[0] - expected).max() <= 1 / 255
    assert isinstance(ours(num_inference_steps=2, output_type="pt"), ImagePipelineOutput)


def test_bad_arguments(ddpm_folder):
    pipe = DDIMPipeline.from_pretrained(ddpm_folder)
    for kwargs, match in [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(output_type="foo"), "output_type"),
        (dict(eta=float("nan")), "eta"),
        (dict(batch_size=3, generator=[torch.Generator()]), "generators"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            pipe(**kwargs)


def test_ddim_pipeline_converts_scheduler(ddpm_folder):
    pipe = DDIMPipeline.from_pretrained(ddpm_folder)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"


def test_flat_layout_loads(flat_folder):
    import diffusers

    ours = DDPMPipeline.from_pretrained(flat_folder)
    theirs = diffusers.DDPMPipeline.from_pretrained(flat_folder)
    assert ours.scheduler.config.num_train_timesteps == 40
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    a = ours(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
    b = theirs(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
    assert np.abs(a - b).max() <= 1 / 255


def test_saved_by_sfumato_read_by_diffusers(ddpm_folder, tmp_path):
    import diffusers

    ours = DiffusionPipeline.from_pretrained(ddpm_folder)
    ours.save_pretrained(tmp_path / "out")
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == [
        "diffusers",
        "DDPMScheduler",
    ]
    theirs = diffusers.DDPMPipeline.from_pretrained(tmp_path / "out")
    theirs.set_progress_bar_config(disable=True)
    ours.set_progress_bar_config(disable=True)
    a = ours(generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np").images
    b = theirs(generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np").images
    assert np.abs(a - b).max() <= 1 / 255


def _seed_loop(lib, folder):
    """The quicktour's hand-written loop (seeds/000) with `lib` = sfumato or diffusers."""
    model = lib.UNet2DModel.from_pretrained(folder, use_safetensors=True)
    scheduler = lib.DDPMScheduler.from_pretrained(folder)
    torch.manual_seed(0)
    noisy_sample = torch.randn(
        1, model.config.in_channels, model.config.sample_size, model.config.sample_size
    )
    with torch.no_grad():
        noisy_residual = model(sample=noisy_sample, timestep=2).sample
    less_noisy_sample = scheduler.step(
        model_output=noisy_residual, timestep=2, sample=noisy_sample
    ).prev_sample
    assert less_noisy_sample.shape == noisy_sample.shape
    sample = noisy_sample
    for t in scheduler.timesteps:  # every training step (40 here), as in the document
        with torch.no_grad():
            residual = model(sample, t).sample
        sample = scheduler.step(residual, t, sample).prev_sample
    image = sample.cpu().permute(0, 2, 3, 1)
    return ((image + 1.0) * 127.5).numpy()


def test_seed_document_loop(flat_folder):
    import diffusers

    ours = _seed_loop(sfumato, flat_folder)
    theirs = _seed_loop(diffusers, flat_folder)
    assert np.abs(ours - theirs).max() <= 1.0
