"""What the Stable Diffusion pipelines (text2img, img2img, inpaint; SD 1.x/2.x and SDXL) share.

`StableDiffusionBase` holds the components, applies the config fixes diffusers applies when a
pipeline is built (so numbers match), and provides the steps every `__call__` is made of: input
checks, guidance, VAE encode/decode. The loop itself is `denoise.run`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import DiffusionPipeline
from .denoise import Generator, check_steps, randn_tensor
from .guidance import ClassifierFreeGuidance, check_guidance
from .images import OutputType, check_output_type, check_size, postprocess
from .outputs import StableDiffusionPipelineOutput, finish
from .text import check_num_images

logger = logging.getLogger(__name__)

_IGNORED_NOTE = (
    "%s: the `%s` component is accepted but not used: sfumato runs no safety checker "
    "(filter the outputs yourself if you publish them)"
)


def patch_scheduler_config(scheduler: Any) -> None:
    """diffusers' SD pipelines rewrite outdated scheduler configs at init; do the same so numbers match."""
    if scheduler is None:
        return
    patch = {}
    if scheduler.config.get("steps_offset", 1) != 1:
        patch["steps_offset"] = 1
    if scheduler.config.get("clip_sample", False) is True:
        patch["clip_sample"] = False
    if patch:
        logger.warning(
            "%s config is outdated for Stable Diffusion; using %s (as diffusers does). "
            "Update scheduler_config.json to silence this note.",
            type(scheduler).__name__,
            patch,
        )
        scheduler.register_to_config(**patch)


def patch_unet_config(unet: Any) -> None:
    """UNets saved by diffusers < 0.9 with `sample_size < 64` were SD 1.x at 512 px: diffusers bumps it to 64."""
    version = unet.config.get("_diffusers_version") if unet is not None else None
    size = unet.config.get("sample_size") if unet is not None else None
    if version is None or not isinstance(size, int) or size >= 64:
        return
    from packaging.version import Version

    if Version(Version(version).base_version) < Version("0.9.0.dev0"):
        logger.warning(
            "unet config from diffusers %s has sample_size=%d; using 64 as diffusers does", version, size
        )
        unet.register_to_config(sample_size=64)


