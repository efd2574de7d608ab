"""Tiny Stable Diffusion folders saved by diffusers once per session, and both libraries' pipelines on them."""

import pytest

from pipelines.sd.components import quiet, save_sd, save_sdxl, save_sdxl_refiner


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory):
    return save_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def sd_inpaint_folder(tmp_path_factory):
    """A 9-channel inpainting UNet (diffusers' StableDiffusionInpaintPipeline layout)."""
    return save_sd(tmp_path_factory.mktemp("tiny_sd_inpaint"), in_channels=9)


@pytest.fixture(scope="session")
def sd_pipes(sd_folder):
    """(diffusers, sfumato) StableDiffusionPipeline on the same folder; don't mutate, build new ones from them."""
    import diffusers

    import sfumato

    return quiet(
        diffusers.StableDiffusionPipeline.from_pretrained(sd_folder),
        sfumato.StableDiffusionPipeline.from_pretrained(sd_folder),
    )


@pytest.fixture(scope="session")
def sd_inpaint_pipes(sd_inpaint_folder):
    import diffusers

    import sfumato

    return quiet(
        diffusers.StableDiffusionInpaintPipeline.from_pretrained(sd_inpaint_folder),
        sfumato.StableDiffusionInpaintPipeline.from_pretrained(sd_inpaint_folder),
    )


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory):
    return save_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="session")
def sdxl_refiner_folder(tmp_path_factory):
    return save_sdxl_refiner(tmp_path_factory.mktemp("tiny_sdxl_refiner"))


@pytest.fixture(scope="session")
def sdxl_pipes(sdxl_folder):
    """(diffusers, sfumato) StableDiffusionXLPipeline on the same folder; don't mutate, build new ones from them."""
    import diffusers

    import sfumato

    return quiet(
        diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_folder),
        sfumato.StableDiffusionXLPipeline.from_pretrained(sdxl_folder),
    )
