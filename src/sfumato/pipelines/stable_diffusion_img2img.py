"""`StableDiffusionImg2ImgPipeline`: SDEdit (Meng et al. 2022) with SD 1.x/2.x, equal to diffusers' outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .denoise import Generator, StepCallback, run, set_timesteps, strength_timesteps
from .images import OutputType, PipelineImageInput, preprocess_image
from .outputs import StableDiffusionPipelineOutput
from .sd_common import check_generators, check_strength_positive
from .stable_diffusion import StableDiffusionPipeline
from .text import Prompt


def repeat_to_batch(x: Tensor, batch: int, name: str) -> Tensor:
    """Tile `x` along the batch axis (`[a, b] -> [a, b, a, b]`, diffusers' order) up to `batch` rows."""
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"cannot spread {x.shape[0]} `{name}` items over an effective batch size of {batch}")
    return torch.cat([x] * (batch // x.shape[0]))


def image_latents(pipe: Any, image: Tensor, batch: int, generator: Generator) -> Tensor:
    """(batch, C, h, w) scaled latents of `image` (diffusers' order of generator draws)."""
    if image.shape[1] == pipe.vae.config.latent_channels:
        return repeat_to_batch(image, batch, "image")  # already latents
    if isinstance(generator, (list, tuple)):
        image = repeat_to_batch(image, batch, "image")  # one VAE sample per generator
    return repeat_to_batch(pipe.encode_vae(image, generator), batch, "image")


class StableDiffusionImg2ImgPipeline(StableDiffusionPipeline):
    """Image-to-image: noise the encoded `image` to the `strength` point of the schedule, then denoise."""

    def check_image_inputs(self, image: PipelineImageInput, strength: float) -> None:
        check_strength_positive(strength)
        if image is None:
            raise ValueError(
                "`image` is required for image-to-image; pass a PIL image, array, tensor or path"
            )

    @torch.no_grad()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: PipelineImageInput = None,
        strength: float = 0.8,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator = None,
        prompt_embeds: Tensor | None = None,
        negative_prompt_embeds: Tensor | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple:
        """Repaint `image` guided by `prompt`; `strength` in (0, 1] is how much of the schedule runs.

        The output has the input's size rounded down to a multiple of 8. Returns
        `StableDiffusionPipelineOutput(images, nsfw_content_detected=None)`.
        """
        callback_on_step_end_tensor_inputs = getattr(
            callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs
        )
        self.check_image_inputs(image, strength)
        self.check_common(
            num_inference_steps=num_inference_steps, timesteps=timesteps, sigmas=sigmas,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )  # fmt: skip
        batch = self.check_text2img(prompt, prompt_embeds) * num_images_per_prompt
        check_generators(generator, batch)
        pixels = preprocess_image(image, vae_scale_factor=self.vae_scale_factor, latent_channels=4)
        guidance = self.start_call(
            guidance_scale,
            guidance_rescale,
            clip_skip=clip_skip,
            cross_attention_kwargs=cross_attention_kwargs,
        )
        device = self._execution_device
        embeds = self._encode(
            prompt, device, num_images_per_prompt, guidance.active, negative_prompt,
            prompt_embeds, negative_prompt_embeds, clip_skip,
        )  # fmt: skip
        _, n = set_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        steps, _ = strength_timesteps(self.scheduler, n, strength)
        self._num_timesteps = len(steps)
        dtype = embeds.prompt_embeds.dtype
        x0 = image_latents(self, pixels.to(device=device, dtype=dtype), batch, generator)
        latents = self.scheduler.add_noise(x0, self.noise_like(x0, generator), steps[:1].repeat(batch))
        latents = run(
            self.unet, self.scheduler, latents, steps,
            conditioning=self.conditioning(embeds, guidance, batch, cross_attention_kwargs),
            guidance=guidance, step_kwargs={"eta": eta, "generator": generator},
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return self.decode_and_finish(latents, output_type, return_dict)
