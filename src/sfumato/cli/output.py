"""Output file names that never clobber, and PNGs written whole or not at all."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .errors import UsageError

_NUMBERED = re.compile(r"^(\d{5})-")


def planned_paths(
    count: int, seeds: list[int], output: str | None, outdir: str, overwrite: bool
) -> list[Path]:
    """Where each image goes: `--output` (numbered when several) or `NNNNN-seed.png` in `--outdir`."""
    if output is not None:
        path = Path(output)
        if path.suffix.lower() != ".png":
            raise UsageError(f"--output {output}: only .png is supported (the metadata lives in a PNG chunk)")
        paths = (
            [path]
            if count == 1
            else [path.with_name(f"{path.stem}-{i + 1}{path.suffix}") for i in range(count)]
        )
        taken = [p for p in paths if p.exists()]
        if taken and not overwrite:
            raise UsageError(
                f"{taken[0]} already exists; pass --overwrite to replace it or choose another --output"
            )
        if path.parent != Path("") and not path.parent.is_dir():
            raise UsageError(f"--output {output}: the folder {path.parent} does not exist")
        return paths
    folder = Path(outdir)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--outdir {outdir} is a file, not a folder")
    numbers = [
        int(m.group(1))
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := _NUMBERED.match(p.name))
    ]
    start = max(numbers, default=-1) + 1
    return [folder / f"{start + i:05d}-{seed}.png" for i, seed in enumerate(seeds)]


def write_png(image: Any, path: Path, parameters: str, details: dict[str, Any], overwrite: bool) -> None:
    """Save with `parameters` (A1111 text) and `sfumato` (JSON) chunks; atomic, and no-clobber unless asked."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    info.add_text("sfumato", json.dumps(details, sort_keys=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.partial", dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG", pnginfo=info)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if another process took the name meanwhile
    except FileExistsError:
        raise UsageError(f"{path} appeared while generating; not overwritten (pass --overwrite)") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
