"""`pipe.optimize()`: prepare a loaded pipeline for the machine it runs on.

- mode "exact" (results equal diffusers' within float tolerance): convolution weights in
  channels-last layout on CPU, where oneDNN's 3x3 kernels run faster and the transformer blocks'
  (B, C, H, W) <-> (B, HW, C) conversions become free views.
- mode "fast" (tiny numeric differences accepted): also the fastest compute dtype for the device,
  bfloat16 on CPUs with native bf16 (avx512_bf16 / AMX), float32 elsewhere, float16 on CUDA.
- `compile=True`: the UNet through `torch.compile` with frozen weights (inductor). The first call
  compiles (a minute or more on 2 CPU cores); inductor caches the result on disk
  (`TORCHINDUCTOR_CACHE_DIR`), so later processes start faster.

Nothing here changes process-wide settings; the changes are to the pipeline's own modules.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import torch

from .cpu import fast_dtype

if TYPE_CHECKING:
    from ..pipelines.base import DiffusionPipeline

logger = logging.getLogger(__name__)

Mode = Literal["exact", "fast"]
_CONV_MODULES = ("unet", "vae", "controlnet")


def optimize(pipe: DiffusionPipeline, mode: Mode = "exact", *, compile: bool = False) -> DiffusionPipeline:
    """Apply `mode` to `pipe`'s modules in place and return it (see the module docstring)."""
    if mode not in ("exact", "fast"):
        raise ValueError(f'mode must be "exact" or "fast", got {mode!r}')
    device = pipe._execution_device
    if mode == "fast":
        pipe.to(fast_dtype(device))
    if device.type == "cpu":
        for name in _CONV_MODULES:
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                module.to(memory_format=torch.channels_last)
    if compile:
        _compile_unet(pipe)
    return pipe


def _compile_unet(pipe: Any) -> None:
    unet = pipe.unet
    if getattr(unet, "_sfumato_compiled", False):
        return
    logger.warning(
        "compiling the UNet with torch.compile: the first call takes a minute or more on a CPU; "
        "the compiled kernels are cached on disk for later runs"
    )
    unet.eval().requires_grad_(False)  # frozen weights: inductor folds and pre-packs them
    unet.forward = torch.compile(unet.forward, options={"freezing": True}, dynamic=False)
    object.__setattr__(unet, "_sfumato_compiled", True)
