"""Data files shipped inside the sfumato package (torch-free)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["clip_tokenizer_path"]


def clip_tokenizer_path() -> Path:
    """Folder holding the SD 1.x CLIP-L tokenizer (`vocab.json`, `merges.txt`, configs; MIT, OpenAI).

    Load it with `sfumato.CLIPTokenizer.from_pretrained(clip_tokenizer_path())` (or transformers' class).
    """
    # The package is installed as plain files (wheel or editable), so the traversable is a real folder.
    folder = Path(str(importlib.resources.files(__name__).joinpath("clip_tokenizer")))
    if not (folder / "vocab.json").is_file():
        raise FileNotFoundError(
            f"the bundled CLIP tokenizer is missing from {folder}; reinstall sfumato or run "
            "scripts/build_clip_vocab.py"
        )
    return folder
