"""A folder of images with captions, in the layouts users already have.

1. `metadata.jsonl` at the root (the Hugging Face "imagefolder" convention): one JSON object per line with
   `file_name` (path relative to the folder) and `text` (the caption); or `metadata.csv` with those columns.
2. Otherwise a `.txt` file beside each image with the same stem (`cat.png` + `cat.txt`), searched recursively.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .image_transforms import resize_center_crop, to_tensor

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def _metadata_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) pairs of a metadata.jsonl or metadata.csv file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return [(number, row) for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
    return records


def _from_metadata(path: Path, caption_column: str) -> list[tuple[Path, str]]:
    items = []
    for number, record in _metadata_records(path):
        if not isinstance(record, dict) or "file_name" not in record or caption_column not in record:
            raise ValueError(
                f"{path}, line {number}: each record needs the keys 'file_name' and {caption_column!r}, "
                f"got {str(record)[:120]}"
            )
        image = path.parent / record["file_name"]
        if not image.is_file():
            raise ValueError(f"{path}, line {number}: image file {image} does not exist")
        if not isinstance(record[caption_column], str):
            raise ValueError(f"{path}, line {number}: the caption of {image} must be a string")
        items.append((image, record[caption_column]))
    return items


def _from_text_files(root: Path) -> list[tuple[Path, str]]:
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    missing = [p for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} image(s) in {root} have no caption: {shown}. Put a .txt file with the same "
            f"name beside each image (e.g. {missing[0].with_suffix('.txt').name}) or write a metadata.jsonl"
        )
    return [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip()) for p in images]


def find_captioned_images(root: str | Path, caption_column: str = "text") -> list[tuple[Path, str]]:
    """(image path, caption) pairs of a folder, from `metadata.jsonl` if present, else `.txt` side files."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    metadata = [root / name for name in METADATA_FILES if (root / name).is_file()]
    items = _from_metadata(metadata[0], caption_column) if metadata else _from_text_files(root)
    if not items:
        raise ValueError(
            f"no images found in {root} (extensions {', '.join(sorted(IMAGE_EXTENSIONS))}); "
            f"add images with captions (metadata.jsonl or a .txt beside each image)"
        )
    return items


def load_image(path: Path) -> Image.Image:
    """The image at `path` as RGB; a ValueError naming the file if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None


class ImageCaptionFolder:
    """Map-style dataset (works with `torch.utils.data.DataLoader`) over a folder of captioned images.

    Args:
        root: the folder (layouts in the module docstring).
        size: images are resized (shorter side) and center-cropped to `size`×`size`.
        caption_column: the caption key in `metadata.jsonl`.

    Items are dicts: `pixel_values` (3, size, size) float tensor in [-1, 1], `caption`, `file_name`.
    """

    def __init__(self, root: str | Path, size: int = 512, caption_column: str = "text"):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        self.root, self.size = Path(root), size
        self.items = find_captioned_images(self.root, caption_column)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, index: int) -> Image.Image:
        """The resized, cropped RGB image of item `index`."""
        return resize_center_crop(load_image(self.items[index][0]), self.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, caption = self.items[index]
        return {"pixel_values": to_tensor(self.image(index)), "caption": caption, "file_name": str(path)}
