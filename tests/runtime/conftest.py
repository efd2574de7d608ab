"""A tiny Stable Diffusion folder shared by the runtime tests; spies on NNPACK and F(4x4, 3x3) calls."""

import pytest
import torch


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory):
    from pipelines.sd.components import save_sd

    return save_sd(tmp_path_factory.mktemp("sd"))


@pytest.fixture
def nnpack_calls(monkeypatch) -> list[tuple[int, ...]]:
    """Input shapes of every NNPACK call made while the test runs."""
    calls: list[tuple[int, ...]] = []
    original = torch._nnpack_spatial_convolution

    def counting(x, *args):
        calls.append(tuple(x.shape))
        return original(x, *args)

    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", counting)
    return calls


@pytest.fixture
def f4_calls(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the maps every call of our F(4x4, 3x3) convolved while the test runs (enlarged if fused)."""
    from sfumato.runtime import winograd

    calls: list[tuple[int, ...]] = []
    original = winograd.winograd_f4_conv2d

    def counting(x, weight, bias, padding, upsample=1):
        calls.append((*x.shape[:2], x.shape[2] * upsample, x.shape[3] * upsample))
        return original(x, weight, bias, padding, upsample)

    monkeypatch.setattr(winograd, "winograd_f4_conv2d", counting)
    return calls
