"""Captioned image folders: metadata.jsonl and .txt layouts, transforms, and errors naming the bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sfumato.training.captions import ImageCaptionFolder, find_captioned_images
from sfumato.training.image_transforms import resize_center_crop

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _solid(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_metadata_jsonl_layout(tmp_path):
    _solid(tmp_path / "a.png", RED)
    _solid(tmp_path / "sub" / "b.jpg", BLUE)
    lines = [
        {"file_name": "sub/b.jpg", "text": "a blue thing"},
        {"file_name": "a.png", "text": "a red thing"},
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    _solid(tmp_path / "unlisted.png", GREEN)  # not in the metadata: ignored, as in HF imagefolder
    ds = ImageCaptionFolder(tmp_path, size=16)
    assert len(ds) == 2
    assert [ds[i]["caption"] for i in range(2)] == ["a blue thing", "a red thing"]
    x = ds[1]["pixel_values"]
    assert tuple(x.shape) == (3, 16, 16)
    assert np.allclose(x[0].numpy(), 1.0) and np.allclose(x[1:].numpy(), -1.0)  # pure red in [-1, 1]
    assert ds[0]["file_name"].endswith("b.jpg")


def test_metadata_custom_caption_column(tmp_path):
    _solid(tmp_path / "a.png", RED)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "prompt": "red"}))
    assert find_captioned_images(tmp_path, caption_column="prompt")[0][1] == "red"
    with pytest.raises(ValueError, match=r"line 1: each record needs the keys 'file_name' and 'text'"):
        find_captioned_images(tmp_path)


def test_metadata_csv_layout(tmp_path):
    _solid(tmp_path / "a.png", RED)
    _solid(tmp_path / "b.png", GREEN)
    (tmp_path / "metadata.csv").write_text('file_name,text\nb.png,"green, plain"\na.png,red\n')
    assert [(p.name, c) for p, c in find_captioned_images(tmp_path)] == [
        ("b.png", "green, plain"),
        ("a.png", "red"),
    ]
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,red\nmissing.png,gone\n")
    with pytest.raises(ValueError, match=r"metadata\.csv, line 3: image file .*missing\.png does not exist"):
        find_captioned_images(tmp_path)


def test_text_file_layout(tmp_path):
    _solid(tmp_path / "cat.png", RED)
    (tmp_path / "cat.txt").write_text("a red cat\n")
    _solid(tmp_path / "more" / "dog.webp", GREEN)
    (tmp_path / "more" / "dog.txt").write_text("a green dog")
    items = find_captioned_images(tmp_path)
    assert [(p.name, c) for p, c in items] == [("cat.png", "a red cat"), ("dog.webp", "a green dog")]
    ds = ImageCaptionFolder(tmp_path, size=8)
    assert ds[1]["caption"] == "a green dog" and tuple(ds[1]["pixel_values"].shape) == (3, 8, 8)


def test_resize_and_center_crop():
    bands = Image.new("RGB", (60, 30))
    for i, color in enumerate((RED, GREEN, BLUE)):
        bands.paste(color, (20 * i, 0, 20 * i + 20, 30))
    crop = np.asarray(resize_center_crop(bands, 30))  # no resize: keeps columns 15..44
    assert crop.shape == (30, 30, 3)
    assert tuple(crop[10, 2]) == RED and tuple(crop[10, 15]) == GREEN and tuple(crop[10, 27]) == BLUE
    up = np.asarray(resize_center_crop(bands.resize((30, 15), Image.Resampling.NEAREST), 30))
    assert up.shape == (30, 30, 3) and tuple(up[15, 15]) == GREEN
    tall = resize_center_crop(Image.new("RGB", (10, 50)), 20)
    assert tall.size == (20, 20)


def test_empty_folder_error(tmp_path):
    (tmp_path / "notes.md").write_text("no pictures")
    with pytest.raises(ValueError, match="no images found in"):
        ImageCaptionFolder(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        ImageCaptionFolder(tmp_path / "missing")


def test_image_without_caption_is_named(tmp_path):
    _solid(tmp_path / "ok.png", RED)
    (tmp_path / "ok.txt").write_text("fine")
    _solid(tmp_path / "lonely.png", BLUE)
    with pytest.raises(ValueError, match=r"have no caption: .*lonely\.png"):
        ImageCaptionFolder(tmp_path)


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    (tmp_path / "broken.txt").write_text("a broken picture")
    ds = ImageCaptionFolder(tmp_path, size=8)  # listing does not decode images
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ds[0]


def test_metadata_errors_name_file_and_line(tmp_path):
    _solid(tmp_path / "a.png", RED)
    meta = tmp_path / "metadata.jsonl"
    meta.write_text(
        json.dumps({"file_name": "a.png", "text": "x"}) + "\n" + '{"file_name": "b.png", "text": "y"}'
    )
    with pytest.raises(ValueError, match=r"metadata\.jsonl, line 2: image file .*b\.png does not exist"):
        ImageCaptionFolder(tmp_path)
    meta.write_text("{not json}\n")
    with pytest.raises(ValueError, match=r"metadata\.jsonl, line 1: not valid JSON"):
        ImageCaptionFolder(tmp_path)


def test_bad_size():
    with pytest.raises(ValueError, match="size must be a positive int"):
        ImageCaptionFolder(".", size=0)
