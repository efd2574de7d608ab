"""`sfumato info MODEL`: the components of a pipeline folder, their classes, sizes and dtypes.

Reads only `model_index.json`, the configs and the safetensors headers, so it is instant even for
multi-GB models and loads no weights.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import UsageError


def add_parser(commands: Any) -> None:
    p = commands.add_parser("info", help="describe a model folder", description=__doc__.splitlines()[0])
    p.add_argument("model", help="Hub id or local pipeline folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def safetensors_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100_000_000:
            raise UsageError(f"{path} is not a valid safetensors file (header of {length} bytes)")
        return json.loads(f.read(length))


def describe_component(folder: Path) -> dict[str, Any]:
    parameters, dtypes, size = 0, Counter(), 0
    for path in sorted(folder.glob("*.safetensors")):
        size += path.stat().st_size
        for name, entry in safetensors_header(path).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= dim
            parameters += count
            dtypes[entry["dtype"]] += count
    return {
        "parameters": parameters,
        "dtype": ", ".join(d for d, _ in dtypes.most_common()) or "-",
        "bytes": size,
    }


def _human(n: float, units: tuple[str, ...]) -> str:
    for unit in units:
        if abs(n) < 1000 or unit == units[-1]:
            return f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1000
    return str(n)


def run(args: argparse.Namespace) -> int:
    from ..hub import resolve_folder

    try:
        root = resolve_folder(
            args.model, select=lambda files: [f for f in files if not f.endswith((".bin", ".ckpt"))]
        )
    except (OSError, ValueError) as err:
        raise UsageError(str(err)) from None
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise UsageError(f"{root} has no model_index.json, so it is not a pipeline folder")
    index = json.loads(index_path.read_text())
    rows = []
    for name, entry in sorted(index.items()):
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        library, cls = entry
        row = {"component": name, "class": cls or "-", "library": library or "-"}
        if cls and (root / name).is_dir():
            row |= describe_component(root / name)
        rows.append(row)
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "pipeline": index.get("_class_name"), "components": rows}, indent=2
            )
        )
        return 0
    print(f"{args.model}: {index.get('_class_name', '?')}")
    for row in rows:
        extra = ""
        if "parameters" in row:
            extra = f"{_human(row['parameters'], ('', 'K', 'M', 'B'))} params  {row['dtype']}  {_human(row['bytes'], ('B', 'KB', 'MB', 'GB'))}"
        print(f"  {row['component']:<18} {row['class']:<32} {extra}")
    return 0
