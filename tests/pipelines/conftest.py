"""Tiny seeded components shared by the pipeline tests (diffusers objects serve as oracles)."""

import pytest
import torch

# Tiny models run faster on one thread, and far faster when other processes share the two cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def clip_tokenizer_folder():
    from sfumato.assets import clip_tokenizer_path

    return clip_tokenizer_path()


@pytest.fixture(scope="session")
def tokenizers(clip_tokenizer_folder):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(clip_tokenizer_folder)
    tok_2 = CLIPTokenizer.from_pretrained(clip_tokenizer_folder, pad_token="!")  # SDXL's tokenizer_2
    return tok, tok_2


def _clip_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **extra,
    )


@pytest.fixture(scope="session")
def text_encoders():
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    enc = CLIPTextModel(_clip_config()).eval()
    torch.manual_seed(1)
    enc_2 = CLIPTextModelWithProjection(_clip_config(projection_dim=16)).eval()
    return enc, enc_2


@pytest.fixture(scope="session")
def tiny_unet_cond():
    from diffusers import UNet2DConditionModel

    def make(in_channels=4):
        torch.manual_seed(0)
        return UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=8,
            in_channels=in_channels,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=4,
            attention_head_dim=2,
        ).eval()

    return make


@pytest.fixture(scope="session")
def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()
