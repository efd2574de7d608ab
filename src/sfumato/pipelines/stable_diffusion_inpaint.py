"""`StableDiffusionInpaintPipeline`: repaint the masked region of an image, equal to diffusers' outputs.

9-channel UNets (SD inpainting checkpoints) see `cat([x, mask, masked_image_latents])`; 4-channel
ones (any SD checkpoint) are blended with the noised input outside the mask after each step
(both handled by `denoise.run` through `Inpainting`). Unlike diffusers, the default output size is
the input image's size (rounded down to a multiple of 8), not the UNet's sample size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .denoise import (
    Generator,
    Inpainting,
    StepCallback,
    randn_tensor,
    run,
    set_timesteps,
    strength_timesteps,
)
from .images import (
    OutputType,
    PipelineImageInput,
    check_batch_matches,
    check_mask_matches,
    default_size,
    mask_to_latents,
    masked_image,
    preprocess_image,
    preprocess_mask,
)
from .outputs import StableDiffusionPipelineOutput
from .sd_common import check_generators, check_strength_positive
from .stable_diffusion import StableDiffusionPipeline
from .stable_diffusion_img2img import repeat_to_batch
from .text import Prompt, batch_size_of


class InpaintMixin:
    """Inpainting steps shared by the SD and SDXL inpaint pipelines (mixed into a `StableDiffusionBase`)."""

    def check_inpaint_inputs(
        self, image: PipelineImageInput, mask_image: PipelineImageInput, strength: float
    ) -> None:
        check_strength_positive(strength)
        if image is None:
            raise ValueError("`image` is required for inpainting; pass a PIL image, array, tensor or path")
        if mask_image is None:
            raise ValueError("`mask_image` is required for inpainting (white = repaint, black = keep)")
        channels, latent = self.unet.config.in_channels, self.vae.config.latent_channels
        if channels not in (latent, 2 * latent + 1):
            raise ValueError(
                f"the UNet takes {channels} input channels; inpainting needs {latent} (any SD UNet) "
                f"or {2 * latent + 1} (an inpainting UNet: latents + mask + masked-image latents)"
            )
        if not isinstance(image, Tensor) or image.shape[-3] != latent:
            check_mask_matches(image, mask_image)

    def prepare_inpainting(
        self, pixels: Tensor, mask: Tensor, masked: Tensor | None, batch: int, generator: Generator
    ) -> Inpainting:
        """Mask and masked-image latents at latent size (VAE samples drawn in diffusers' order)."""
        concat = self.unet.config.in_channels != self.vae.config.latent_channels
        f = self.vae_scale_factor
        if masked is None:
            masked = masked_image(pixels, mask)
        mask = repeat_to_batch(
            mask_to_latents(mask, pixels.shape[-2] // f, pixels.shape[-1] // f), batch, "mask"
        )
        # diffusers encodes the masked image even for 4-channel UNets; it consumes generator draws
        encoded = (
            masked
            if masked.shape[1] == self.vae.config.latent_channels
            else self.encode_vae(masked, generator)
        )
        masked_latents = repeat_to_batch(encoded, batch, "masked_image_latents")
        return Inpainting(mask=mask, masked_image_latents=masked_latents if concat else None)

    def inpaint_latents(
        self,
        pixels: Tensor,
        mask: Tensor,
        masked: Tensor | None,
        t_start: Tensor,
        from_noise: bool,
        batch: int,
        generator: Generator,
        latents: Tensor | None,
        add_noise: bool = True,
    ) -> tuple[Tensor, Inpainting]:
        """Starting latents and the loop's inpainting inputs, with generator draws in diffusers' order.

        Pure noise at strength 1, else the image latents noised to `t_start`; `add_noise=False`
        (SDXL `denoising_start`) starts from the image latents themselves.
        """
        f, c = self.vae_scale_factor, self.vae.config.latent_channels
        blend = self.unet.config.in_channels == c  # 4-channel UNet: blend with the image latents each step
        x0 = None
        if pixels.shape[1] == c or blend or (latents is None and not from_noise) or not add_noise:
            x0 = pixels if pixels.shape[1] == c else self.encode_vae(pixels, generator)
            x0 = x0.repeat(batch // x0.shape[0], 1, 1, 1)
        shape = (batch, c, pixels.shape[-2] // f, pixels.shape[-1] // f)
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}, expected {shape}")
        if latents is not None and add_noise:
            noise = latents.to(pixels.device)
            latents = noise * self.scheduler.init_noise_sigma
        else:
            noise = randn_tensor(shape, generator, pixels.device, pixels.dtype)
            if not add_noise:
                latents = x0
            elif from_noise:
                latents = noise * self.scheduler.init_noise_sigma
            else:
                latents = self.scheduler.add_noise(x0, noise, t_start)
        inpainting = self.prepare_inpainting(pixels, mask, masked, batch, generator)
        if blend:
            inpainting.image_latents, inpainting.noise = x0, noise
        return latents, inpainting


class StableDiffusionInpaintPipeline(InpaintMixin, StableDiffusionPipeline):
    """Text-guided inpainting with a 9-channel inpainting UNet or a plain 4-channel one."""

    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = (
        "latents", "prompt_embeds", "negative_prompt_embeds", "mask", "masked_image_latents",
    )  # fmt: skip

    @torch.no_grad()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: PipelineImageInput = None,
        mask_image: PipelineImageInput = None,
        masked_image_latents: Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        strength: float = 1.0,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator = None,
        latents: Tensor | None = None,
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
        """Repaint where `mask_image` is white, guided by `prompt`; see diffusers' inpaint pipeline for arguments."""
        callback_on_step_end_tensor_inputs = getattr(
            callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs
        )
        self.check_inpaint_inputs(image, mask_image, strength)
        height, width = default_size(image, height, width, self.vae_scale_factor)
        self.check_common(
            num_inference_steps=num_inference_steps, timesteps=timesteps, sigmas=sigmas,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, height=height, width=width,
        )  # fmt: skip
        batch = batch_size_of(prompt, prompt_embeds) * num_images_per_prompt
        check_generators(generator, batch)
        pixels = preprocess_image(image, height, width, vae_scale_factor=self.vae_scale_factor).float()
        mask = preprocess_mask(mask_image, height, width, vae_scale_factor=self.vae_scale_factor)
        check_batch_matches(pixels, mask)
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
        _, total = set_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        steps, _ = strength_timesteps(self.scheduler, total, strength, required=True)
        self._num_timesteps = len(steps)
        dtype = embeds.prompt_embeds.dtype
        latents, inpainting = self.inpaint_latents(
            pixels.to(device=device, dtype=dtype), mask.to(device=device, dtype=dtype), masked_image_latents,
            steps[:1].repeat(batch), strength == 1.0, batch, generator, latents,
        )  # fmt: skip
        latents = run(
            self.unet, self.scheduler, latents, steps,
            conditioning=self.conditioning(embeds, guidance, batch, cross_attention_kwargs),
            guidance=guidance, inpainting=inpainting, step_kwargs={"eta": eta, "generator": generator},
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return self.decode_and_finish(latents, output_type, return_dict)
