"""How sfumato uses this machine: CPU capabilities, dtype checks, memory and speed options.

Nothing here changes process-wide state unless called: `keep_freed_memory()` is the one function
that does (the glibc allocator), and the `sfumato` command calls it because it owns its process.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

NAMES: dict[str, str] = {
    "CpuInfo": "sfumato.runtime.cpu",
    "cpu_info": "sfumato.runtime.cpu",
    "fast_dtype": "sfumato.runtime.cpu",
    "SlowDtypeWarning": "sfumato.runtime.dtypes",
    "slow_dtype_message": "sfumato.runtime.dtypes",
    "keep_freed_memory": "sfumato.runtime.memory",
    "release_freed_memory": "sfumato.runtime.memory",
}

__all__ = sorted(NAMES)

__getattr__, __dir__ = lazy_attributes(__name__, NAMES)
