"""Bad inputs to the Stable Diffusion pipelines: a clear error naming the problem, before any denoising."""

import pytest
import torch

import sfumato
from pipelines.sd.components import PROMPT, make_image, make_mask


@pytest.fixture(scope="module")
def pipes(sd_pipes, sd_inpaint_pipes):
    """sfumato text2img, img2img, inpaint (9-channel) pipelines whose UNet must never run."""
    ours, inpaint = sd_pipes[1], sd_inpaint_pipes[1]

    class NoUNet(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.config = unet.config
            self.dtype = unet.dtype

        def forward(self, *args, **kwargs):
            raise AssertionError("the UNet ran although the input was bad")

    text2img = sfumato.StableDiffusionPipeline(**{**ours.components, "unet": NoUNet(ours.unet)})
    img2img = sfumato.StableDiffusionImg2ImgPipeline(**text2img.components)
    inpaint = sfumato.StableDiffusionInpaintPipeline(**{**inpaint.components, "unet": NoUNet(inpaint.unet)})
    return text2img, img2img, inpaint


CASES = [
    (dict(height=65), ValueError, r"divisible by 8.*height=65 -> 64 or 72"),
    (dict(width=36), ValueError, r"divisible by 8"),
    (dict(height=0), ValueError, r"`height` must be a positive multiple of 8"),
    (dict(num_inference_steps=0), ValueError, r"`num_inference_steps` must be >= 1"),
    (dict(num_inference_steps=2.5), TypeError, r"`num_inference_steps` must be an int"),
    (dict(prompt_embeds=torch.zeros(1, 77, 32)), ValueError, r"either `prompt` or `prompt_embeds`, not both"),
    (dict(prompt=None), ValueError, r"provide either `prompt` or `prompt_embeds`"),
    (dict(prompt=123), TypeError, r"`prompt` has to be a str or a list of str"),
    (dict(prompt=["a", "b"], negative_prompt=["x"]), ValueError, r"`negative_prompt` has batch size 1 but"),
    (
        dict(generator=[torch.Generator()] * 3, num_images_per_prompt=2),
        ValueError,
        r"3 generators .* batch size of 2",
    ),
    (dict(num_images_per_prompt=0), ValueError, r"`num_images_per_prompt` must be >= 1"),
    (dict(output_type="foo"), ValueError, r"`output_type` must be one of 'pil', 'np', 'pt', 'latent'"),
    (dict(guidance_scale=float("nan")), ValueError, r"`guidance_scale` must be a finite number"),
    (dict(timesteps=[999, 500], sigmas=[1.0, 0.5]), ValueError, r"either `timesteps` or `sigmas`"),
    (
        dict(latents=torch.zeros(1, 4, 9, 9)),
        ValueError,
        r"`latents` has shape \(1, 4, 9, 9\), expected \(1, 4, 8, 8\)",
    ),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), ValueError, r"may only name .*got \['noise'\]"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), CASES)
def test_text2img_bad_input(pipes, kwargs, error, message):
    kwargs = {"prompt": PROMPT, "num_inference_steps": 2, **kwargs}
    with pytest.raises(error, match=message):
        pipes[0](**kwargs)


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, float("nan")])
def test_strength_outside_0_1(pipes, strength):
    for pipe, extra in ((pipes[1], {}), (pipes[2], {"mask_image": make_mask()})):
        with pytest.raises(ValueError, match=r"`strength` must be in \(0.0, 1.0\]"):
            pipe(PROMPT, image=make_image(), strength=strength, **extra)


def test_img2img_needs_an_image(pipes):
    with pytest.raises(ValueError, match="`image` is required"):
        pipes[1](PROMPT)


def test_inpaint_mask_size_differs(pipes):
    with pytest.raises(ValueError, match=r"`mask_image` is 32x32 \(width x height\) but `image` is 64x64"):
        pipes[2](PROMPT, image=make_image(), mask_image=make_mask(32))


def test_inpaint_needs_a_mask(pipes):
    with pytest.raises(ValueError, match="`mask_image` is required"):
        pipes[2](PROMPT, image=make_image())


def test_inpaint_strength_leaving_no_step(pipes):
    with pytest.raises(
        ValueError, match=r"strength=0.1 leaves no denoising step out of num_inference_steps=2"
    ):
        pipes[2](PROMPT, image=make_image(), mask_image=make_mask(), strength=0.1, num_inference_steps=2)


def test_text2img_refuses_an_inpainting_unet(sd_inpaint_pipes):
    pipe = sfumato.StableDiffusionPipeline(**sd_inpaint_pipes[1].components)
    with pytest.raises(ValueError, match=r"takes 9 input channels .* use StableDiffusionInpaintPipeline"):
        pipe(PROMPT, num_inference_steps=1)
