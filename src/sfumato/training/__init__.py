"""Training data: the procedural shapes dataset, its pixel judge, and captioned image folders.

Names are imported on first use (PEP 562), so importing this package loads neither torch nor numpy.
"""

from __future__ import annotations

from .._lazy import lazy_attributes
from ._names import NAMES

__all__ = sorted(NAMES)

__getattr__, __dir__ = lazy_attributes(__name__, NAMES)
