"""Pipelines: components + one shared denoising loop (`denoise.run`). Names are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from ._names import NAMES

__all__ = sorted(NAMES)


def __getattr__(name: str) -> Any:
    where = NAMES.get(name)
    if where is None:
        raise AttributeError(f"module 'sfumato.pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(NAMES))
