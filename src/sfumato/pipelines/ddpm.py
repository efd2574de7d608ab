"""Unconditional image generation: `DDPMPipeline` (Ho et al. 2020) and `DDIMPipeline` (Song et al. 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import DiffusionPipeline
from .denoise import Generator, randn_tensor, run, set_timesteps
from .images import OutputType, check_output_type, postprocess
from .outputs import ImagePipelineOutput, finish


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an int >= 1, got {batch_size!r}")


class DDPMPipeline(DiffusionPipeline):
    """Sample images from noise with an unconditional `UNet2DModel` and any scheduler."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        self.register_modules(unet=unet, scheduler=scheduler)

    def _sample(
        self,
        batch_size: int,
        generator: Generator,
        num_inference_steps: int,
        output_type: OutputType,
        return_dict: bool,
        step_kwargs: dict[str, Any],
    ) -> ImagePipelineOutput | tuple:
        _check_batch_size(batch_size)
        check_output_type(output_type)
        set_timesteps(self.scheduler, num_inference_steps)
        self.check_compute_dtype(stacklevel=5)  # frames: _sample, __call__, no_grad
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, self.unet.config.in_channels, *size)
        # no init_noise_sigma factor: diffusers' unconditional pipelines draw plain N(0, I) noise
        image = randn_tensor(shape, generator, self._execution_device, self.unet.dtype)
        image = run(
            self.unet, self.scheduler, image, step_kwargs={"generator": generator, **step_kwargs},
            pipe=self, progress_bar=self.progress_bar_config or True,
        )  # fmt: skip
        return finish(ImagePipelineOutput(images=postprocess(image, output_type)), return_dict)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Generator = None,
        num_inference_steps: int = 1000,
        output_type: OutputType = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate `batch_size` images; returns `ImagePipelineOutput(images)` (a tuple if `return_dict=False`)."""
        return self._sample(batch_size, generator, num_inference_steps, output_type, return_dict, {})


class DDIMPipeline(DDPMPipeline):
    """Like `DDPMPipeline`, but the scheduler is converted to a `DDIMScheduler` (deterministic for `eta=0`)."""

    def __init__(self, unet: Any, scheduler: Any) -> None:
        from ..schedulers import DDIMScheduler

        # diffusers makes any scheduler config a DDIM one; DDIM can read every scheduler config
        super().__init__(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Generator = None,
        eta: float = 0.0,
        num_inference_steps: int = 50,
        use_clipped_model_output: bool | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate images; `eta` weights the added noise (0 = deterministic DDIM, 1 = DDPM-like)."""
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
            raise ValueError(f"`eta` must be a finite number >= 0, got {eta!r}")
        extra = {"eta": eta, "use_clipped_model_output": use_clipped_model_output}
        return self._sample(batch_size, generator, num_inference_steps, output_type, return_dict, extra)
