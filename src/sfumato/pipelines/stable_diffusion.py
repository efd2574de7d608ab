"""`StableDiffusionPipeline`: text-to-image with SD 1.x/2.x (Rombach et al. 2022), equal to diffusers' outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .denoise import Conditioning, Generator, StepCallback, prepare_latents, run, set_timesteps
from .guidance import ClassifierFreeGuidance, cat_for_cfg
from .images import OutputType
from .outputs import StableDiffusionPipelineOutput
from .sd_common import StableDiffusionBase, check_generators
from .text import Prompt, PromptEmbeds, batch_size_of, encode_prompt


class StableDiffusionPipeline(StableDiffusionBase):
    """Text-to-image: CLIP text encoder + UNet2DConditionModel + AutoencoderKL + any scheduler."""

    def encode_prompt(
        self,
        prompt: Prompt | None,
        device: torch.device | str | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: Prompt | None = None,
        prompt_embeds: Tensor | None = None,
        negative_prompt_embeds: Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(prompt_embeds, negative_prompt_embeds), each repeated `num_images_per_prompt` times (diffusers API).

        `lora_scale` is accepted for signature compatibility; sfumato has no LoRA layers yet.
        """
        out = self._encode(
            prompt, device, num_images_per_prompt, do_classifier_free_guidance, negative_prompt,
            prompt_embeds, negative_prompt_embeds, clip_skip,
        )  # fmt: skip
        return out.prompt_embeds, out.negative_prompt_embeds

    def _encode(
        self,
        prompt: Prompt | None,
        device: torch.device | str | None,
        num_images_per_prompt: int,
        cfg: bool,
        negative_prompt: Prompt | None,
        prompt_embeds: Tensor | None,
        negative_prompt_embeds: Tensor | None,
        clip_skip: int | None,
    ) -> PromptEmbeds:
        return encode_prompt(
            self.tokenizer, self.text_encoder, prompt,
            device=device or self._execution_device, num_images_per_prompt=num_images_per_prompt,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, clip_skip=clip_skip, dtype=self.text_dtype(),
        )  # fmt: skip

    def conditioning(
        self,
        embeds: PromptEmbeds,
        guidance: ClassifierFreeGuidance,
        batch: int,
        cross_attention_kwargs: dict[str, Any] | None,
    ) -> Conditioning:
        """UNet conditioning in `[negative, positive]` order; negatives stay readable by callbacks."""
        negative = embeds.negative_prompt_embeds
        return Conditioning(
            encoder_hidden_states=cat_for_cfg(negative, embeds.prompt_embeds, guidance),
            timestep_cond=self.timestep_cond(guidance.guidance_scale, batch, embeds.prompt_embeds.dtype),
            cross_attention_kwargs=cross_attention_kwargs,
            extras={} if negative is None else {"negative_prompt_embeds": negative},
        )

    def check_text2img(self, prompt: Prompt | None, prompt_embeds: Tensor | None) -> int:
        """Batch size of the prompts; the UNet must take only latents (9-channel ones need the inpaint pipeline)."""
        channels = self.unet.config.in_channels
        latent_channels = self.vae.config.latent_channels if self.vae is not None else 4
        if channels != latent_channels:
            raise ValueError(
                f"this UNet takes {channels} input channels (an inpainting UNet?), but {type(self).__name__} feeds "
                f"it {latent_channels} latent channels; use StableDiffusionInpaintPipeline (or "
                "AutoPipelineForInpainting) for this model"
            )
        return batch_size_of(prompt, prompt_embeds)

    @torch.no_grad()
    def __call__(
        self,
        prompt: Prompt | None = None,
        height: int | None = None,
        width: int | None = None,
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
        """Generate images from `prompt`; see diffusers' `StableDiffusionPipeline.__call__` for each argument.

        Returns `StableDiffusionPipelineOutput(images, nsfw_content_detected=None)` (no safety checker
        runs), or a tuple when `return_dict=False`. `guidance_scale <= 1` runs no unconditional pass.
        """
        height, width = self.default_size(height, width)
        callback_on_step_end_tensor_inputs = getattr(
            callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs
        )
        self.check_common(
            num_inference_steps=num_inference_steps, timesteps=timesteps, sigmas=sigmas,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale,
            num_images_per_prompt=num_images_per_prompt, output_type=output_type,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, height=height, width=width,
        )  # fmt: skip
        batch = self.check_text2img(prompt, prompt_embeds) * num_images_per_prompt
        check_generators(generator, batch)
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
        steps, _ = set_timesteps(self.scheduler, num_inference_steps, device, timesteps, sigmas)
        self._num_timesteps = len(steps)
        f = self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, height // f, width // f)
        dtype = embeds.prompt_embeds.dtype
        latents = prepare_latents(shape, self.scheduler, generator, device, dtype, latents)
        latents = run(
            self.unet, self.scheduler, latents, steps,
            conditioning=self.conditioning(embeds, guidance, batch, cross_attention_kwargs),
            guidance=guidance, step_kwargs={"eta": eta, "generator": generator},
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return self.decode_and_finish(latents, output_type, return_dict)
