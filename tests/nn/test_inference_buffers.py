"""Without autograd, blocks reuse buffers in place; the results must be bit-identical to the autograd path."""

from __future__ import annotations

import torch

from sfumato import AutoencoderKL, UNet2DConditionModel


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, cross_attention_dim=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=4,
    ).eval()  # fmt: skip


def test_unet_inference_equals_training_path_and_still_trains() -> None:
    unet = tiny_unet()
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 7, 32, generator=g)
    with torch.no_grad():
        fast = unet(x, 10, encoder_hidden_states=ctx).sample
    with torch.inference_mode():
        fast_im = unet(x, 10, encoder_hidden_states=ctx).sample
    with_grad = unet(x, 10, encoder_hidden_states=ctx).sample
    assert torch.equal(fast, with_grad.detach())
    assert torch.equal(fast_im, fast)
    with_grad.square().mean().backward()  # the autograd path keeps what backward needs
    assert unet.conv_in.weight.grad.abs().sum() > 0


def test_vae_decode_inference_equals_training_path() -> None:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4,
    ).eval()  # fmt: skip
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = vae.decode(z).sample
    assert torch.equal(fast, vae.decode(z).sample.detach())