def guidance_embedding(w: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sinusoidal embedding of the guidance scale for guidance-distilled UNets (LCM; VDM's timestep embedding)."""
    w = w * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -(math.log(10000.0) / (half - 1)))
    emb = w.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb  # (B, dim)


def check_strength_positive(strength: float) -> None:
    """Image-to-image strength must be in (0, 1]: 0 would run no denoising step at all."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"`strength` must be a number in (0, 1], got {strength!r}")
    if not (0.0 < strength <= 1.0):  # also rejects NaN
        raise ValueError(
            f"`strength` must be in (0.0, 1.0] (how much of the image to repaint), got {strength}"
        )


def check_generators(generator: Generator, batch: int) -> None:
    if isinstance(generator, (list, tuple)) and len(generator) != batch:
        raise ValueError(
            f"a list of {len(generator)} generators was passed for an effective batch size of {batch} "
            "(prompts x num_images_per_prompt); pass one generator, or exactly one per image"
        )


class StableDiffusionBase(DiffusionPipeline):
    """Components and shared call steps of the SD 1.x/2.x pipelines (SDXL subclasses reuse the steps)."""

    _optional_components: ClassVar[tuple[str, ...]] = ("safety_checker", "feature_extractor", "image_encoder")
    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = (
        "latents",
        "prompt_embeds",
        "negative_prompt_embeds",
    )
    model_cpu_offload_seq: ClassVar[str | None] = "text_encoder->image_encoder->unet->vae"
    _upcast_vae_encode: ClassVar[bool] = False

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scheduler: Any,
        safety_checker: Any = None,
        feature_extractor: Any = None,
        image_encoder: Any = None,
        requires_safety_checker: bool = True,
    ) -> None:
        if safety_checker is not None:
            logger.warning(_IGNORED_NOTE, type(self).__name__, "safety_checker")
        patch_scheduler_config(scheduler)
        patch_unet_config(unet)
        self.register_to_config(requires_safety_checker=requires_safety_checker)
        self.register_modules(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=feature_extractor, image_encoder=image_encoder,
        )  # fmt: skip

    # ------------------------------------------------------------------ properties (diffusers names)

    @property
    def vae_scale_factor(self) -> int:
        vae = getattr(self, "vae", None)
        return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_rescale(self) -> float:
        return getattr(self, "_guidance_rescale", 0.0)

    @property
    def clip_skip(self) -> int | None:
        return getattr(self, "_clip_skip", None)

    @property
    def cross_attention_kwargs(self) -> dict[str, Any] | None:
        return getattr(self, "_cross_attention_kwargs", None)

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    @property
    def num_timesteps(self) -> int:
        return getattr(self, "_num_timesteps", 0)

    # ------------------------------------------------------------------ call steps

    def default_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """`unet.config.sample_size * vae_scale_factor` for whichever of height/width is None."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        f = self.vae_scale_factor
        return (h * f if height is None else height), (w * f if width is None else width)

    def check_common(
        self,
        *,
        num_inference_steps: int | None,
        timesteps: Sequence[int] | None,
        sigmas: Sequence[float] | None,
        guidance_scale: float,
        guidance_rescale: float,
        num_images_per_prompt: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: Sequence[str],
        height: int | None = None,
        width: int | None = None,
    ) -> None:
        """Argument checks shared by every SD pipeline; all raise before any model runs."""
        if height is not None or width is not None:
            check_size(height, width, self.vae_scale_factor)
        if timesteps is None and sigmas is None:
            check_steps(num_inference_steps)
        check_guidance(guidance_scale, guidance_rescale)
        check_num_images(num_images_per_prompt)
        check_output_type(output_type)
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {list(self._callback_tensor_inputs)}; "
                f"got {unknown}"
            )

    def start_call(
        self,
        guidance_scale: float,
        guidance_rescale: float = 0.0,
        *,
        clip_skip: int | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        denoising_start: float | None = None,
        denoising_end: float | None = None,
    ) -> ClassifierFreeGuidance:
        """Record the call's settings that diffusers shows callbacks as properties (`pipe.guidance_scale`,
        `pipe.clip_skip`, `pipe.interrupt`, ...); build CFG."""
        self._guidance_scale, self._guidance_rescale = guidance_scale, guidance_rescale
        self._clip_skip, self._cross_attention_kwargs = clip_skip, cross_attention_kwargs
        self._denoising_start, self._denoising_end = denoising_start, denoising_end
        self._interrupt = False
        self.check_compute_dtype(stacklevel=5)  # before any model runs; frames: start_call, __call__, no_grad
        enabled = self.unet.config.time_cond_proj_dim is None
        return ClassifierFreeGuidance(guidance_scale, guidance_rescale, enabled=enabled)

    def timestep_cond(self, guidance_scale: float, batch: int, dtype: torch.dtype) -> Tensor | None:
        dim = self.unet.config.time_cond_proj_dim
        if dim is None:
            return None
        w = torch.tensor(guidance_scale - 1).repeat(batch)
        return guidance_embedding(w, dim).to(device=self._execution_device, dtype=dtype)

    def text_dtype(self) -> torch.dtype:
        encoder = getattr(self, "text_encoder", None)
        return encoder.dtype if encoder is not None else self.unet.dtype

    def enable_freeu(self, s1: float, s2: float, b1: float, b2: float) -> None:
        """FreeU on the UNet (`UNet2DConditionModel.enable_freeu`, which lists values that work)."""
        if getattr(self, "unet", None) is None:
            raise ValueError("this pipeline has no UNet, so FreeU has nothing to apply to")
        self.unet.enable_freeu(s1=s1, s2=s2, b1=b1, b2=b2)

    def disable_freeu(self) -> None:
        """Undo `enable_freeu`."""
        if getattr(self, "unet", None) is not None:
            self.unet.disable_freeu()

    def fuse_qkv_projections(self, unet: bool = True, vae: bool = True) -> None:
        """Each attention's query, key and value projections as one matrix product, in the UNet and/or
        the VAE (`ModelMixin.fuse_qkv_projections`); results equal within float rounding."""
        for model in self._qkv_models(unet, vae):
            model.fuse_qkv_projections()

    def unfuse_qkv_projections(self, unet: bool = True, vae: bool = True) -> None:
        """Undo `fuse_qkv_projections`."""
        for model in self._qkv_models(unet, vae):
            model.unfuse_qkv_projections()

    def _qkv_models(self, unet: bool, vae: bool) -> list[Any]:
        chosen = [getattr(self, name, None) for name, wanted in (("unet", unet), ("vae", vae)) if wanted]
        return [model for model in chosen if model is not None]

    def encode_vae(self, image: Tensor, generator: Generator) -> Tensor:
        """Images in [-1, 1] -> scaled latents sampled from the VAE posterior (one generator per row if a list).

        SDXL pipelines (`_upcast_vae_encode`) encode in float32 when the VAE has `force_upcast`.
        """
        vae, config, dtype, vae_dtype = self.vae, self.vae.config, image.dtype, self.vae.dtype
        upcast = self._upcast_vae_encode and config.get("force_upcast", False) and vae_dtype != torch.float32
        if upcast:
            image = image.float()
            vae.to(torch.float32)
        try:
            if isinstance(generator, (list, tuple)):
                rows = [
                    vae.encode(image[i : i + 1]).latent_dist.sample(generator[i]) for i in range(len(image))
                ]
                latents = torch.cat(rows)
            else:
                latents = vae.encode(image).latent_dist.sample(generator)
        finally:
            if upcast:
                vae.to(vae_dtype)
        latents = latents.to(dtype)
        if config.get("latents_mean") is not None and config.get("latents_std") is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents)
            return (latents - mean) * config.scaling_factor / std
        return config.scaling_factor * latents

    def noise_like(self, latents: Tensor, generator: Generator) -> Tensor:
        return randn_tensor(latents.shape, generator, latents.device, latents.dtype)

    def decode_and_finish(
        self, latents: Tensor, output_type: OutputType, return_dict: bool
    ) -> StableDiffusionPipelineOutput | tuple:
        """VAE-decode the final latents (unless `output_type="latent"`) and wrap the result."""
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            images = postprocess(decoded, output_type)
        self.maybe_free_model_hooks()
        return finish(StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None), return_dict)
