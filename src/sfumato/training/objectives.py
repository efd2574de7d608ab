"""Training objectives: the denoising loss of diffusion models and the VAE's reconstruction + KL loss.

Randomness (noise, timesteps, posterior samples) comes from torch's global RNG, which the training loop
seeds and restores on resume, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Target = Literal["epsilon", "v_prediction", "sample"]
TARGETS: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def alpha_sigma(alphas_cumprod: Tensor, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(alpha, sigma) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), shaped (B, 1, 1, 1) like `like`."""
    alpha_bar = alphas_cumprod.to(device=like.device, dtype=torch.float32)[t.to(like.device)]
    shape = (-1,) + (1,) * (like.ndim - 1)
    return alpha_bar.sqrt().view(shape).to(like.dtype), (1 - alpha_bar).sqrt().view(shape).to(like.dtype)


def diffusion_target(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor, prediction_type: str) -> Tensor:
    """What the model should output for x_t = alpha x0 + sigma eps: eps, v = alpha eps - sigma x0, or x0."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":  # Salimans & Ho 2022, sec. 4
        return alpha * eps - sigma * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {', '.join(TARGETS)}")


def min_snr_weights(snr: Tensor, gamma: float, prediction_type: str) -> Tensor:
    """Per-sample loss weights of Min-SNR-γ (Hang et al. 2023, eq. 6) for the given target.

    The weight of the x0 loss is min(SNR, γ); an eps loss equals the x0 loss / SNR and a v loss the
    x0 loss / (SNR + 1), hence the divisions.
    """
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {', '.join(TARGETS)}")


def diffusion_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    alphas_cumprod: Tensor,
    prediction_type: str = "epsilon",
    snr_gamma: float | None = None,
) -> Tensor:
    """Mean squared error of `model(x_t, t)` against its target at uniformly drawn training timesteps.

    Args:
        model: called as `model(x_t, t)` with x_t (B, C, H, W) and integer timesteps t (B,).
        x0: clean samples (images or scaled latents), (B, C, H, W).
        alphas_cumprod: alpha_bar of the training schedule (e.g. `DDPMScheduler().alphas_cumprod`).
        prediction_type: "epsilon", "v_prediction" or "sample" (the scheduler's `prediction_type`).
        snr_gamma: weight timesteps by Min-SNR-γ (5.0 is the paper's choice); None = plain MSE.
    """
    if prediction_type not in TARGETS:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use one of {', '.join(TARGETS)}")
    if snr_gamma is not None and snr_gamma <= 0:
        raise ValueError(f"snr_gamma must be positive (e.g. 5.0) or None, got {snr_gamma}")
    batch = x0.shape[0]
    eps = torch.randn_like(x0)
    t = torch.randint(0, len(alphas_cumprod), (batch,), device=x0.device)
    alpha, sigma = alpha_sigma(alphas_cumprod, t, x0)
    x_t = alpha * x0 + sigma * eps
    target = diffusion_target(x0, eps, alpha, sigma, prediction_type)
    error = F.mse_loss(model(x_t, t).float(), target.float(), reduction="none")
    per_sample = error.mean(dim=tuple(range(1, error.ndim)))  # (B,)
    if snr_gamma is not None:
        snr = (alpha.float() / sigma.float()).pow(2).flatten()
        per_sample = per_sample * min_snr_weights(snr, snr_gamma, prediction_type)
    return per_sample.mean()


def vae_loss(
    vae: Any,
    x: Tensor,
    kl_weight: float = 1e-6,
    reconstruction: Literal["l1", "l2"] = "l1",
    pixel_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Reconstruction of `x` through a sampled latent, plus `kl_weight` × KL(q(z|x) ‖ N(0, I)).

    As in Stable Diffusion's autoencoder the KL term is tiny: it keeps the latents near unit scale
    without blurring the images. `pixel_weights` (B, 1, H, W) weights the reconstruction error per pixel
    (normalised by its mean, so the scale of the loss stays the same). Returns (loss, {"reconstruction":
    ..., "kl": ...}).
    """
    if reconstruction not in ("l1", "l2"):
        raise ValueError(f"reconstruction must be 'l1' or 'l2', got {reconstruction!r}")
    posterior = vae.encode(x).latent_dist
    x_hat = vae.decode(posterior.sample()).sample
    error = (x_hat - x).abs() if reconstruction == "l1" else (x_hat - x).pow(2)
    if pixel_weights is None:
        rec = error.mean()
    else:
        rec = (error * pixel_weights).mean() / pixel_weights.mean()
    kl = posterior.kl().mean() / x[0].numel()  # per pixel value, so kl_weight does not depend on size
    return rec + kl_weight * kl, {"reconstruction": rec.item(), "kl": kl.item()}


def text_to_image_objective(
    unet: Any,
    text_encoder: Any,
    alphas_cumprod: Tensor,
    scaling_factor: float,
    empty_ids: Tensor,
    prediction_type: str = "epsilon",
    snr_gamma: float | None = None,
    caption_dropout: float = 0.0,
) -> Callable[[tuple[Tensor, Tensor]], Tensor]:
    """`objective(batch)` of latent text-to-image training; batch = (VAE posterior moments, token ids).

    A fresh latent is sampled from the moments every step; with probability `caption_dropout` a
    caption is replaced by the empty prompt `empty_ids`, which teaches the unconditional prediction
    that classifier-free guidance needs.
    """
    from ..models.distributions import DiagonalGaussianDistribution

    if not 0 <= caption_dropout < 1:
        raise ValueError(f"caption_dropout must be in [0, 1), got {caption_dropout}")

    def objective(batch: tuple[Tensor, Tensor]) -> Tensor:
        moments, ids = batch  # (B, 2C, h, w), (B, L)
        z = DiagonalGaussianDistribution(moments).sample() * scaling_factor  # (B, C, h, w)
        if caption_dropout:
            drop = torch.rand(len(ids), device=ids.device) < caption_dropout
            ids = torch.where(drop[:, None], empty_ids.to(ids.device), ids)
        context = text_encoder(ids).last_hidden_state  # (B, L, D)

        def model(x: Tensor, t: Tensor) -> Tensor:
            return unet(x, t, encoder_hidden_states=context).sample

        return diffusion_loss(model, z, alphas_cumprod, prediction_type, snr_gamma)

    return objective
