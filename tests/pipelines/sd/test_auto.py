"""AutoPipelineFor*: the task's pipeline class from a folder's `_class_name`, and task switches sharing components."""

import pytest

import sfumato
from pipelines.sd.components import PROMPT, assert_images_close, make_image, make_mask, quiet
from sfumato import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image


@pytest.mark.parametrize(
    ("auto", "expected"),
    [
        (AutoPipelineForText2Image, sfumato.StableDiffusionPipeline),
        (AutoPipelineForImage2Image, sfumato.StableDiffusionImg2ImgPipeline),
        (AutoPipelineForInpainting, sfumato.StableDiffusionInpaintPipeline),
    ],
)
def test_from_pretrained_picks_the_task_class(sd_folder, auto, expected):
    import diffusers

    pipe = auto.from_pretrained(sd_folder)
    assert type(pipe) is expected
    theirs = getattr(diffusers, auto.__name__).from_pretrained(sd_folder)
    assert type(theirs).__name__ == expected.__name__


def test_from_pipe_shares_components_and_matches_diffusers(sd_pipes):
    import diffusers

    theirs, ours = sd_pipes
    img2img = AutoPipelineForImage2Image.from_pipe(ours)
    inpaint = AutoPipelineForInpainting.from_pipe(img2img)
    back = AutoPipelineForText2Image.from_pipe(inpaint)
    assert (type(img2img), type(inpaint), type(back)) == (
        sfumato.StableDiffusionImg2ImgPipeline,
        sfumato.StableDiffusionInpaintPipeline,
        sfumato.StableDiffusionPipeline,
    )
    for pipe in (img2img, inpaint, back):
        assert all(getattr(pipe, n) is getattr(ours, n) for n in ("unet", "vae", "text_encoder", "scheduler"))
    theirs_inpaint, ours_inpaint = quiet(diffusers.AutoPipelineForInpainting.from_pipe(theirs), inpaint)
    kwargs = dict(
        prompt=PROMPT, image=make_image(), mask_image=make_mask(), num_inference_steps=2, output_type="np"
    )
    import torch

    expected = theirs_inpaint(generator=torch.Generator().manual_seed(0), **kwargs).images
    got = ours_inpaint(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert_images_close(expected, got)


def test_inpainting_folder(sd_inpaint_folder):
    assert (
        type(AutoPipelineForInpainting.from_pretrained(sd_inpaint_folder))
        is sfumato.StableDiffusionInpaintPipeline
    )


def test_auto_pipelines_are_not_instantiable():
    with pytest.raises(TypeError, match=r"AutoPipelineForText2Image.from_pretrained\(id_or_folder\)"):
        AutoPipelineForText2Image()


def test_unknown_pipeline_class(tmp_path):
    (tmp_path / "model_index.json").write_text(
        '{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}'
    )
    with pytest.raises(ValueError, match=r"does not know the pipeline class 'DDPMPipeline'"):
        AutoPipelineForText2Image.from_pretrained(tmp_path)
