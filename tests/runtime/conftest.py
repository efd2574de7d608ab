"""A tiny Stable Diffusion folder shared by the runtime tests; a spy on NNPACK calls."""

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
