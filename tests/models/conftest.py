"""Helpers for model parity tests: tiny diffusers models with seeded weights, saved and reloaded."""

from __future__ import annotations

import pytest
import torch


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference divided by the reference's scale (max abs)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-12)).item()


@pytest.fixture
def assert_close():
    def check(expected: torch.Tensor, actual: torch.Tensor, tol: float = 1e-5) -> None:
        rel = max_rel_diff(expected, actual)
        assert rel <= tol, f"max abs difference is {rel:.3g} × the output scale (allowed {tol:g})"

    return check


def seeded(cls, config: dict, seed: int = 0):
    """A model with seeded random weights; norms get random affine params too, so they matter."""
    torch.manual_seed(seed)
    model = cls(**config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                ("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_out.weight")
            ):
                p.uniform_(0.5, 1.5)
            elif "norm" in name and name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def make_seeded():
    return seeded
