"""`sfumato generate` end to end on a tiny Stable Diffusion folder: files, metadata, reproducibility."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sfumato import infotext
from sfumato.cli import main


@pytest.fixture(scope="module")
def sd_model(tmp_path_factory):
    from pipelines.sd.components import save_sd

    torch.manual_seed(0)
    return save_sd(tmp_path_factory.mktemp("cli") / "tiny-sd")


@pytest.fixture(autouse=True)
def allocator_calls(monkeypatch):
    """The command keeps freed memory in its own process; here that process is pytest's: record instead."""
    from sfumato.runtime import memory

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda enabled=True: calls.append(enabled) or True)
    return calls


def test_the_command_keeps_freed_memory_in_its_own_process(tmp_path, capsys, sd_model, allocator_calls):
    code, paths, _ = generate(capsys, sd_model, "--output", str(tmp_path / "a.png"), "--seed", "1")
    assert code == 0 and len(paths) == 1
    assert allocator_calls == [True]


def generate(capsys, model, *argv):
    code = main(["generate", "a red circle", "--model", str(model), "--steps", "2", "--quiet", *argv])
    out, err = capsys.readouterr()
    return code, out.split(), err


def test_packed_cache_keeps_the_packed_weights_for_the_next_run(tmp_path, capsys, sd_model, monkeypatch):
    from sfumato.runtime import packed_cache

    if not packed_cache.available():
        pytest.skip("this torch cannot map packed oneDNN weights")
    monkeypatch.delenv("SFUMATO_PACKED_CACHE", raising=False)
    folder = tmp_path / "packed"
    images = []
    for i, extra in enumerate(([], ["--packed-cache", str(folder)], ["--packed-cache", str(folder)])):
        code, paths, _ = generate(
            capsys, sd_model, "--output", str(tmp_path / f"{i}.png"), "--seed", "3", *extra
        )
        assert code == 0
        images.append(np.asarray(Image.open(paths[0])))
        if i == 1:
            written = {e.name: e.stat().st_mtime_ns for e in folder.glob("*.packed")}
    assert written
    assert {e.name: e.stat().st_mtime_ns for e in folder.glob("*.packed")}.keys() == written.keys()
    assert all(np.array_equal(images[0], image) for image in images[1:])


def test_images_carry_their_parameters_and_reproduce(tmp_path, capsys, sd_model):
    code, paths, err = generate(
        capsys,
        sd_model,
        "--seed",
        "7",
        "--num-images",
        "2",
        "--outdir",
        str(tmp_path),
        "--negative-prompt",
        "blue, dark",
        "--guidance",
        "3.5",
    )
    assert code == 0, err
    assert [p.rsplit("/", 1)[1] for p in paths] == ["00000-7.png", "00001-8.png"]
    with Image.open(paths[1]) as image:
        params = infotext.parse(image.text["parameters"])
        details = json.loads(image.text["sfumato"])
        pixels = np.asarray(image.convert("RGB"))
    assert params["Prompt"] == "a red circle" and params["Negative prompt"] == "blue, dark"
    assert params["Seed"] == "8" and params["Steps"] == "2" and params["CFG scale"] == "3.5"
    assert params["Size"] == "64x64" and params["Model"] == "tiny-sd"
    assert details["seed"] == 8

    # the second image is exactly what a one-image run with its own seed gives
    code, again, _ = generate(
        capsys,
        sd_model,
        "--seed",
        "8",
        "--outdir",
        str(tmp_path),
        "--negative-prompt",
        "blue, dark",
        "--guidance",
        "3.5",
    )
    assert code == 0 and again[0].endswith("00002-8.png")  # numbering continues; nothing overwritten
    with Image.open(again[0]) as image:
        assert np.abs(np.asarray(image.convert("RGB")).astype(int) - pixels.astype(int)).max() <= 1


def test_scheduler_name_is_written_in_a1111_vocabulary(tmp_path, capsys, sd_model):
    code, paths, err = generate(
        capsys, sd_model, "--scheduler", "DPM++ 2M Karras", "--output", str(tmp_path / "x.png"), "--seed", "1"
    )
    assert code == 0, err
    with Image.open(paths[0]) as image:
        assert infotext.parse(image.text["parameters"])["Sampler"] == "DPM++ 2M Karras"


def test_unknown_scheduler_writes_nothing(tmp_path, capsys, sd_model):
    code, _, err = generate(capsys, sd_model, "--scheduler", "Eulr a", "--outdir", str(tmp_path / "out"))
    assert code == 2 and "--scheduler" in err and "Euler a" in err
    assert not (tmp_path / "out").exists()


def test_image_to_image_and_inpainting(tmp_path, capsys, sd_model):
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "in.png")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(tmp_path / "mask.png")
    code, paths, err = generate(
        capsys,
        sd_model,
        "--image",
        str(tmp_path / "in.png"),
        "--strength",
        "0.5",
        "--outdir",
        str(tmp_path / "i2i"),
        "--seed",
        "3",
    )
    assert code == 0, err
    with Image.open(paths[0]) as image:
        assert infotext.parse(image.text["parameters"])["Denoising strength"] == "0.5"
    code, paths, err = generate(
        capsys,
        sd_model,
        "--image",
        str(tmp_path / "in.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--outdir",
        str(tmp_path / "inpaint"),
        "--seed",
        "3",
    )
    assert code == 0, err
    assert Image.open(paths[0]).size == (64, 64)


def test_quiet_bundled_model_run_imports_no_transformers(tmp_path):
    """`--quiet` silences the Hub's and transformers' bars without importing them (0.5-1 s a run)."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from sfumato.cli import main\n"
        f"code = main(['generate', 'a red circle', '--steps', '2', '--seed', '1', '--quiet', '--outdir', {str(tmp_path)!r}])\n"
        "assert code == 0, code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'), "
        "os.environ.get('HF_HUB_DISABLE_PROGRESS_BARS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[] 1", out.stdout + out.stderr
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_freeu_is_applied_and_recorded(tmp_path, capsys, sd_model):
    import sfumato
    from pipelines.sd.components import quiet

    runs = {}
    for name, extra in (("plain", []), ("freeu", ["--freeu", "0.9", "0.2", "1.5", "1.6"])):
        code, paths, err = generate(
            capsys, sd_model, "--output", str(tmp_path / f"{name}.png"), "--seed", "5", *extra
        )
        assert code == 0, err
        with Image.open(paths[0]) as image:
            runs[name] = (
                np.asarray(image.convert("RGB")),
                image.text["parameters"],
                json.loads(image.text["sfumato"]),
            )
    pixels, text, details = runs["freeu"]
    assert infotext.parse(text)["FreeU"] == "0.9, 0.2, 1.5, 1.6"
    assert details["freeu"] == {"s1": 0.9, "s2": 0.2, "b1": 1.5, "b2": 1.6}
    assert "FreeU" not in infotext.parse(runs["plain"][1])
    assert np.abs(pixels.astype(int) - runs["plain"][0].astype(int)).max() > 2  # FreeU changed the image
    # what the library gives with the same seed and FreeU
    (pipe,) = quiet(sfumato.StableDiffusionPipeline.from_pretrained(sd_model))
    pipe.enable_freeu(s1=0.9, s2=0.2, b1=1.5, b2=1.6)
    expected = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(5)).images[
        0
    ]
    assert np.abs(np.asarray(expected).astype(int) - pixels.astype(int)).max() <= 1
