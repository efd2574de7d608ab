"""Give back the pages of memory-mapped weights that were copied (cast or re-laid out) and are no longer read.

fp32 safetensors are used in place through an mmap. When a tensor is converted instead (fp32 files
loaded as bf16, weights turned channels-last), the original's pages stay resident, counted in the
process's memory, until the whole file is unmapped: loading SD1.5 as bf16 then peaks at the fp32
file plus the bf16 copy. `madvise(MADV_DONTNEED)` drops them at once. It is only applied to tensors in
file-backed mappings (checked in /proc/self/maps) that were never written (`tensor._version == 0`),
so a later read simply faults the same data back in from the file: values never change, whoever
still holds the old tensor.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import sys
from collections.abc import Iterable
from typing import NamedTuple

import torch

_MADV_DONTNEED = 4
_MADV_POPULATE_READ = 22  # Linux 5.14+; EINVAL before, where pages fault in one by one as usual
_PAGE = 4096


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


class FileMapping(NamedTuple):
    """One mapping of a file in this process (a line of /proc/self/maps)."""

    start: int
    end: int
    offset: int  # of the mapping's first byte in the file
    inode: int
    path: str  # as the kernel names it; ends in " (deleted)" once the file is unlinked


def mapped_files() -> list[FileMapping]:
    """This process's mappings of files: not anonymous memory, heap or stack."""
    found = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) < 6 or parts[4] == "0" or parts[5].startswith("["):
                    continue  # anonymous memory, heap, stack: never touched
                start, end = (int(x, 16) for x in parts[0].split("-"))
                found.append(FileMapping(start, end, int(parts[2], 16), int(parts[4]), parts[5].rstrip("\n")))
    except OSError:
        return []
    return found


def file_mappings() -> list[tuple[int, int]]:
    """Sorted (start, end) address ranges of this process's mappings of regular files."""
    return sorted((m.start, m.end) for m in mapped_files())


def _byte_range(t: torch.Tensor) -> tuple[int, int]:
    """The addresses of a contiguous tensor's first byte and of the byte after its last."""
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def in_file_mapping(t: torch.Tensor, mappings: list[tuple[int, int]]) -> bool:
    """Whether CPU tensor `t` lies inside one file mapping and was never written (its pages can be dropped)."""
    if t.device.type != "cpu" or t.numel() == 0 or t.is_inference() or t._version != 0:
        return False  # written (or, made under inference_mode, untracked): its pages may hold new data
    begin, end = _byte_range(t)
    i = bisect.bisect_right(mappings, (begin, float("inf"))) - 1
    return i >= 0 and end <= mappings[i][1]


def drop_pages(tensors: Iterable[torch.Tensor], mappings: list[tuple[int, int]] | None = None) -> int:
    """Drop the resident whole pages of each unwritten CPU tensor in a file mapping; returns bytes dropped."""
    libc = _libc()
    if libc is None:
        return 0
    mappings = file_mappings() if mappings is None else mappings
    dropped = 0
    for t in tensors:
        if in_file_mapping(t, mappings):
            begin, end = _byte_range(t)
            dropped += drop_page_range(begin, end - begin)
    return dropped


def drop_page_range(address: int, length: int) -> int:
    """`MADV_DONTNEED` on the whole pages inside [address, address + length) of a private file mapping
    never written; returns the bytes dropped. Partial pages at either end are kept: neighbours may share."""
    libc = _libc()
    first, last = -(-address // _PAGE) * _PAGE, (address + length) // _PAGE * _PAGE
    if libc is None or last <= first or libc.madvise(first, last - first, _MADV_DONTNEED) != 0:
        return 0
    return last - first


def populate(t: torch.Tensor, mappings: list[tuple[int, int]]) -> bool:
    """Map the file pages of an unwritten memory-mapped CPU tensor in one call, before it is read whole.

    A weight read for the first time faults its pages in 4 KiB at a time; on the VMs measured, a
    fault costs ~1.5 us, so the 3.4 GB of SD1.5's UNet cost ~1 s of faults in its first call.
    `MADV_POPULATE_READ` maps the same pages (read from the page cache or the disk) in one system
    call. Returns whether it did; a no-op for other tensors and kernels.
    """
    libc = _libc()
    if libc is None or not in_file_mapping(t, mappings):
        return False
    begin, end = _byte_range(t)
    first = begin // _PAGE * _PAGE  # a shared first page is only read, never dropped, here
    return libc.madvise(first, end - first, _MADV_POPULATE_READ) == 0


def cast_in_place(module: torch.nn.Module, args: tuple, kwargs: dict) -> bool:
    """`module.to(*args, **kwargs)` when it is a dtype cast on the CPU: one tensor at a time, giving back
    each memory-mapped original's pages as soon as its copy exists. Returns False (nothing done) for any
    other move, which `nn.Module.to` should make.

    `nn.Module.to` converts every tensor before the file's mapping can go: SD1.5 loaded from fp32 files
    and cast to bfloat16 held the 4 GB of file pages and the 2 GB of copies at once (peak 5.6 GiB
    instead of 2.4).
    """
    device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    if dtype is None or not dtype.is_floating_point or memory_format is not None:
        return False
    tensors = [*module.parameters(), *module.buffers()]
    if (device is not None and device.type != "cpu") or any(t.device.type != "cpu" for t in tensors):
        return False
    mappings = file_mappings()
    with torch.no_grad():
        for owner in module.modules():
            for slots in (owner._parameters, owner._buffers):
                for t in slots.values():
                    if t is None or not t.is_floating_point() or t.dtype == dtype:
                        continue  # shared tensors come round again, already cast
                    original = t.data
                    t.data = original.to(dtype)
                    if isinstance(t, torch.nn.Parameter) and t.grad is not None:
                        t.grad = t.grad.to(dtype)
                    drop_pages([original], mappings)
    return True
