"""The KL-regularised autoencoder of Stable Diffusion (`AutoencoderKL`): images ⇄ latents.

Latent convention used by pipelines: `z = vae.encode(x).latent_dist.sample() * scaling_factor`
(minus `shift_factor` first, when set), and `vae.decode(z / scaling_factor)`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import register_to_config
from ..nn.attention import rename_legacy_attention_keys
from .base import ModelMixin
from .distributions import DiagonalGaussianDistribution
from .outputs import AutoencoderKLOutput, DecoderOutput, finish
from .tiling import tiled_apply
from .vae import Decoder, Encoder


class AutoencoderKL(ModelMixin):
    """VAE with a diagonal-Gaussian posterior; arguments and defaults equal diffusers'.

    `enable_slicing()` encodes/decodes a batch one image at a time (identical results, less memory);
    `enable_tiling()` processes large images in overlapping tiles blended at the seams (close, not
    identical, to the untiled result — exactly diffusers' tiled result).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",),
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int | tuple[int, int] = 32,
        scaling_factor: float = 0.18215,
        shift_factor: float | None = None,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
        force_upcast: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        mid_block_add_attention: bool = True,
    ):
        super().__init__()
        if not (len(down_block_types) == len(up_block_types) == len(block_out_channels)):
            raise ValueError(
                f"down_block_types ({len(down_block_types)}), up_block_types ({len(up_block_types)}) and "
                f"block_out_channels ({len(block_out_channels)}) must have the same length"
            )
        common = (block_out_channels, layers_per_block, norm_num_groups, act_fn, mid_block_add_attention)
        self.encoder = Encoder(in_channels, latent_channels, down_block_types, *common)
        self.decoder = Decoder(latent_channels, out_channels, up_block_types, *common)
        self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1) if use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else None

        self.use_slicing = False
        self.use_tiling = False
        size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
        self.tile_sample_min_size = size
        self.tile_latent_min_size = int(size / 2 ** (len(block_out_channels) - 1))
        self.tile_overlap_factor = 0.25

    @classmethod
    def _convert_legacy_keys(cls, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return rename_legacy_attention_keys(state_dict)

    # ------------------------------------------------------------------ memory switches

    def enable_tiling(self, use_tiling: bool = True) -> None:
        self.use_tiling = use_tiling

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def enable_slicing(self) -> None:
        self.use_slicing = True

    def disable_slicing(self) -> None:
        self.use_slicing = False

    # ------------------------------------------------------------------ encode / decode

    def _check(self, x: Tensor, channels: int, what: str) -> None:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[1] != channels:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"AutoencoderKL.{what} expects a (batch, {channels}, height, width) tensor; got {shape}"
            )

    def _encode_one(self, x: Tensor) -> Tensor:
        if self.use_tiling and max(x.shape[-2:]) > self.tile_sample_min_size:
            return self._tiled_encode(x)
        h = self.encoder(x)
        return self.quant_conv(h) if self.quant_conv is not None else h

    def _encode_moments(self, x: Tensor) -> Tensor:
        self._check(x, self.config.in_channels, "encode")
        if self.use_slicing and x.shape[0] > 1:
            return torch.cat([self._encode_one(part) for part in x.split(1)])
        return self._encode_one(x)

    def encode(
        self, x: Tensor, return_dict: bool = True
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Images in [-1, 1] (B, C, H, W) → posterior over latents (B, latent_channels, H/f, W/f)."""
        posterior = DiagonalGaussianDistribution(self._encode_moments(x))
        return finish(AutoencoderKLOutput(latent_dist=posterior), return_dict)

    def _decode_one(self, z: Tensor) -> Tensor:
        if self.use_tiling and max(z.shape[-2:]) > self.tile_latent_min_size:
            return self._tiled_decode(z)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def decode(
        self, z: Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple[Tensor]:
        """Latents (B, latent_channels, h, w) → images (B, C, h·f, w·f). `generator` is unused (API parity)."""
        del generator
        self._check(z, self.config.latent_channels, "decode")
        if self.use_slicing and z.shape[0] > 1:
            x = torch.cat([self._decode_one(part) for part in z.split(1)])
        else:
            x = self._decode_one(z)
        return finish(DecoderOutput(sample=x), return_dict)

    def forward(
        self,
        sample: Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[Tensor]:
        """Encode then decode `sample` (the posterior mean, or a draw when `sample_posterior`)."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

    # ------------------------------------------------------------------ tiling

    def _tile_geometry(self, tile_in: int, tile_out: int) -> tuple[int, int, int]:
        stride = int(tile_in * (1 - self.tile_overlap_factor))
        blend = int(tile_out * self.tile_overlap_factor)
        return stride, blend, tile_out - blend

    def _tiled_encode(self, x: Tensor) -> Tensor:
        stride, blend, keep = self._tile_geometry(self.tile_sample_min_size, self.tile_latent_min_size)

        def encode_tile(t: Tensor) -> Tensor:
            h = self.encoder(t)
            return self.quant_conv(h) if self.quant_conv is not None else h

        return tiled_apply(x, encode_tile, self.tile_sample_min_size, stride, blend, keep)

    def _tiled_decode(self, z: Tensor) -> Tensor:
        stride, blend, keep = self._tile_geometry(self.tile_latent_min_size, self.tile_sample_min_size)

        def decode_tile(t: Tensor) -> Tensor:
            return self.decoder(self.post_quant_conv(t) if self.post_quant_conv is not None else t)

        return tiled_apply(z, decode_tile, self.tile_latent_min_size, stride, blend, keep)

    def tiled_encode(self, x: Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode in overlapping tiles regardless of `enable_tiling` (diffusers API)."""
        posterior = DiagonalGaussianDistribution(self._tiled_encode(x))
        return finish(AutoencoderKLOutput(latent_dist=posterior), return_dict)

    def tiled_decode(self, z: Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Decode in overlapping tiles regardless of `enable_tiling` (diffusers API)."""
        return finish(DecoderOutput(sample=self._tiled_decode(z)), return_dict)
