"""Tiny Stable Diffusion folders saved by diffusers once per session, and both libraries' pipelines on them."""

import pytest

from pipelines.sd.components import quiet, save_sd


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
