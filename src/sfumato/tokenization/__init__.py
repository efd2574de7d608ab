"""Tokenizers (`CLIPTokenizer`), imported on first use."""

from __future__ import annotations

from .._lazy import lazy_attributes
from ._names import NAMES

__all__ = sorted(NAMES)

__getattr__, __dir__ = lazy_attributes(__name__, NAMES)
