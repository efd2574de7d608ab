"""Training objectives: the noising and targets match diffusers' scheduler, Min-SNR identities, learning."""

import pytest
import torch
from torch.utils.data import TensorDataset

from sfumato.models.autoencoder_kl import AutoencoderKL
from sfumato.models.unet_2d import UNet2DModel
from sfumato.training.loop import TrainConfig, train
from sfumato.training.objectives import diffusion_loss, diffusion_target, min_snr_weights, vae_loss


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead (and the machine is shared)
    yield
    torch.set_num_threads(before)


def _diffusers_scheduler(prediction_type="epsilon"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type=prediction_type)  # fmt: skip


class Recorder:
    """A 'model' that remembers its inputs and returns a fixed random output."""

    def __init__(self, shape):
        self.output = torch.randn(shape, generator=torch.Generator().manual_seed(7))

    def __call__(self, x, t):
        self.x, self.t = x, t
        return self.output


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_noising_and_target_match_diffusers(prediction_type):
    oracle = _diffusers_scheduler(prediction_type)
    x0 = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    model = Recorder(x0.shape)
    torch.manual_seed(3)
    loss = diffusion_loss(model, x0, oracle.alphas_cumprod, prediction_type)
    torch.manual_seed(3)  # the same draws again: eps first, then t
    eps = torch.randn_like(x0)
    t = torch.randint(0, 1000, (6,))
    assert torch.equal(model.t, t)
    torch.testing.assert_close(model.x, oracle.add_noise(x0, eps, t), rtol=1e-5, atol=1e-6)
    target = {"epsilon": eps, "v_prediction": oracle.get_velocity(x0, eps, t), "sample": x0}[prediction_type]
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(model.output, target), rtol=1e-5, atol=1e-6)


def test_target_rejects_unknown_prediction_type():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="unknown prediction_type 'flow'"):
        diffusion_target(x, x, x, x, "flow")
    with pytest.raises(ValueError, match="unknown prediction_type"):
        diffusion_loss(lambda x, t: x, x, torch.ones(10), "flow")
    with pytest.raises(ValueError, match="snr_gamma must be positive"):
        diffusion_loss(lambda x, t: x, x, torch.ones(10), snr_gamma=0.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_equal_weighted_x0_loss(prediction_type):
    """Min-SNR-γ: every parametrisation's weighted loss equals min(SNR, γ) × the x0 loss."""
    g = torch.Generator().manual_seed(1)
    alpha_bar = torch.rand(5, generator=g) * 0.98 + 0.01
    alpha, sigma = alpha_bar.sqrt().view(-1, 1), (1 - alpha_bar).sqrt().view(-1, 1)
    x0, eps, out = (torch.randn(5, 16, generator=g) for _ in range(3))
    x = alpha * x0 + sigma * eps
    target = diffusion_target(x0, eps, alpha, sigma, prediction_type)
    x0_hat = alpha * x - sigma * out if prediction_type == "v_prediction" else (x - sigma * out) / alpha
    snr = alpha_bar / (1 - alpha_bar)
    weighted = (out - target).pow(2).mean(1) * min_snr_weights(snr, 5.0, prediction_type)
    expected = (x0_hat - x0).pow(2).mean(1) * snr.clamp(max=5.0)
    torch.testing.assert_close(weighted, expected, rtol=1e-4, atol=1e-5)


def test_vae_loss_parts():
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.manual_seed(0)
    loss, parts = vae_loss(vae, x, kl_weight=0.5)
    assert parts["kl"] > 0
    torch.testing.assert_close(loss.item(), parts["reconstruction"] + 0.5 * parts["kl"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reconstruction must be 'l1' or 'l2'"):
        vae_loss(vae, x, reconstruction="l3")


def test_a_few_steps_lower_the_diffusion_loss(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))  # fmt: skip
    images = torch.zeros(64, 3, 8, 8)
    images[:, 0, 2:6, 2:6] = 1.0  # the same red square: a distribution the net learns in a few steps
    alphas_cumprod = _diffusers_scheduler().alphas_cumprod

    def objective(batch):
        return diffusion_loss(lambda x, t: unet(x, t).sample, batch[0], alphas_cumprod)

    config = TrainConfig(output_dir=tmp_path, max_steps=40, batch_size=16, learning_rate=2e-3,
                         save_every=1000, progress=False)  # fmt: skip
    losses = train(config, {"unet": unet}, objective, TensorDataset(images)).losses
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_vae_loss_pixel_weights():
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    torch.manual_seed(0)
    plain = vae_loss(vae, x)[1]["reconstruction"]
    torch.manual_seed(0)
    ones = vae_loss(vae, x, pixel_weights=torch.full((2, 1, 8, 8), 3.0))[1]["reconstruction"]
    assert abs(plain - ones) < 1e-6  # a constant weight changes nothing
    weights = torch.zeros(2, 1, 8, 8)
    weights[:, :, 0, 0] = 1.0
    torch.manual_seed(0)
    corner = vae_loss(vae, x, pixel_weights=weights)[1]["reconstruction"]
    torch.manual_seed(0)
    x_hat = vae.decode(vae.encode(x).latent_dist.sample()).sample
    assert abs(corner - (x_hat - x)[:, :, 0, 0].abs().mean().item()) < 1e-5
