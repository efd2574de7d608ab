"""Full-size SD1.5- and SDXL-layout pipeline folders with seeded random weights, for the speed bench.

Real configs (shared/reference/diffusers-notes.md: `model_index.json`, scheduler, UNet, VAE, CLIP
text towers of SD1.5 and of SDXL base 1.0), built and saved by diffusers/transformers in fp32 plus
the `fp16` variant, with the real CLIP tokenizer. Both libraries load them. A forward pass costs the
same with random weights as with trained ones. Built once and reused from the cache folder: SD1.5
~1 min and 6.3 GB, SDXL ~5 min and 21 GB.

    python bench/sd_fixture.py [sd15|sdxl] [FOLDER]
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

CACHE = Path(os.environ.get("SFUMATO_BENCH_CACHE", Path.home() / ".cache" / "sfumato-bench"))
DEFAULT = CACHE / "sd15"

UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-05, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
)  # fmt: skip
VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4,
)  # fmt: skip
TEXT = dict(
    attention_dropout=0.0, bos_token_id=0, dropout=0.0, eos_token_id=2, hidden_act="quick_gelu", hidden_size=768,
    initializer_factor=1.0, initializer_range=0.02, intermediate_size=3072, layer_norm_eps=1e-05,
    max_position_embeddings=77, num_attention_heads=12, num_hidden_layers=12, pad_token_id=1, projection_dim=768,
    vocab_size=49408,
)  # fmt: skip
SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None, clip_sample=False,
)  # fmt: skip

SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, norm_eps=1e-05, norm_num_groups=32,
    out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=128,
    transformer_layers_per_block=[1, 2, 10], up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    use_linear_projection=True,
)  # fmt: skip
SDXL_VAE = VAE | dict(sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_TEXT_2 = TEXT | dict(
    hidden_act="gelu", hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
    projection_dim=1280,
)  # fmt: skip
SDXL_SCHEDULER = dict(
    beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
    use_karras_sigmas=False,
)  # fmt: skip


def build(folder: Path = DEFAULT) -> Path:
    """Write the folder (atomically: a half-built one is never left under `folder`) unless it exists."""
    if (folder / "model_index.json").exists():
        return folder
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from sfumato.assets import clip_tokenizer_path

    torch.manual_seed(0)
    pipe = diffusers.StableDiffusionPipeline(
        vae=diffusers.AutoencoderKL(**VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)),
        tokenizer=CLIPTokenizer.from_pretrained(str(clip_tokenizer_path())),
        unet=diffusers.UNet2DConditionModel(**UNET),
        scheduler=diffusers.PNDMScheduler.from_config(SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_sdxl(folder: Path = CACHE / "sdxl") -> Path:
    """The SDXL base 1.0 layout, like `build` (atomic, skipped when present)."""
    if (folder / "model_index.json").exists():
        return folder
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sfumato.assets import clip_tokenizer_path

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(clip_tokenizer_path()))
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=diffusers.AutoencoderKL(**SDXL_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**TEXT)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2)),
        tokenizer=tokenizer,
        tokenizer_2=CLIPTokenizer.from_pretrained(str(clip_tokenizer_path()), pad_token="!"),
        unet=diffusers.UNet2DConditionModel(**SDXL_UNET),
        scheduler=diffusers.EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    )
    return _save(pipe, folder)


def _save(pipe, folder: Path) -> Path:
    """fp32 and the `fp16` variant into a staging folder, renamed into place when complete."""
    import torch

    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging)
    pipe.to(torch.float16).save_pretrained(staging, variant="fp16")
    staging.rename(folder)
    return folder


MODELS = {"sd15": (UNET, build), "sdxl": (SDXL_UNET, build_sdxl)}


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "sd15"
    print(MODELS[kind][1](*[Path(a) for a in sys.argv[2:3]]))
