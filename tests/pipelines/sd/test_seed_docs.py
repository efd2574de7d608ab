"""The seed documents' code (diffusers quicktour and the AutoPipeline tutorial) with `from sfumato import ...`.

Adapted only where a real checkpoint is needed: a local tiny folder instead of the Hub id, few steps.
"""

import numpy as np
import PIL.Image
import pytest
import torch

from pipelines.sd.components import assert_images_close


@pytest.fixture(scope="module")
def fp16_folder(sd_pipes, tmp_path_factory):
    """The tiny SD folder with an extra fp16 variant, as the Hub's SD1.5 repo has."""
    import diffusers

    folder = tmp_path_factory.mktemp("tiny_sd_fp16")
    theirs = diffusers.StableDiffusionPipeline(**sd_pipes[0].components)
    theirs.save_pretrained(folder)
    diffusers.StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16).save_pretrained(
        folder, variant="fp16"
    )
    return folder


def test_quicktour_000(sd_folder, tmp_path):
    from sfumato import DiffusionPipeline, EulerDiscreteScheduler

    pipeline = DiffusionPipeline.from_pretrained(sd_folder, use_safetensors=True)
    assert "StableDiffusionPipeline" in repr(pipeline) and "PNDMScheduler" in repr(pipeline)
    pipeline.to("cpu")
    image = pipeline("An image of a squirrel in Picasso style", num_inference_steps=2).images[0]
    assert isinstance(image, PIL.Image.Image) and image.size == (64, 64)
    image.save(tmp_path / "image_of_squirrel_painting.png")
    assert PIL.Image.open(tmp_path / "image_of_squirrel_painting.png").size == (64, 64)

    pipeline = DiffusionPipeline.from_pretrained(sd_folder, use_safetensors=True)
    pipeline.scheduler = EulerDiscreteScheduler.from_config(pipeline.scheduler.config)
    assert list(pipeline.config["scheduler"]) == ["diffusers", "EulerDiscreteScheduler"]
    euler = pipeline("An image of a squirrel in Picasso style", num_inference_steps=2).images[0]
    assert not np.array_equal(np.asarray(euler), np.asarray(image))  # the swap changed the sampler


def test_autopipeline_tutorial_001(fp16_folder):
    import diffusers

    from sfumato import AutoPipelineForText2Image

    pipeline = AutoPipelineForText2Image.from_pretrained(
        fp16_folder, torch_dtype=torch.float16, variant="fp16"
    )
    assert type(pipeline).__name__ == "StableDiffusionPipeline" and pipeline.unet.dtype == torch.float16
    prompt = "Astronaut in a 1700 New York, cold color palette, muted colors, detailed, 8k"
    kwargs = dict(guidance_scale=8.0, num_inference_steps=3, output_type="np")
    image = pipeline(prompt=prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
    theirs = diffusers.AutoPipelineForText2Image.from_pretrained(
        fp16_folder, torch_dtype=torch.float16, variant="fp16"
    )
    expected = theirs(prompt=prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert_images_close(expected, image, atol=2 / 255)  # fp16 on CPU: allow one more level
    # the two tutorial knobs change the result
    for change in (dict(guidance_scale=1.0), dict(num_inference_steps=2)):
        other = pipeline(prompt, generator=torch.Generator().manual_seed(0), **{**kwargs, **change}).images
        assert not np.allclose(other, image, atol=1e-3)
