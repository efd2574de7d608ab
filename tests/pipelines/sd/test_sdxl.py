"""SDXL text2img / img2img / refiner: the same folder and seeds give the same images as diffusers."""

import diffusers
import numpy as np
import pytest
import torch

import sfumato
from pipelines.sd.components import PROMPT, assert_images_close, make_image, quiet

# diffusers' schedulers call numpy on torch tensors, which numpy 2 warns about on every step
pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")]


def _gen(seed):
    if isinstance(seed, list):
        return [torch.Generator().manual_seed(s) for s in seed]
    return torch.Generator().manual_seed(seed)


def _both(pipes, seed=0, **kwargs):
    theirs, ours = pipes
    kwargs.setdefault("num_inference_steps", 3)
    kwargs.setdefault("output_type", "np")
    return theirs(generator=_gen(seed), **kwargs).images, ours(generator=_gen(seed), **kwargs).images


def _img2img(pipes):
    theirs, ours = pipes
    return quiet(
        diffusers.StableDiffusionXLImg2ImgPipeline(**theirs.components),
        sfumato.StableDiffusionXLImg2ImgPipeline(**ours.components),
    )


def test_text2img(sdxl_pipes):
    assert_images_close(*_both(sdxl_pipes, prompt=PROMPT))


def test_text2img_without_guidance_and_prompt_2(sdxl_pipes):
    assert_images_close(*_both(sdxl_pipes, prompt=PROMPT, prompt_2="oil painting", guidance_scale=1.0))


def test_text2img_batch_negatives_micro_conditioning(sdxl_pipes):
    theirs, ours = _both(
        sdxl_pipes, seed=[3, 4, 5, 6], prompt=[PROMPT, "a red house"], negative_prompt=["blurry", "dark"],
        negative_prompt_2="low quality", num_images_per_prompt=2, original_size=(128, 128),
        crops_coords_top_left=(8, 0), target_size=(64, 48), guidance_rescale=0.5,
    )  # fmt: skip
    assert ours.shape == (4, 64, 64, 3)
    assert_images_close(theirs, ours)


def test_text2img_negative_micro_conditioning(sdxl_pipes):
    out = _both(sdxl_pipes, prompt=PROMPT, negative_original_size=(32, 32), negative_target_size=(48, 48))
    assert_images_close(*out)


def test_text2img_stochastic_scheduler_and_denoising_end(sdxl_pipes):
    theirs, ours = (diffusers.StableDiffusionXLPipeline(**sdxl_pipes[0].components),
                    sfumato.StableDiffusionXLPipeline(**sdxl_pipes[1].components))  # fmt: skip
    theirs.scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(theirs.scheduler.config)
    ours.scheduler = sfumato.EulerAncestralDiscreteScheduler.from_config(ours.scheduler.config)
    out = _both(
        quiet(theirs, ours), prompt=PROMPT, num_inference_steps=4, denoising_end=0.6, output_type="latent"
    )
    assert out[1].shape == (1, 4, 8, 8)
    assert_images_close(out[0].numpy(), out[1].numpy(), atol=1e-4)


def test_callback_sees_added_conditioning(sdxl_pipes):
    seen = {"diffusers": [], "sfumato": []}

    def callback(pipe, i, t, tensors):
        seen[type(pipe).__module__.split(".")[0]].append(tuple(tensors["add_time_ids"].shape))
        return {"latents": tensors["latents"] + 0.1}

    inputs = ["latents", "add_time_ids", "add_text_embeds"]
    out = _both(
        sdxl_pipes, prompt=PROMPT, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=inputs
    )
    assert_images_close(*out)
    assert seen["sfumato"] == seen["diffusers"] == [(2, 6)] * 3


def test_img2img_strength_and_generators(sdxl_pipes):
    pipes = _img2img(sdxl_pipes)
    assert_images_close(*_both(pipes, prompt=PROMPT, image=make_image(), strength=0.6, num_inference_steps=4))
    out = _both(
        pipes,
        seed=[1, 2],
        prompt=PROMPT,
        image=make_image(4),
        num_images_per_prompt=2,
        guidance_scale=1.0,
        strength=0.7,
    )
    assert_images_close(*out)


def test_ensemble_of_experts(sdxl_pipes):
    """Base with denoising_end, then img2img on its latents with denoising_start (no noise added)."""
    theirs_base, ours_base = sdxl_pipes
    kwargs = dict(prompt=PROMPT, num_inference_steps=5)
    latents = _both(sdxl_pipes, **kwargs, denoising_end=0.6, output_type="latent")
    assert_images_close(latents[0].numpy(), latents[1].numpy(), atol=1e-4)
    theirs, ours = _img2img((theirs_base, ours_base))
    expected = theirs(
        image=latents[0], denoising_start=0.6, generator=_gen(1), output_type="np", **kwargs
    ).images
    got = ours(image=latents[1], denoising_start=0.6, generator=_gen(1), output_type="np", **kwargs).images
    assert_images_close(expected, got)


def test_refiner_aesthetic_score(sdxl_refiner_folder):
    pipes = quiet(
        diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(sdxl_refiner_folder),
        sfumato.DiffusionPipeline.from_pretrained(sdxl_refiner_folder),
    )
    assert type(pipes[1]) is sfumato.StableDiffusionXLImg2ImgPipeline and pipes[1].text_encoder is None
    assert pipes[1].config.requires_aesthetics_score is True
    kwargs = dict(prompt=PROMPT, image=make_image(), strength=0.5, num_inference_steps=4)
    theirs, ours = _both(pipes, aesthetic_score=7.0, negative_aesthetic_score=2.0, **kwargs)
    assert_images_close(theirs, ours)
    assert not np.allclose(ours, _both(pipes, **kwargs)[1], atol=1e-4)  # the score reaches the UNet


