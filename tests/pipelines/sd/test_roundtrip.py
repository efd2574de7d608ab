"""Folders saved by sfumato load in diffusers with the same images, and the other way round."""

import json

import pytest
import torch

import sfumato
from pipelines.sd.components import PROMPT, assert_images_close, quiet

# diffusers' schedulers call numpy on torch tensors, which numpy 2 warns about on every step
pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")]

KWARGS = dict(prompt=PROMPT, num_inference_steps=2, output_type="np")


def _images(pipe, **extra):
    return pipe(generator=torch.Generator().manual_seed(0), **KWARGS, **extra).images


@pytest.mark.parametrize("cls_name", ["StableDiffusionPipeline", "StableDiffusionInpaintPipeline"])
def test_sfumato_folder_loads_in_diffusers(sd_folder, tmp_path, cls_name):
    import diffusers

    from pipelines.sd.components import make_image, make_mask

    extra = (
        {} if cls_name == "StableDiffusionPipeline" else {"image": make_image(), "mask_image": make_mask()}
    )
    ours = getattr(sfumato, cls_name).from_pretrained(sd_folder)
    ours.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == cls_name
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["safety_checker"] == [None, None]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]  # our encoder, saved as transformers'
    theirs = diffusers.DiffusionPipeline.from_pretrained(tmp_path)
    assert type(theirs).__name__ == cls_name
    theirs, ours = quiet(theirs, ours)
    assert_images_close(_images(theirs, **extra), _images(ours, **extra))


def test_diffusers_folder_resaved_by_diffusers_loads_in_sfumato(sd_pipes, tmp_path):
    theirs, _ = sd_pipes
    theirs.save_pretrained(tmp_path)
    ours = sfumato.DiffusionPipeline.from_pretrained(tmp_path)
    assert type(ours) is sfumato.StableDiffusionPipeline
    (ours,) = quiet(ours)
    assert_images_close(_images(theirs), _images(ours))


def test_outdated_scheduler_config_is_patched_like_diffusers(sd_folder, tmp_path, caplog):
    """steps_offset=0 and clip_sample=True are rewritten at init, as diffusers does, so images still match."""
    import shutil

    import diffusers

    shutil.copytree(sd_folder, tmp_path, dirs_exist_ok=True)
    config_file = tmp_path / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config.update(_class_name="DDIMScheduler", steps_offset=0, clip_sample=True)
    config_file.write_text(json.dumps(config))
    index = json.loads((tmp_path / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with caplog.at_level("WARNING"):
        ours = sfumato.DiffusionPipeline.from_pretrained(tmp_path)
    assert "steps_offset" in caplog.text and "clip_sample" in caplog.text
    assert ours.scheduler.config.steps_offset == 1 and ours.scheduler.config.clip_sample is False
    theirs = diffusers.DiffusionPipeline.from_pretrained(tmp_path)
    assert theirs.scheduler.config.steps_offset == 1 and theirs.scheduler.config.clip_sample is False
    theirs, ours = quiet(theirs, ours)
    assert_images_close(_images(theirs), _images(ours))


def test_safety_checker_entries_are_accepted_and_ignored(sd_folder, tmp_path, caplog):
    import shutil

    shutil.copytree(sd_folder, tmp_path, dirs_exist_ok=True)
    index = json.loads((tmp_path / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["requires_safety_checker"] = True
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    (tmp_path / "safety_checker").mkdir()
    with caplog.at_level("WARNING"):
        pipe = sfumato.DiffusionPipeline.from_pretrained(tmp_path)
    assert pipe.safety_checker is None and pipe.config.requires_safety_checker is True
    assert "safety checker" in caplog.text
    out = pipe(PROMPT, num_inference_steps=1, output_type="np")
    assert out.nsfw_content_detected is None
