"""A tiny Stable Diffusion folder shared by the runtime tests."""

import pytest


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory):
    from pipelines.sd.components import save_sd

    return save_sd(tmp_path_factory.mktemp("sd"))
