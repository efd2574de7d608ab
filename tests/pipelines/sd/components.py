"""Tiny seeded Stable Diffusion components built in diffusers/transformers (the oracle), saved to a folder.

Sizes: 64x64 images -> 8x8 latents (a 4-block VAE, so the VAE factor is 8 as in the real models),
a 2-block UNet (32, 64 channels), a 2-layer CLIP text encoder on the real CLIP tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import torch

from fixtures.tokenizer import build_clip_tokenizer

PROMPT = "A painting of a squirrel eating a burger"
IMAGE_SIZE = 64


def _clip_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


def tiny_unet(in_channels: int = 4, **extra):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    config = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=IMAGE_SIZE // 8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    return UNet2DConditionModel(**{**config, **extra}).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=IMAGE_SIZE,
    ).eval()


def tiny_text_encoder():
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    return CLIPTextModel(_clip_config()).eval()


def tiny_scheduler():
    from diffusers import PNDMScheduler

    # SD1.5's real scheduler config (notes 5.1)
    return PNDMScheduler.from_config(
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "clip_sample": False,
        }
    )


def save_sd(folder: Path, in_channels: int = 4) -> Path:
    """Save a diffusers StableDiffusion(Inpaint)Pipeline with tiny components into `folder`."""
    import diffusers

    cls = diffusers.StableDiffusionPipeline if in_channels == 4 else diffusers.StableDiffusionInpaintPipeline
    pipe = cls(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        tokenizer=build_clip_tokenizer(),
        unet=tiny_unet(in_channels),
        scheduler=tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def save_sdxl(folder: Path) -> Path:
    """Save a diffusers StableDiffusionXLPipeline with tiny components into `folder`."""
    import diffusers
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(projection_dim=16)).eval()
    tokenizer_2 = CLIPTokenizer.from_pretrained(build_clip_tokenizer().name_or_path, pad_token="!")
    # time ids: 6 x 8 (addition_time_embed_dim) + 16 (pooled) = 64
    unet = tiny_unet(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64,
        cross_attention_dim=64,
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(),
        text_encoder_2=text_encoder_2,
        tokenizer=build_clip_tokenizer(),
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def save_sdxl_refiner(folder: Path) -> Path:
    """Save a diffusers refiner-style StableDiffusionXLImg2ImgPipeline (one text encoder, aesthetic score)."""
    import diffusers
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(projection_dim=16)).eval()
    tokenizer_2 = CLIPTokenizer.from_pretrained(build_clip_tokenizer().name_or_path, pad_token="!")
    # time ids: 5 x 8 (original size, crops, aesthetic score) + 16 (pooled) = 56
    unet = tiny_unet(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=56,
        use_linear_projection=True,
    )
    pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
        vae=tiny_vae(),
        text_encoder=None,
        text_encoder_2=text_encoder_2,
        tokenizer=None,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", timestep_spacing="leading"),
        requires_aesthetics_score=True,
    )
    pipe.save_pretrained(folder)
    return folder


def make_image(seed: int = 0, size: int = IMAGE_SIZE) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_mask(size: int = IMAGE_SIZE) -> PIL.Image.Image:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return PIL.Image.fromarray(mask)


def quiet(*pipes):
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
    return pipes


def assert_images_close(ours, theirs, atol: float = 1 / 255) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    diff = float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max())
    assert diff <= atol, f"max abs difference {diff} > {atol}"
