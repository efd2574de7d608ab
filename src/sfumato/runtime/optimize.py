"""`pipe.optimize()`: prepare a loaded pipeline for the machine it runs on.

`DiffusionPipeline.from_pretrained` applies the exact mode unless given `optimize=False`.

- both modes, on every device: the UNet computes the layers before its first cross-attention once
  for classifier-free guidance's two equal halves (`UNet2DConditionModel.share_guidance_halves`:
  0.96x of a 512 px SD1.5 UNet call; rounding ~1e-5 of the output's scale, as batch-blocked kernels
  round by batch). A model not optimized computes as diffusers does, bit for bit.
- mode "exact" (results equal diffusers' within float tolerance), on CPU:
  - 3x3 convolutions on large maps through Winograd's algorithm (`runtime.winograd`, float32), where
    it beats oneDNN on this CPU (`winograd_kernel`): on Intel's AVX-512 CPUs our F(4x4, 3x3) on
    every map of 32x32 and more, and on 16x16 with 1280 channels (a 512 px VAE decode 0.58x
    diffusers' time, a UNet call 0.78x, on a Xeon with AMX); on AVX2 our F(4x4, 3x3) on 32x32 maps
    and NNPACK's F(6x6, 3x3) from 64x64, the VAE decoder's and the UNet's at 512 px (VAE decode
    0.47-0.50x diffusers' time at 512 px on an EPYC Zen 3); on AMD's AVX-512, where oneDNN's kernels
    are twice as fast and NNPACK's are not, NNPACK only on the UNet's maps of 128x128 (SDXL at
    1024 px) and those of 64x64 with 512 channels or more. Rounding ~5e-6 (ours) or ~1e-5 (NNPACK)
    of the output's scale instead of ~3e-7 (images equal within 1/255). `winograd=False` keeps
    direct convolutions;
  - the UNet's other convolution and linear weights packed once for oneDNN (`runtime.packing`)
    instead of reordered on every call: the 1280-channel 3x3 convolutions at 4x4 and 8x8 go from
    22-90 to ~155 GFLOP/s. Only weights used in place from memory-mapped files are packed (their
    pages are given back), so resident memory does not grow. The first call pays for the packing
    (~6 s for SD1.5's UNet on 2 cores), which is repaid from the third UNet call on; with
    `packed_cache` (opt-in, a copy of the UNet's size on disk) only the first process does. On Intel's
    AVX-512 CPUs convolutions on maps larger than 16x16 keep oneDNN's own path, as fast or faster
    there without a packed copy, in float32 and bfloat16 (`packing._max_packed_area`);
  - on AMD's AVX-512 CPUs, or where torch has no NNPACK, the VAE's convolution weights in
    channels-last layout instead, where oneDNN's 3x3 kernels run faster on its large maps (0.78x of
    NCHW at 256 px on an EPYC Zen 5); on Intel's, Winograd beats both (`_winograd_suits_vae`);
  - on AMD's AVX-512 CPUs, float32 self-attention over 2048 tokens and more head by head through
    oneDNN's GEMMs (`runtime.attention.exact_attention`): 0.6-0.7x SDPA's time, same rounding (on
    Intel's, SDPA's kernels are the faster ones).
  SD1.5 end to end: 0.62-0.64x diffusers' time at 256 px, 0.70-0.75x at 512 px (AVX2 EPYC); 0.74x and
  0.68x on a Xeon with AMX (bench/README.md).
- mode "fast" (tiny numeric differences accepted): also the fastest compute dtype for the device,
  bfloat16 on CPUs with native bf16 (avx512_bf16 / AMX), float32 elsewhere, float16 on CUDA; the
  cast weights are packed too, at the cost of a second copy of the UNet's weights; bf16
  self-attention from 256 tokens on in chunks of queries through oneDNN's GEMMs
  (`runtime.attention.fast_attention`, 2.2-2.5x faster than SDPA on an EPYC Zen 5; its rounding
  stays below that of the bf16 weights).
- `compile=True`: the UNet through `torch.compile` with frozen weights (inductor), which packs
  weights itself (so `packing` is undone). The first call compiles: 154 s for SD1.5 on 2 cores of
  an AVX2 EPYC, 85 s on an AVX-512 one; inductor caches the result on disk
  (`TORCHINDUCTOR_CACHE_DIR`) and the next process compiles in ~30 s. Measured on machine A
  (AVX-512 + bf16) at 0.62x diffusers' UNet time in fp32; on the AVX2 EPYC the compiled fp32 UNet
  was *slower* than the eager one (3.8 s against 3.3 s unpacked and ~2.7 s packed), so it stays
  opt-in.

Nothing here changes process-wide settings; the changes are to the pipeline's own modules.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Literal

import torch

from . import cpu
from .attention import use_cpu_attention
from .cpu import fast_dtype
from .packed_cache import from_option as packed_cache_from
from .packing import Policy, pack_weights, unpack_weights
from .pages import drop_pages, file_mappings
from .winograd import winograd_available

if TYPE_CHECKING:
    from ..pipelines.base import DiffusionPipeline

logger = logging.getLogger(__name__)

Mode = Literal["exact", "fast"]


def optimize(
    pipe: DiffusionPipeline,
    mode: Mode = "exact",
    *,
    compile: bool = False,
    packing: bool = True,
    winograd: bool = True,
    packed_cache: bool | str | os.PathLike | None = None,
) -> DiffusionPipeline:
    """Apply `mode` to `pipe`'s modules in place and return it (see the module docstring).

    `packing=False` keeps the UNet's weights as they are for oneDNN; `winograd=False` keeps direct
    convolutions everywhere. With both off, the UNet's modules stay plain (results then equal
    diffusers' bit for bit in exact mode). `packed_cache` keeps the packed weights on disk for the
    next process (`runtime.packed_cache`: True for the default folder, or a folder; None reads
    `SFUMATO_PACKED_CACHE`; off unless asked for, as it takes a copy of the UNet's size on disk).
    """
    if mode not in ("exact", "fast"):
        raise ValueError(f'mode must be "exact" or "fast", got {mode!r}')
    cache = packed_cache_from(packed_cache) if packing and not compile else None
    device = pipe._execution_device
    if mode == "fast":
        pipe.to(fast_dtype(device))
    for module in pipe._modules():
        use_cpu_attention(module, mode if device.type == "cpu" else None)
        if hasattr(module, "share_guidance_halves"):  # any device: the saving is in operations
            module.share_guidance_halves = True
    if device.type == "cpu":
        vae, unet = getattr(pipe, "vae", None), getattr(pipe, "unet", None)
        policy: Policy = "all" if mode == "fast" else "neutral"
        winograd = winograd and winograd_available()
        if isinstance(vae, torch.nn.Module):
            # Winograd takes NCHW. Other dtypes stay NCHW too: channels-last bf16 rounds differently
            # from diffusers' (3/255), and the fast mode's packed bf16 kernels are NCHW (faster than
            # channels-last, measured).
            vae_winograd = winograd and _winograd_suits_vae(cpu.cpu_info())
            if vae_winograd or vae.dtype != torch.float32:
                pack_weights(vae, policy, winograd=vae_winograd, exact=mode == "exact", cache=cache)
            else:
                _to_channels_last(vae)
                object.__setattr__(pipe, "_cpu_layout", True)
        if isinstance(unet, torch.nn.Module) and not compile and (packing or winograd):
            # A bf16 UNet was cast at load, so `neutral` would pack nothing: its convolutions get a
            # packed copy (~1 GB for SD1.5, still far below a float32 load), in exact mode with
            # diffusers' values bit for bit (runtime.packing); 0.37 s a 256 px call against 0.62.
            unet_policy: Policy = "all" if getattr(unet, "dtype", None) == torch.bfloat16 else policy
            count = pack_weights(
                unet,
                unet_policy if packing else "none",
                winograd=winograd,
                exact=mode == "exact",
                cache=cache,
            )
            logger.debug("switched %d UNet modules to packed / Winograd kernels", count)
    if compile:
        _compile_unet(pipe)
    return pipe


def undo_cpu_layout(pipe: DiffusionPipeline) -> None:
    """Plain layout again for weights `optimize` made channels-last, once the pipeline leaves the CPU.

    The layout was chosen for oneDNN; on CUDA or MPS the usual layout is what diffusers users run
    and what those backends are tested with.
    """
    if not getattr(pipe, "_cpu_layout", False):
        return
    with torch.no_grad():
        for module in pipe._modules():
            for param in module.parameters():
                if param.dim() == 4 and not param.is_contiguous():
                    param.data = param.data.contiguous()
    object.__setattr__(pipe, "_cpu_layout", False)


def _winograd_suits_vae(info: cpu.CpuInfo) -> bool:
    """Whether a float32 VAE decodes faster through Winograd than through channels-last oneDNN.

    - AVX2 (EPYC Zen 3): Winograd is 2-3x faster on the VAE's maps.
    - AVX-512 on AMD (EPYC Zen 5): oneDNN's wider kernels win at 256 px (1.6 s against 1.75) and tie
      at 512 px with 0.2 GiB less memory.
    - AVX-512 on Intel (a Xeon with AMX, 2026-12-03): Winograd wins, 3.9 s against 4.3 at 256 px
      and 14.2 s against 16.2 at 512 px (`python bench/conv.py` agrees: 0.75-0.81x on 128x128 and
      256x256 maps), and plain NCHW oneDNN, what diffusers runs, took 21.9 s.
    """
    return info.intel or not info.capability.startswith("AVX512")


def _to_channels_last(module: torch.nn.Module) -> None:
    """4-D weights to channels-last copies, one at a time, giving back each memory-mapped original's pages.

    Without the page drop, a channels-last SD1.5 UNet holds its mmapped fp32 conv weights twice
    (+2.3 GB resident); see runtime/pages.py for why dropping them is safe.
    """
    mappings = file_mappings()
    with torch.no_grad():
        for param in module.parameters():
            if param.dim() == 4 and not param.is_contiguous(memory_format=torch.channels_last):
                original = param.data
                param.data = original.contiguous(memory_format=torch.channels_last)
                drop_pages([original], mappings)


def _inductor_cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        return cache_dir()
    except (ImportError, AttributeError):  # private API: name the variable instead
        return "$TORCHINDUCTOR_CACHE_DIR"


def _compile_unet(pipe: Any) -> None:
    unet = pipe.unet
    if getattr(unet, "_sfumato_compiled", False):
        return
    # inductor packs frozen weights itself; the packing's Python cache would only cut its graphs
    unpack_weights(unet)
    logger.warning(
        "compiling the UNet with torch.compile (frozen weights): the first call compiles, about 2.5 min "
        "on 2 CPU cores for SD1.5; the result is cached in %s, so the next process compiles in ~30 s",
        _inductor_cache_dir(),
    )
    unet.eval().requires_grad_(False)  # frozen weights: inductor folds and pre-packs them
    unet.forward = torch.compile(unet.forward, options={"freezing": True}, dynamic=False)
    object.__setattr__(unet, "_sfumato_compiled", True)
