"""`StableDiffusionXLPipeline`: text-to-image with SDXL (Podell et al. 2023), equal to diffusers' outputs.

SDXL adds to SD: two text encoders (penultimate states concatenated, pooled embeddings from the
second), and "micro-conditioning" time ids `(original_size, crops_coords_top_left, target_size)`
(refiner: `aesthetic_score` instead of `target_size`), both fed through `added_cond_kwargs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .denoise import (
    Conditioning,
    Generator,
    StepCallback,
    denoising_end_timesteps,
    prepare_latents,
    run,
    set_timesteps,
)
from .guidance import ClassifierFreeGuidance, cat_for_cfg
from .images import OutputType, postprocess
from .outputs import BaseOutput, Images, finish
from .sd_common import StableDiffusionBase, check_generators
from .text import Prompt, PromptEmbeds, batch_size_of, encode_prompt_sdxl

Size = tuple[int, int]


@dataclass
class StableDiffusionXLPipelineOutput(BaseOutput):
    images: Images


def check_fraction(value: float | None, name: str) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, float) or not 0.0 < value < 1.0
    ):
        raise ValueError(
            f"`{name}` must be a float strictly between 0 and 1 (a fraction of the schedule), got {value!r}"
        )


def check_denoising(denoising_start: float | None, denoising_end: float | None) -> None:
    check_fraction(denoising_start, "denoising_start")
    check_fraction(denoising_end, "denoising_end")
    if denoising_start is not None and denoising_end is not None and denoising_start >= denoising_end:
        raise ValueError(
            f"`denoising_start` ({denoising_start}) must be below `denoising_end` ({denoising_end})"
        )


class StableDiffusionXLPipeline(StableDiffusionBase):
    """Text-to-image with SDXL base (two CLIP text encoders, micro-conditioned UNet)."""

    _optional_components: ClassVar[tuple[str, ...]] = (
        "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "image_encoder", "feature_extractor",
    )  # fmt: skip
    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = (
        "latents", "prompt_embeds", "add_text_embeds", "add_time_ids",
    )  # fmt: skip
    model_cpu_offload_seq: ClassVar[str | None] = "text_encoder->text_encoder_2->image_encoder->unet->vae"
    _upcast_vae_encode: ClassVar[bool] = True

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
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
    ) -> None:
        # no invisible watermark is applied; `add_watermarker` is kept in the config for round trips
        self.register_to_config(
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=add_watermarker
        )
        self.register_modules(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
            tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, image_encoder=image_encoder,
            feature_extractor=feature_extractor,
        )  # fmt: skip

    @property
    def denoising_end(self) -> float | None:
        return getattr(self, "_denoising_end", None)

    def text_dtype(self) -> torch.dtype:
        encoder = getattr(self, "text_encoder_2", None) or getattr(self, "text_encoder", None)
        return encoder.dtype if encoder is not None else self.unet.dtype

    def encode_prompt(
        self,
        prompt: Prompt | None,
        prompt_2: Prompt | None = None,
        device: torch.device | str | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: Prompt | None = None,
        negative_prompt_2: Prompt | None = None,
        prompt_embeds: Tensor | None = None,
        negative_prompt_embeds: Tensor | None = None,
        pooled_prompt_embeds: Tensor | None = None,
        negative_pooled_prompt_embeds: Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds) (diffusers API)."""
        e = encode_prompt_sdxl(
            self.tokenizer, self.tokenizer_2, self.text_encoder, self.text_encoder_2, prompt, prompt_2,
            device=device or self._execution_device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=do_classifier_free_guidance, negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, clip_skip=clip_skip,
            force_zeros_for_empty_prompt=self.config.force_zeros_for_empty_prompt,
        )  # fmt: skip
        return (
            e.prompt_embeds,
            e.negative_prompt_embeds,
            e.pooled_prompt_embeds,
            e.negative_pooled_prompt_embeds,
        )

    def encode_sdxl(
        self, guidance: ClassifierFreeGuidance, num_images_per_prompt: int, **prompts: Any
    ) -> PromptEmbeds:
        """`text.encode_prompt_sdxl` with this pipeline's encoders; `prompts` are the call's prompt arguments."""
        return encode_prompt_sdxl(
            self.tokenizer, self.tokenizer_2, self.text_encoder, self.text_encoder_2,
            device=self._execution_device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=guidance.active,
            force_zeros_for_empty_prompt=self.config.force_zeros_for_empty_prompt, **prompts,
        )  # fmt: skip

    def time_ids(self, *parts: Sequence[float], dtype: torch.dtype, pooled_dim: int) -> Tensor:
        """(1, n) micro-conditioning ids; checks their embedding size against the UNet's."""
        ids = [float(x) for part in parts for x in part]
        given = self.unet.config.addition_time_embed_dim * len(ids) + pooled_dim
        expected = self.unet.config.projection_class_embeddings_input_dim
        if expected is not None and given != expected:
            raise ValueError(
                f"the UNet expects added embeddings of size {expected}, but {len(ids)} time ids and pooled text "
                f"embeddings of size {pooled_dim} give {given}; check `requires_aesthetics_score` and the "
                "text_encoder_2 projection_dim"
            )
        return torch.tensor([ids], dtype=dtype)

    def text2img_time_ids(
        self, embeds: PromptEmbeds, size: Size, dtype: torch.dtype, original: Size | None, crops: Size,
        target: Size | None, negative_original: Size | None, negative_crops: Size, negative_target: Size | None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(time ids, negative time ids); the negatives equal the positives unless both negative sizes are given."""
        pooled_dim = self.pooled_dim(embeds)
        ids = self.time_ids(original or size, crops, target or size, dtype=dtype, pooled_dim=pooled_dim)
        if negative_original is None or negative_target is None:
            return ids, ids
        return ids, self.time_ids(
            negative_original, negative_crops, negative_target, dtype=dtype, pooled_dim=pooled_dim
        )

    def pooled_dim(self, embeds: PromptEmbeds) -> int:
        encoder = getattr(self, "text_encoder_2", None)
        return (
            encoder.config.projection_dim
            if encoder is not None
            else int(embeds.pooled_prompt_embeds.shape[-1])
        )

    def sdxl_conditioning(
        self,
        embeds: PromptEmbeds,
        guidance: ClassifierFreeGuidance,
        time_ids: Tensor,
        negative_time_ids: Tensor,
        batch: int,
        cross_attention_kwargs: dict[str, Any] | None,
    ) -> Conditioning:
        """UNet conditioning in `[negative, positive]` order, time ids repeated per image."""
        device = self._execution_device
        text = cat_for_cfg(embeds.negative_prompt_embeds, embeds.prompt_embeds, guidance)
        pooled = cat_for_cfg(embeds.negative_pooled_prompt_embeds, embeds.pooled_prompt_embeds, guidance)
        ids = time_ids.repeat(batch, 1)
        if guidance.active:
            ids = torch.cat([negative_time_ids.repeat(batch, 1), ids])
        return Conditioning(
            encoder_hidden_states=text.to(device),
            added_cond_kwargs={"text_embeds": pooled.to(device), "time_ids": ids.to(device)},
            timestep_cond=self.timestep_cond(guidance.guidance_scale, batch, embeds.prompt_embeds.dtype),
            cross_attention_kwargs=cross_attention_kwargs,
        )

    def decode_and_finish(
        self, latents: Tensor, output_type: OutputType, return_dict: bool
    ) -> StableDiffusionXLPipelineOutput | tuple:
        """Decode (in float32 when an fp16 VAE has `force_upcast`, as SDXL's VAE overflows in fp16)."""
        if output_type == "latent":
            return finish(StableDiffusionXLPipelineOutput(images=latents), return_dict)
        vae, config = self.vae, self.vae.config
        upcast = vae.dtype == torch.float16 and config.get("force_upcast", False)
        dtype = torch.float32 if upcast else vae.dtype
        if config.get("latents_mean") is not None and config.get("latents_std") is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        if upcast:
            vae.to(torch.float32)
        try:
            image = vae.decode(latents.to(dtype), return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
        return finish(StableDiffusionXLPipelineOutput(images=postprocess(image, output_type)), return_dict)

    @torch.no_grad()
    def __call__(
        self,
        prompt: Prompt | None = None,
        prompt_2: Prompt | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
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
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionXLPipelineOutput | tuple:
        """Generate images from `prompt` (and `prompt_2` for the second encoder); see diffusers' SDXL pipeline."""
        height, width = self.default_size(height, width)
        inputs = getattr(callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs)
        self.check_common(
            num_inference_steps=num_inference_steps, timesteps=timesteps, sigmas=sigmas,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
            callback_on_step_end_tensor_inputs=inputs, height=height, width=width,
        )  # fmt: skip
        check_fraction(denoising_end, "denoising_end")
        batch = batch_size_of(prompt, prompt_embeds) * num_images_per_prompt
        check_generators(generator, batch)
        guidance = self.start_call(
            guidance_scale, guidance_rescale, clip_skip=clip_skip,
            cross_attention_kwargs=cross_attention_kwargs, denoising_end=denoising_end,
        )  # fmt: skip
        device = self._execution_device
        embeds = self.encode_sdxl(
            guidance, num_images_per_prompt, prompt=prompt, prompt_2=prompt_2, negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds, clip_skip=clip_skip,
        )  # fmt: skip
        steps, _ = set_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        f = self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, height // f, width // f)
        dtype = embeds.prompt_embeds.dtype
        latents = prepare_latents(shape, self.scheduler, generator, device, dtype, latents)
        ids, negative_ids = self.text2img_time_ids(
            embeds, (height, width), dtype, original_size, crops_coords_top_left, target_size,
            negative_original_size, negative_crops_coords_top_left, negative_target_size,
        )  # fmt: skip
        steps = denoising_end_timesteps(self.scheduler, steps, denoising_end)
        self._num_timesteps = len(steps)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)
        latents = run(
            self.unet, self.scheduler, latents, steps,
            conditioning=self.sdxl_conditioning(embeds, guidance, ids, negative_ids, batch, cross_attention_kwargs),
            guidance=guidance, step_kwargs={"eta": eta, "generator": generator}, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=inputs, pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return self.decode_and_finish(latents, output_type, return_dict)
