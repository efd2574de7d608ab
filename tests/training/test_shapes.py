"""Procedural shapes dataset: determinism, captions, splits, tensors, and the pixel judge on ground truth."""

from __future__ import annotations

import io
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sfumato.training.shape_judge import check_caption, judge
from sfumato.training.shapes import HOLDOUT, PALETTE, POSITION_PHRASES, SHAPES, ShapesDataset, parse_caption


def _bytes(ds: ShapesDataset, index: int) -> bytes:
    return ds.image(index).tobytes()


def test_same_seed_same_images_in_any_order():
    a, b = ShapesDataset(50, seed=7), ShapesDataset(50, seed=7)
    forward = [_bytes(a, i) for i in range(20)]
    backward = [_bytes(b, i) for i in reversed(range(20))][::-1]
    assert forward == backward
    assert [a.caption(i) for i in range(20)] == [b.caption(i) for i in range(20)]
    assert _bytes(a, 3) == _bytes(ShapesDataset(10_000_000, seed=7), 3)  # independent of the length


def test_different_seeds_give_different_images():
    a, b = ShapesDataset(20, seed=0), ShapesDataset(20, seed=1)
    same = sum(_bytes(a, i) == _bytes(b, i) for i in range(20))
    assert same <= 1
    assert len({a.caption(i) for i in range(20)}) >= 15  # items within a seed vary too


def test_caption_states_the_attributes():
    ds = ShapesDataset(100, seed=3, split="all")
    for i in range(100):
        scene = ds.scene(i)
        caption = scene.caption
        assert parse_caption(caption) == scene.attributes()
        words = caption.split()
        assert words[:4] == ["a", scene.size, scene.color, scene.shape]
        assert caption.endswith(f" {scene.background} background")
        assert POSITION_PHRASES[scene.position] in caption
        assert scene.color != scene.background
    with pytest.raises(ValueError, match="not a shapes-dataset caption"):
        parse_caption("a photo of an astronaut")


def test_pixels_show_the_scene_colours():
    ds = ShapesDataset(60, seed=5, size=64, split="all")
    for i in range(60):
        scene, pixels = ds.scene(i), np.asarray(ds.image(i))
        assert tuple(pixels[0, 0]) == PALETTE[scene.background]
        # the middle of the bounding box is inside every shape (star: its pentagon core)
        x, y = (int(c * 64) for c in scene.center)
        assert tuple(pixels[y, x]) == PALETTE[scene.color], scene


def test_holdout_split():
    train = ShapesDataset(400, seed=0, split="train")
    test = ShapesDataset(100, seed=0, split="test")
    held = set(HOLDOUT)
    assert not any((s.shape, s.color) in held for s in map(train.scene, range(400)))
    test_pairs = {(s.shape, s.color) for s in map(test.scene, range(100))}
    assert test_pairs == held
    all_pairs = {(s.shape, s.color) for s in map(ShapesDataset(600, split="all").scene, range(600))}
    assert held <= all_pairs


def test_items_are_tensors_in_minus_one_one():
    torch = pytest.importorskip("torch")
    ds = ShapesDataset(8, seed=0, size=32)
    item = ds[2]
    x = item["pixel_values"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    expected = torch.from_numpy(np.asarray(ds.image(2), dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    torch.testing.assert_close(x, expected)
    assert item["caption"] == ds.caption(2) and item["attributes"] == ds.scene(2).attributes()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and len(batch["caption"]) == 4
    assert len(list(ds)) == 8  # iteration stops at the length (IndexError protocol)


def test_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        ShapesDataset(0)
    with pytest.raises(ValueError, match="split must be one of"):
        ShapesDataset(10, split="val")
    with pytest.raises(ValueError, match="holdout"):
        ShapesDataset(10, holdout=(("hexagon", "red"),))
    with pytest.raises(ValueError, match="non-empty holdout"):
        ShapesDataset(10, split="test", holdout=()).scene(0)
    with pytest.raises(ValueError, match="nothing is left for split='train'"):
        ShapesDataset(10, holdout=tuple((s, c) for s in SHAPES for c in PALETTE))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        ShapesDataset(10, seed=-1)
    with pytest.raises(IndexError):
        ShapesDataset(10).scene(10)
    assert ShapesDataset(10).scene(-1) == ShapesDataset(10).scene(9)


def test_judge_recovers_ground_truth():
    ds = ShapesDataset(200, seed=2024, size=64, split="all")
    hits = Counter()
    for i in range(len(ds)):
        found, truth = judge(ds.image(i)), ds.scene(i).attributes()
        hits.update(key for key, value in truth.items() if found[key] == value)
    rates = {key: hits[key] / len(ds) for key in ("color", "shape", "background", "size", "position")}
    assert rates["color"] >= 0.98 and rates["background"] >= 0.98, rates
    assert rates["shape"] >= 0.95, rates
    assert rates["size"] >= 0.95 and rates["position"] >= 0.95, rates


def test_judge_tolerates_noise_and_jpeg():
    """Generated images are never pixel-perfect: Gaussian noise (sigma 8/255) + JPEG quality 75."""
    ds = ShapesDataset(100, seed=77, size=64, split="all")
    rng = np.random.default_rng(0)
    hits = Counter()
    for i in range(len(ds)):
        noisy = np.asarray(ds.image(i), dtype=np.float32) + rng.normal(0, 8, (64, 64, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
        found = judge(Image.open(buffer))
        hits.update(key for key, value in ds.scene(i).attributes().items() if found[key] == value)
    assert hits["color"] >= 98 and hits["background"] >= 98 and hits["position"] >= 98, hits
    assert hits["shape"] >= 90 and hits["size"] >= 95, hits


def test_judge_on_blank_and_mismatched_images():
    blank = Image.new("RGB", (64, 64), PALETTE["green"])
    found = judge(blank)
    assert found["background"] == "green" and found["shape"] is None and found["color"] is None
    ds = ShapesDataset(1, seed=11)
    scene = ds.scene(0)
    assert all(check_caption(ds.image(0), scene.caption).values())
    other = "square" if scene.shape != "square" else "circle"
    verdict = check_caption(ds.image(0), scene.caption.replace(scene.shape, other))
    assert verdict["shape"] is False and verdict["color"] is True


def test_training_package_imports_without_torch():
    code = (
        "import sys, sfumato.training as t; t.ShapesDataset(4).image(0); t.judge; t.ImageCaptionFolder;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
