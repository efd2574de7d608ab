"""sfumato: diffusion pipelines, models and schedulers, compatible with diffusers checkpoints.

Public names are imported on first use (PEP 562), so `import sfumato` stays cheap: it loads
neither torch nor transformers.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_attributes
from ._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "ConfigMixin": "sfumato.config",
    "FrozenConfig": "sfumato.config",
    "register_to_config": "sfumato.config",
    "ModelMixin": "sfumato.models.base",
}

# Each subpackage lists its public names in a torch-free `_names.py`; they are exported here too.
_SUBMODULE_TABLES = (
    "sfumato.schedulers._names",
    "sfumato.models._names",
    "sfumato.pipelines._names",
    "sfumato.tokenization._names",
)


def _load_tables() -> None:
    for table in _SUBMODULE_TABLES:
        try:
            module = importlib.import_module(table)
        except ModuleNotFoundError as err:
            if err.name is None or not table.startswith(err.name):
                raise  # a real import error inside the table, not an absent subpackage
            continue
        for name, where in module.NAMES.items():
            _LAZY.setdefault(name, where)


_load_tables()

__all__ = ["__version__", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)


def _lazy_lookup(name: str) -> Any | None:
    """The public object called `name`, or None when sfumato has no such name."""
    return __getattr__(name) if name in _LAZY else None


if TYPE_CHECKING:
    from .config import ConfigMixin as ConfigMixin
    from .config import FrozenConfig as FrozenConfig
    from .config import register_to_config as register_to_config
    from .models.base import ModelMixin as ModelMixin
