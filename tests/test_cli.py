"""The `sfumato` command's handling of bad input: one line on stderr, exit code 2, nothing written."""

import json
import os
import subprocess
import sys

import pytest

from sfumato.cli import main


@pytest.fixture
def pipeline_folder(tmp_path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--width", "500"], "--width 500 is not a positive multiple of 8; try 496 or 504"),
        (["--height", "0"], "--height 0 is not a positive multiple of 8"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--num-images", "0"], "--num-images must be at least 1"),
        (["--image", "missing.png"], "--image missing.png: no such file"),
        (["--mask", "m.png"], "--mask needs --image"),
        (["--strength", "1.5"], "--strength must be in (0, 1]"),
        (
            ["--freeu", "0.9", "0.2", "0", "1.6"],
            "--freeu factors must be positive (S1 S2 B1 B2), got 0.9 0.2 0.0 1.6",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, pipeline_folder, extra, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "generate", "a cat", "--model", str(pipeline_folder), *extra)
    assert code == 2
    assert err.startswith("sfumato: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_model_folder_without_model_index(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "generate", "a cat", "--model", str(tmp_path / "empty"))
    assert code == 2 and "has no model_index.json" in err
    assert not (tmp_path / "outputs").exists()


def test_unreadable_image(tmp_path, capsys, pipeline_folder):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = run_cli(capsys, "generate", "a cat", "--model", str(pipeline_folder), "--image", str(bad))
    assert code == 2 and "not a readable image" in err


def test_existing_output_is_not_overwritten(tmp_path, capsys, pipeline_folder):
    target = tmp_path / "cat.png"
    target.write_bytes(b"precious")
    code, _, err = run_cli(
        capsys, "generate", "a cat", "--model", str(pipeline_folder), "--output", str(target)
    )
    assert code == 2 and "already exists; pass --overwrite" in err
    assert target.read_bytes() == b"precious"


def test_info_refuses_a_folder_without_model_index(tmp_path, capsys):
    code, _, err = run_cli(capsys, "info", str(tmp_path))
    assert code == 2 and "has no model_index.json" in err


def test_help_reads_without_torch():
    code = "import sys; from sfumato.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
@pytest.mark.parametrize("user_setting", [None, "0"])
def test_the_command_asks_torch_for_huge_pages_unless_the_user_said_otherwise(user_setting):
    code = (
        "import os, sys; from sfumato.cli import main\n"
        "try: main(['--version'])\n"
        "except SystemExit: pass\n"
        "import torch; t = torch.ones(2**26)\n"  # 256 MB, touched
        "huge = [l.split()[1] for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')]\n"
        "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), int(huge[0]) if huge else -1)"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if user_setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = user_setting
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    setting, huge_kib = out.stdout.split()[-2:]
    assert setting == (user_setting or "1")
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="utf-8") as f:
            mode = f.read()  # e.g. "always [madvise] never"
    except OSError:
        mode = "[never]"
    if user_setting == "0" and "[madvise]" in mode:
        assert int(huge_kib) < 128 * 1024  # only asked-for memory gets huge pages: none of torch's
    elif user_setting is None and "[never]" not in mode:
        assert int(huge_kib) >= 128 * 1024  # most of the 256 MB tensor sits in 2 MiB pages


def test_info_reads_components_from_headers(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "unet").mkdir()
    (tmp_path / "text_encoder").mkdir()
    save_file(
        {"a": torch.zeros(10, 10), "b": torch.zeros(5)},
        tmp_path / "unet" / "diffusion_pytorch_model.safetensors",
    )
    save_file({"e": torch.zeros(3, 4, dtype=torch.float16)}, tmp_path / "text_encoder" / "model.safetensors")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
    }
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    code, out, _ = run_cli(capsys, "info", str(tmp_path), "--json")
    assert code == 0
    rows = {r["component"]: r for r in json.loads(out)["components"]}
    assert rows["unet"]["parameters"] == 105 and rows["unet"]["dtype"] == "F32"
    assert rows["text_encoder"]["parameters"] == 12 and rows["text_encoder"]["dtype"] == "F16"
    assert rows["safety_checker"]["class"] == "-"
    code, out, _ = run_cli(capsys, "info", str(tmp_path))
    assert code == 0 and "StableDiffusionPipeline" in out and "UNet2DConditionModel" in out
