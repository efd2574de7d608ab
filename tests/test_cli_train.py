"""`sfumato train`: bad input is one line on stderr, exit code 2, nothing written; a tiny run works."""

import json

import pytest
import torch
from PIL import Image

from sfumato.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_usage_error(code, err, message):
    assert code == 2
    assert err.startswith("sfumato: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--vae-steps", "-1"], "--vae-steps must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--max-minutes", "0"], "--max-minutes must be positive"),
        (["--learning-rate", "0"], "--learning-rate must be positive"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_shapes_bad_arguments(tmp_path, capsys, extra, message):
    code, _, err = run_cli(capsys, "train", "shapes", "--output", str(tmp_path / "out"), *extra)
    _assert_usage_error(code, err, message)
    assert not (tmp_path / "out").exists()


def test_non_empty_output_needs_resume(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "train", "shapes", "--output", str(out))
    _assert_usage_error(code, err, "is not empty; pass --resume")
    assert [p.name for p in out.iterdir()] == ["something.txt"]
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, "train", "shapes", "--output", str(tmp_path / "file"))
    _assert_usage_error(code, err, "is a file, expected a folder")


def test_finetune_bad_inputs(tmp_path, capsys, images):
    (tmp_path / "not_a_pipeline").mkdir()
    out = str(tmp_path / "out")
    code, _, err = run_cli(capsys, "train", "finetune", str(tmp_path / "not_a_pipeline"), "--data", str(images),
                           "--output", out)  # fmt: skip
    _assert_usage_error(code, err, "has no model_index.json")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    code, _, err = run_cli(
        capsys, "train", "finetune", str(pipe), "--data", str(tmp_path / "nope"), "--output", out
    )
    _assert_usage_error(code, err, "--data")
    code, _, err = run_cli(capsys, "train", "finetune", str(pipe), "--data", str(images), "--output", out)
    _assert_usage_error(code, err, "have no caption")  # a.png has no a.txt
    (images / "a.txt").write_text("a red square")
    code, _, err = run_cli(capsys, "train", "finetune", str(pipe), "--data", str(images), "--output", out)
    _assert_usage_error(code, err, "not a text-to-image pipeline")
    assert not (tmp_path / "out").exists()


def test_unconditional_bad_inputs(tmp_path, capsys, images):
    out = str(tmp_path / "out")
    code, _, err = run_cli(
        capsys, "train", "unconditional", "--data", str(tmp_path / "nope"), "--output", out
    )
    _assert_usage_error(code, err, "--data")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys, "train", "unconditional", "--data", str(tmp_path / "empty"), "--output", out
    )
    _assert_usage_error(code, err, "no images in")
    code, _, err = run_cli(capsys, "train", "unconditional", "--data", str(images), "--output", out,
                           "--resolution", "30")  # fmt: skip
    _assert_usage_error(code, err, "resolution must be a positive multiple of 4")
    assert not (tmp_path / "out").exists()


def test_unconditional_tiny_run_and_resume(tmp_path, capsys, images):
    before = torch.get_num_threads()
    out = str(tmp_path / "out")
    args = ["train", "unconditional", "--data", str(images), "--output", out, "--resolution", "8", "--batch-size",
            "1", "--quiet", "--threads", "1"]  # fmt: skip
    try:
        code, stdout, _ = run_cli(capsys, *args, "--steps", "2")
        assert code == 0 and "step 2" in stdout
        assert (tmp_path / "out" / "model_index.json").is_file()
        code, stdout, _ = run_cli(capsys, *args, "--steps", "3", "--resume")
        assert code == 0 and "step 3" in stdout
    finally:
        torch.set_num_threads(before)
