"""`StableDiffusionXLInpaintPipeline`: SDXL inpainting (4- or 9-channel UNets), equal to diffusers' outputs.

The inpainting steps are the SD ones (`InpaintMixin`); the conditioning is SDXL's. As in the SD
inpaint pipeline, the default output size is the input image's size rounded down to a multiple of 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .denoise import (
    Generator,
    StepCallback,
    denoising_end_timesteps,
    run,
    set_timesteps,
    strength_timesteps,
)
from .images import (
    OutputType,
    PipelineImageInput,
    check_batch_matches,
    default_size,
    preprocess_image,
    preprocess_mask,
)
from .sd_common import check_generators
from .stable_diffusion_inpaint import InpaintMixin
from .stable_diffusion_xl import Size, StableDiffusionXLPipelineOutput, check_denoising
from .stable_diffusion_xl_img2img import StableDiffusionXLImg2ImgPipeline
from .text import Prompt, batch_size_of


class StableDiffusionXLInpaintPipeline(InpaintMixin, StableDiffusionXLImg2ImgPipeline):
    """Text-guided SDXL inpainting."""

    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = (
        "latents", "prompt_embeds", "add_text_embeds", "add_time_ids", "mask", "masked_image_latents",
    )  # fmt: skip

    @torch.no_grad()
    def __call__(
        self,
        prompt: Prompt | None = None,
        prompt_2: Prompt | None = None,
        image: PipelineImageInput = None,
        mask_image: PipelineImageInput = None,
        masked_image_latents: Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        strength: float = 0.9999,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        denoising_start: float | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: Prompt | None = None,
        negative_prompt_2: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator = None,
        latents: Tensor | None = None,
        prompt_embeds: Tensor | None = None,
        negative_prompt_embeds: Tensor | None = None,
        pooled_prompt_embeds: Tensor | None = None,
        negative_pooled_prompt_embeds: Tensor | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        original_size: Size | None = None,
        crops_coords_top_left: Size = (0, 0),
        target_size: Size | None = None,
        negative_original_size: Size | None = None,
        negative_crops_coords_top_left: Size = (0, 0),
        negative_target_size: Size | None = None,
        aesthetic_score: float = 6.0,
        negative_aesthetic_score: float = 2.5,
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionXLPipelineOutput | tuple:
        """Repaint where `mask_image` is white; see diffusers' SDXL inpaint pipeline for each argument."""
        sizes = dict(
            original_size=original_size, crops_coords_top_left=crops_coords_top_left, target_size=target_size,
            negative_original_size=negative_original_size, negative_target_size=negative_target_size,
            negative_crops_coords_top_left=negative_crops_coords_top_left, aesthetic_score=aesthetic_score,
            negative_aesthetic_score=negative_aesthetic_score,
        )  # fmt: skip
        inputs = getattr(callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs)
        self.check_inpaint_inputs(image, mask_image, strength)
        height, width = default_size(image, height, width, self.vae_scale_factor)
        self.check_common(
            num_inference_steps=num_inference_steps, timesteps=timesteps, sigmas=sigmas,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
            callback_on_step_end_tensor_inputs=inputs, height=height, width=width,
        )  # fmt: skip
        check_denoising(denoising_start, denoising_end)
        batch = batch_size_of(prompt, prompt_embeds) * num_images_per_prompt
        check_generators(generator, batch)
        pixels = preprocess_image(image, height, width, vae_scale_factor=self.vae_scale_factor).float()
        mask = preprocess_mask(mask_image, height, width, vae_scale_factor=self.vae_scale_factor)
        check_batch_matches(pixels, mask)
        guidance = self.start_call(
            guidance_scale, guidance_rescale, clip_skip=clip_skip, cross_attention_kwargs=cross_attention_kwargs,
            denoising_start=denoising_start, denoising_end=denoising_end,
        )  # fmt: skip
        embeds = self.encode_sdxl(
            guidance, num_images_per_prompt, prompt=prompt, prompt_2=prompt_2, negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, clip_skip=clip_skip,
        )  # fmt: skip
        device, dtype = self._execution_device, embeds.prompt_embeds.dtype
        _, n = set_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        steps, _ = strength_timesteps(self.scheduler, n, strength, denoising_start, required=True)
        latents, inpainting = self.inpaint_latents(
            pixels.to(device=device, dtype=dtype), mask.to(device=device, dtype=dtype), masked_image_latents,
            steps[:1].repeat(batch), strength == 1.0, batch, generator, latents, add_noise=denoising_start is None,
        )  # fmt: skip
        f = self.vae_scale_factor
        ids, negative_ids = self.micro_conditioning(
            embeds, (latents.shape[-2] * f, latents.shape[-1] * f), sizes, dtype
        )
        steps = denoising_end_timesteps(self.scheduler, steps, denoising_end)
        self._num_timesteps = len(steps)
        latents = run(
            self.unet, self.scheduler, latents, steps,
            conditioning=self.sdxl_conditioning(embeds, guidance, ids, negative_ids, batch, cross_attention_kwargs),
            guidance=guidance, inpainting=inpainting, step_kwargs={"eta": eta, "generator": generator},
            callback_on_step_end=callback_on_step_end, callback_on_step_end_tensor_inputs=inputs,
            pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return self.decode_and_finish(latents, output_type, return_dict)
