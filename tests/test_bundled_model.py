"""The model shipped in the repository: small, in the standard layout, and it draws what it is asked for."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sfumato.cli import main
from sfumato.cli.generate import bundled_model
from sfumato.training.shape_judge import judge

PROMPT = "a large red circle in the center on a white background"


def test_bundled_model_is_small_and_in_the_standard_layout() -> None:
    folder = bundled_model()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 25 * 2**20
    names = {p.relative_to(folder).as_posix() for p in files}
    for part in ("unet", "vae", "text_encoder"):
        assert any(n.startswith(f"{part}/") and n.endswith(".safetensors") for n in names), part
    assert {"model_index.json", "scheduler/scheduler_config.json"} <= names
    assert "tokenizer/tokenizer.json" in names or "tokenizer/vocab.json" in names
    assert not any(n.endswith((".bin", ".ckpt", ".pt")) or n.startswith("training/") for n in names)


def test_the_first_command_draws_the_prompt(tmp_path, capsys) -> None:
    out = tmp_path / "circle.png"
    assert main(["generate", PROMPT, "--output", str(out), "--seed", "0", "--quiet"]) == 0
    assert capsys.readouterr().out.split() == [str(out)]
    seen = judge(Image.open(out))
    assert (seen["color"], seen["background"]) == ("red", "white"), seen


def test_diffusers_loads_it_and_draws_the_same_image() -> None:
    import diffusers

    import sfumato

    images = []
    for lib in (sfumato, diffusers):
        pipe = lib.DiffusionPipeline.from_pretrained(bundled_model())
        pipe.set_progress_bar_config(disable=True)
        result = pipe(
            PROMPT, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np"
        )
        images.append(np.asarray(result.images[0]))
    assert np.abs(images[0] - images[1]).max() < 2 / 255


def test_it_loads_our_text_encoder_and_draws_what_transformers_encoder_drew() -> None:
    import transformers

    import sfumato

    folder = bundled_model()
    ours = sfumato.DiffusionPipeline.from_pretrained(folder)
    assert type(ours.text_encoder) is sfumato.CLIPTextModel
    encoder = transformers.CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32)
    before = sfumato.DiffusionPipeline.from_pretrained(folder, text_encoder=encoder.eval())
    images = []
    for pipe in (ours, before):
        pipe.set_progress_bar_config(disable=True)
        result = pipe(
            PROMPT, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np"
        )
        images.append(np.asarray(result.images[0]))
    assert np.abs(images[0] - images[1]).max() < 1e-5
