"""Keep freed memory in the process (glibc), so big activations are not page-faulted afresh.

A 512 px VAE decode allocates many 128-256 MiB activations. glibc hands out every block above its
mmap threshold (128 KiB to 32 MiB, adjusted on the fly) as a fresh `mmap` and returns it on free,
so each decode zero-fills and faults in ~11 GB of pages: about 40% of its time on CPU. Raising the
mmap and trim thresholds keeps freed blocks in the heap for the next allocation.

Blocks of 64 MiB and more still get their own mapping, given back when freed: kept in the heap,
the VAE's 128-256 MiB maps at 512 px fragment it, and a 512 px SD1.5 image peaked at 5.57 GiB
(diffusers: 5.3-5.5) against 5.23 GiB with the 64 MiB cut, at the same speed.

Since the VAE's large convolutions go to Winograd (`runtime.winograd`) the gain is smaller, and it
depends on what a page fault costs: on an AVX2 EPYC VM (~1.5 us a fault, several times that for
memory the VM has not touched since it booted) a 512 px SD1.5 image took 0.70-0.76x diffusers' time
with it and 0.71-0.81x without, a 256 px one 0.58-0.62x against 0.62x, at a peak up to 4% higher
(bench/README.md). The `sfumato` command, which owns its process, calls it.

This changes the whole process's allocator, so the library never does it on its own: call
`keep_freed_memory()` or set
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` in the environment before Python starts. The
cost is resident memory: freed activations stay mapped until `release_freed_memory()`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP_MMAP = 64 << 20  # blocks below this come from the heap and are reused
_KEEP_TRIM = 1 << 30  # free heap kept up to 1 GiB before glibc trims it
_GLIBC_DEFAULT = 128 * 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it; musl and macOS libc do not
    except (OSError, AttributeError):
        return None
    return libc


def is_supported() -> bool:
    """True where the C library is glibc (Linux); elsewhere the functions here do nothing."""
    return _glibc() is not None


def keep_freed_memory(enabled: bool = True) -> bool:
    """Process-wide: keep freed blocks below 64 MiB for reuse (`enabled=False`: glibc's fixed defaults).

    Returns whether the setting was applied (False off glibc). Turning it off restores glibc's
    default thresholds (128 KiB; glibc's own on-the-fly adjustment stays off once set) and gives
    the kept memory back to the system.
    """
    libc = _glibc()
    if libc is None:
        return False
    mmap, trim = (_KEEP_MMAP, _KEEP_TRIM) if enabled else (_GLIBC_DEFAULT, _GLIBC_DEFAULT)
    ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1
    if not enabled:
        release_freed_memory()
    return ok


def release_freed_memory() -> None:
    """Give free heap memory back to the system (`malloc_trim(0)`), e.g. after a batch of images."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
