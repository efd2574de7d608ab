"""Pipelines load sfumato's CLIP text encoders (not transformers' modeling code) and still give diffusers' images."""

import subprocess
import sys

import pytest
import torch

import sfumato
from pipelines.sd.components import PROMPT, assert_images_close, quiet

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")]

KWARGS = dict(prompt=PROMPT, num_inference_steps=2, output_type="np")


def _images(pipe):
    return pipe(generator=torch.Generator().manual_seed(0), **KWARGS).images


def test_sd_gets_our_text_encoder_and_diffusers_images(sd_pipes):
    theirs, ours = sd_pipes
    assert type(ours.text_encoder) is sfumato.CLIPTextModel
    assert type(theirs.text_encoder).__module__.startswith("transformers.")
    embeds, negative = theirs.encode_prompt(PROMPT, "cpu", 1, True, "ugly")
    ours_embeds, ours_negative = ours.encode_prompt(PROMPT, "cpu", 1, True, "ugly")
    torch.testing.assert_close(ours_embeds, embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_negative, negative, atol=1e-6, rtol=0)
    assert_images_close(_images(theirs), _images(ours))


def test_sdxl_gets_our_text_encoders(sdxl_pipes):
    theirs, ours = sdxl_pipes
    assert type(ours.text_encoder) is sfumato.CLIPTextModel
    assert type(ours.text_encoder_2) is sfumato.CLIPTextModelWithProjection
    args = (PROMPT, None, "cpu", 1, True, "ugly")
    expected, got = theirs.encode_prompt(*args), ours.encode_prompt(*args)
    for a, b in zip(expected, got):  # embeds, negatives, pooled, negative pooled
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_a_transformers_text_encoder_can_be_passed(sd_folder, sd_pipes):
    import transformers

    _, ours = sd_pipes
    encoder = transformers.CLIPTextModel.from_pretrained(sd_folder / "text_encoder").eval()
    (loaded,) = quiet(sfumato.StableDiffusionPipeline.from_pretrained(sd_folder, text_encoder=encoder))
    assert loaded.text_encoder is encoder
    built = sfumato.StableDiffusionPipeline(**{**ours.components, "text_encoder": encoder})
    (built,) = quiet(built)
    reference = _images(ours)
    assert_images_close(reference, _images(loaded), atol=1e-6)
    assert_images_close(reference, _images(built), atol=1e-6)


def test_loading_and_running_a_pipeline_imports_no_transformers_modeling(sd_folder):
    code = (
        "import sys, torch, sfumato\n"
        f"pipe = sfumato.StableDiffusionPipeline.from_pretrained({str(sd_folder)!r})\n"
        # random init on the meta device would import torch._dynamo (~0.9 s) for nothing
        "assert 'torch._dynamo' not in sys.modules\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "pipe('a cat', num_inference_steps=1, generator=torch.Generator().manual_seed(0))\n"
        "print(type(pipe.text_encoder).__module__)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('transformers.models.clip.modeling',"
        " 'transformers.modeling_utils'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["sfumato.models.clip_text", "[]"], out.stdout