def test_auto_pipelines_pick_sdxl_classes(sdxl_folder, sdxl_pipes):
    pipe = sfumato.AutoPipelineForText2Image.from_pretrained(sdxl_folder)
    assert type(pipe) is sfumato.StableDiffusionXLPipeline
    img2img = sfumato.AutoPipelineForImage2Image.from_pipe(pipe)
    assert type(img2img) is sfumato.StableDiffusionXLImg2ImgPipeline and img2img.unet is pipe.unet
    assert type(sfumato.AutoPipelineForText2Image.from_pipe(img2img)) is sfumato.StableDiffusionXLPipeline


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(denoising_end=1.5), r"`denoising_end` must be a float strictly between 0 and 1"),
        (dict(height=60), r"divisible by 8"),
        (dict(prompt_embeds=torch.zeros(1, 77, 64), prompt=None), r"also pass `pooled_prompt_embeds`"),
    ],
)
def test_sdxl_bad_input(sdxl_pipes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sdxl_pipes[1](**{"prompt": PROMPT, **kwargs})


def test_aesthetic_score_on_a_base_unet_is_refused(sdxl_pipes):
    pipe = sfumato.StableDiffusionXLImg2ImgPipeline(
        **sdxl_pipes[1].components, requires_aesthetics_score=True
    )
    with pytest.raises(ValueError, match=r"expects added embeddings of size 64, but 5 time ids"):
        pipe(PROMPT, image=make_image(), num_inference_steps=2)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(strength=1.0, num_images_per_prompt=2, guidance_scale=1.0), dict(denoising_start=0.5)],
)
def test_inpaint(sdxl_pipes, kwargs):
    """A 4-channel SDXL UNet: blending with the noised image outside the mask after each step."""
    pipes = quiet(
        diffusers.StableDiffusionXLInpaintPipeline(**sdxl_pipes[0].components),
        sfumato.StableDiffusionXLInpaintPipeline(**sdxl_pipes[1].components),
    )
    from pipelines.sd.components import make_mask

    out = _both(
        pipes, prompt=PROMPT, image=make_image(5), mask_image=make_mask(), num_inference_steps=4, **kwargs
    )
    assert_images_close(*out)


def test_auto_inpainting_from_sdxl(sdxl_pipes):
    pipe = sfumato.AutoPipelineForInpainting.from_pipe(sdxl_pipes[1])
    assert (
        type(pipe) is sfumato.StableDiffusionXLInpaintPipeline
        and pipe.text_encoder_2 is sdxl_pipes[1].text_encoder_2
    )


def test_sfumato_sdxl_folder_loads_in_diffusers(sdxl_pipes, tmp_path):
    import json

    sdxl_pipes[1].save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]  # our encoders, saved as transformers'
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["force_zeros_for_empty_prompt"] is True
    theirs = diffusers.DiffusionPipeline.from_pretrained(tmp_path)
    assert type(theirs) is diffusers.StableDiffusionXLPipeline
    assert_images_close(*_both(quiet(theirs, sdxl_pipes[1]), prompt=PROMPT, num_inference_steps=2))


def test_encode_prompt_matches(sdxl_pipes):
    theirs, ours = sdxl_pipes
    args = (PROMPT, "a second prompt", "cpu", 2, True, "ugly")
    for expected, got in zip(theirs.encode_prompt(*args), ours.encode_prompt(*args)):
        torch.testing.assert_close(got, expected)


def test_fp16_img2img_upcasts_the_vae(sdxl_folder):
    """An fp16 pipeline encodes and decodes with the VAE in float32 (`force_upcast`), then puts it back."""
    pipes = quiet(
        diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(sdxl_folder, torch_dtype=torch.float16),
        sfumato.StableDiffusionXLImg2ImgPipeline.from_pretrained(sdxl_folder, torch_dtype=torch.float16),
    )
    assert pipes[1].vae.config.force_upcast is True
    theirs, ours = _both(pipes, prompt=PROMPT, image=make_image(), strength=0.7, num_inference_steps=3)
    assert_images_close(theirs, ours, atol=2 / 255)  # fp16 on CPU: allow one more level
    assert pipes[1].vae.dtype == torch.float16 and not np.isnan(ours).any()


def test_callbacks_see_the_denoising_fractions_as_properties(sdxl_pipes):
    """The refiner's callbacks read `pipe.denoising_start` / `pipe.denoising_end`, as in diffusers."""
    names = ("denoising_start", "denoising_end", "clip_skip", "guidance_rescale", "num_timesteps")
    seen = {"diffusers": [], "sfumato": []}

    def callback(pipe, i, t, tensors):
        seen[type(pipe).__module__.split(".")[0]].append({name: getattr(pipe, name) for name in names})
        return {}

    out = _both(
        _img2img(sdxl_pipes), prompt=PROMPT, image=make_image(), num_inference_steps=4, denoising_start=0.5,
        denoising_end=0.9, clip_skip=1, guidance_rescale=0.2, callback_on_step_end=callback,
    )  # fmt: skip
    assert_images_close(*out)
    assert seen["sfumato"] == seen["diffusers"] and len(seen["sfumato"]) > 0
    assert seen["sfumato"][0]["denoising_start"] == 0.5 and seen["sfumato"][0]["denoising_end"] == 0.9
