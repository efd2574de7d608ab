"""`StableDiffusionXLImg2ImgPipeline`: SDXL image-to-image and the SDXL refiner, equal to diffusers' outputs.

The refiner (`requires_aesthetics_score=True`) conditions on `aesthetic_score` instead of
`target_size`. For an ensemble of experts, run the base with `denoising_end=f, output_type="latent"`
and pass its latents as `image` here with `denoising_start=f`: the refiner continues the schedule
from there, adding no noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .denoise import Generator, StepCallback, denoising_end_timesteps, run, set_timesteps, strength_timesteps
from .images import OutputType, PipelineImageInput, preprocess_image
from .sd_common import check_generators, check_strength_positive
from .stable_diffusion_img2img import image_latents
from .stable_diffusion_xl import (
    Size,
    StableDiffusionXLPipeline,
    StableDiffusionXLPipelineOutput,
    check_denoising,
)
from .text import Prompt, PromptEmbeds, batch_size_of


class StableDiffusionXLImg2ImgPipeline(StableDiffusionXLPipeline):
    """SDXL image-to-image (base or refiner checkpoints)."""

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        text_encoder_2: Any,
        tokenizer: Any,
        tokenizer_2: Any,
        unet: Any,
        scheduler: Any,
        image_encoder: Any = None,
        feature_extractor: Any = None,
        requires_aesthetics_score: bool = False,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
    ) -> None:
        self.register_to_config(requires_aesthetics_score=requires_aesthetics_score)
        super().__init__(
            vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, unet, scheduler, image_encoder,
            feature_extractor, force_zeros_for_empty_prompt, add_watermarker,
        )  # fmt: skip

    @property
    def denoising_start(self) -> float | None:
        return getattr(self, "_denoising_start", None)

    def micro_conditioning(
        self, embeds: PromptEmbeds, size: Size, sizes: dict[str, Any], dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """(time ids, negative time ids): sizes and crops, then target size or (refiner) aesthetic score."""
        original = sizes["original_size"] or size
        target = sizes["target_size"] or size
        negative_original = sizes["negative_original_size"] or original
        negative_target = sizes["negative_target_size"] or target
        crops = sizes["crops_coords_top_left"]
        if self.config.requires_aesthetics_score:
            last, negative_last = (sizes["aesthetic_score"],), (sizes["negative_aesthetic_score"],)
            negative_crops = sizes["negative_crops_coords_top_left"]
        else:
            last, negative_last, negative_crops = (
                target,
                negative_target,
                crops,
            )  # diffusers reuses `crops` here
        pooled_dim = self.pooled_dim(embeds)
        ids = self.time_ids(original, crops, last, dtype=dtype, pooled_dim=pooled_dim)
        negative_ids = self.time_ids(
            negative_original, negative_crops, negative_last, dtype=dtype, pooled_dim=pooled_dim
        )
        return ids, negative_ids

    def start_latents(
        self, image: PipelineImageInput, steps: Tensor, batch: int, add_noise: bool, generator: Generator
    ) -> Tensor:
        """Latents of `image`, noised to `steps[0]` unless `add_noise` is False (denoising_start)."""
        pixels = preprocess_image(image, vae_scale_factor=self.vae_scale_factor, latent_channels=4)
        pixels = pixels.to(device=self._execution_device, dtype=self.text_dtype())
        x0 = image_latents(self, pixels, batch, generator)
        if not add_noise:
            return x0
        return self.scheduler.add_noise(x0, self.noise_like(x0, generator), steps[:1].repeat(batch))

    @torch.no_grad()
    def __call__(
        self,
        prompt: Prompt | None = None,
        prompt_2: Prompt | None = None,
        image: PipelineImageInput = None,
        strength: float = 0.3,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        denoising_start: float | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = 5.0,
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
        """Repaint `image` guided by `prompt`; `strength` (or `denoising_start`) picks where the schedule starts."""
        sizes = dict(
            original_size=original_size, crops_coords_top_left=crops_coords_top_left, target_size=target_size,
            negative_original_size=negative_original_size, negative_target_size=negative_target_size,
            negative_crops_coords_top_left=negative_crops_coords_top_left, aesthetic_score=aesthetic_score,
            negative_aesthetic_score=negative_aesthetic_score,
        )  # fmt: skip
        inputs = getattr(callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs)
        check_strength_positive(strength)
        if image is None:
            raise ValueError(
                "`image` is required for image-to-image; pass a PIL image, array, tensor or path"
            )
        self.check_common(
            num_inference_steps=num_inference_steps, timesteps=timesteps, sigmas=sigmas,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
            callback_on_step_end_tensor_inputs=inputs,
        )  # fmt: skip
        check_denoising(denoising_start, denoising_end)
        batch = batch_size_of(prompt, prompt_embeds) * num_images_per_prompt
        check_generators(generator, batch)
        guidance = self.start_call(
            guidance_scale, guidance_rescale, clip_skip=clip_skip, cross_attention_kwargs=cross_attention_kwargs,
            denoising_start=denoising_start, denoising_end=denoising_end,
        )  # fmt: skip
        device = self._execution_device
        embeds = self.encode_sdxl(
            guidance, num_images_per_prompt, prompt=prompt, prompt_2=prompt_2, negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, clip_skip=clip_skip,
        )  # fmt: skip
        _, n = set_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        steps, _ = strength_timesteps(self.scheduler, n, strength, denoising_start)
        if latents is None:
            latents = self.start_latents(image, steps, batch, denoising_start is None, generator)
        f = self.vae_scale_factor
        size = (latents.shape[-2] * f, latents.shape[-1] * f)
        ids, negative_ids = self.micro_conditioning(embeds, size, sizes, embeds.prompt_embeds.dtype)
        steps = denoising_end_timesteps(self.scheduler, steps, denoising_end)
        self._num_timesteps = len(steps)
        latents = run(
            self.unet, self.scheduler, latents, steps,
            conditioning=self.sdxl_conditioning(embeds, guidance, ids, negative_ids, batch, cross_attention_kwargs),
            guidance=guidance, step_kwargs={"eta": eta, "generator": generator}, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=inputs, pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return self.decode_and_finish(latents, output_type, return_dict)
