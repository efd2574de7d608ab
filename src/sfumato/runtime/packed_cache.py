"""Packed weights kept on disk, so a new process maps them instead of packing them again (opt-in).

`runtime.packing` reorders each weight into oneDNN's blocked layout at its first call, in fresh
memory: for SD1.5's UNet that is 3.4 GB of new pages and reorders, 2-3 s of a fresh process's first
UNet call on 2 cores of an AVX2 EPYC (5.0-5.6 s against 2.4 s for the next call). With a cache the
first process also writes each packed weight to a file; every later process maps those files
instead: the first call then took 2.8-3.5 s, with the same values bit for bit (the bytes are the
ones oneDNN wrote). The pages are the file's, so they count in the process's memory as the packed
copies did, and the kernel may evict and reread them under memory pressure.

The cost is disk: one packed copy of the UNet per input shape (3.4 GB for SD1.5 in float32 at one
size and batch; SDXL's 9.3 GB at 512 px). So it is off unless asked for: `pipe.optimize(packed_cache=True)`, or
`SFUMATO_PACKED_CACHE=1` (or a folder) in the environment, which `from_pretrained` and the `sfumato`
command read. The default folder is `$XDG_CACHE_HOME/sfumato/packed` (`~/.cache/...`); the least
recently used entries go once it holds more than `SFUMATO_PACKED_CACHE_GB` (default 20) GB, and
`clear()` empties it.

An entry is keyed by everything the packed bytes depend on: the weight's file (path, size, mtime,
inode) and place in it, dtype and shape, the packing's parameters and input shape, torch's version
and build, and the CPU (model and ISA flags), since oneDNN picks its layout per CPU. Only weights
used in place from a memory-mapped file and never written have such an identity; others (cast at
load, trained) are packed as usual. An entry is written to a temporary file and renamed, so none is
ever half-written; a damaged or foreign one (wrong sizes, wrong length) is ignored and replaced.

Mapped entries stay mapped for the process's life (a packed tensor may still be in use), each once;
past `MAX_MAPPED` of them (~64 input shapes of SD1.5's UNet) a process packs as usual.

The packed tensors are made over the mapped file through torch's AOT-Inductor C interface
(`aoti_torch_create_tensor_from_blob_v2`, the way AOT-compiled models load their packed constants);
where this torch lacks it, the cache does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import mmap
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from . import cpu
from .pages import FileMapping, drop_page_range, mapped_files

logger = logging.getLogger(__name__)

ENV = "SFUMATO_PACKED_CACHE"
ENV_LIMIT = "SFUMATO_PACKED_CACHE_GB"
DEFAULT_LIMIT_GB = 20.0
_MAGIC = b"SFUMATO-PACKED-1"
_ALIGN = 4096  # each packed weight starts on a page: oneDNN reads it in place
_FORMAT = 2  # 2: part offsets counted from the first page after the header
_ON, _OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
_WRITING = "writing-"  # an entry being written: `{_WRITING}*.tmp`, renamed to `{key}.packed` when whole
_STALE_SECONDS = 600  # a file being written older than this was left by a process that died writing it
_SPARE_BYTES = 1 << 30  # never fill the disk: an entry is written only with this much to spare after it
# Entries one process maps at most (each stays mapped: see `PackedCache._maps`): ~64 input shapes of
# SD1.5's UNet. Linux allows ~65 k mappings per process, and torch's allocator needs its own.
MAX_MAPPED = 16384


def default_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sfumato" / "packed"


def from_option(option: bool | str | os.PathLike | None) -> PackedCache | None:
    """The cache `optimize(packed_cache=...)` asks for: True (the default folder), a folder, False (none),
    or None (whatever `SFUMATO_PACKED_CACHE` says: unset, empty, "0", "false", "no" or "off" for none;
    "1", "true", "yes" or "on" for the default folder; else a folder). None as well where this torch
    cannot map packed weights."""
    if option is None:
        value = os.environ.get(ENV, "").strip()
        words = value.lower()
        option = False if words in _OFF else True if words in _ON else value
    if option is False:
        return None
    if not available():
        logger.info("this torch build cannot map packed oneDNN weights from files; no packed-weight cache")
        return None
    directory = default_directory() if option is True else Path(option).expanduser()
    return _cache_for(directory.resolve())


@functools.cache
def _cache_for(directory: Path) -> PackedCache:
    return PackedCache(directory)  # one per folder: its mappings live as long as the process


def clear(directory: str | os.PathLike | None = None) -> int:
    """Delete the cache's entries and unfinished writes (the default folder unless given); returns the
    bytes freed."""
    folder = Path(directory) if directory is not None else default_directory()
    freed = 0
    for entry in [*folder.glob("*.packed"), *folder.glob(f"{_WRITING}*.tmp")]:
        freed += entry.stat().st_size
        entry.unlink()  # a process that maps it keeps its pages until it ends
    return freed


@functools.cache
def available() -> bool:
    """Whether this torch can describe a packed oneDNN tensor and make one over given memory."""
    return _make_tensor_fn() is not None and all(
        hasattr(torch.ops.mkldnn, op) for op in ("_get_mkldnn_serialized_md", "_nbytes", "data_ptr")
    )


@functools.cache
def _make_tensor_fn() -> Any:
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        create = lib.aoti_torch_create_tensor_from_blob_v2
        layout, dtypes = (
            lib.aoti_torch_layout__mkldnn(),
            {
                torch.float32: lib.aoti_torch_dtype_float32(),
                torch.bfloat16: lib.aoti_torch_dtype_bfloat16(),
            },
        )
        device = lib.aoti_torch_device_type_cpu()
        steal = torch._C._aoti.alloc_tensor_by_stealing_from_void_ptr
    except (OSError, AttributeError):
        return None
    i64p = ctypes.POINTER(ctypes.c_int64)
    create.restype = ctypes.c_int32
    create.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, i64p, i64p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32,
        ctypes.c_int32, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int32, ctypes.c_char_p, ctypes.c_int64,
    ]  # fmt: skip
    capsule = ctypes.pythonapi.PyCapsule_New
    capsule.restype, capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

    def make(address: int, sizes: list[int], dtype: torch.dtype, metadata: bytes) -> torch.Tensor | None:
        if dtype not in dtypes:
            return None
        n = len(sizes)
        handle = ctypes.c_void_p()
        status = create(
            address, n, (ctypes.c_int64 * n)(*sizes), (ctypes.c_int64 * n)(*[1] * n), 0, dtypes[dtype],
            device, 0, ctypes.byref(handle), layout, metadata, len(metadata),
        )  # fmt: skip
        return steal(capsule(handle.value, None, None)) if status == 0 and handle.value else None

    return make


@functools.cache
def _build_signature() -> str:
    """What, besides the weight, decides the packed bytes: torch and its oneDNN, the CPU."""
    info = cpu.cpu_info()
    text = json.dumps([_FORMAT, torch.__version__, torch.__config__.show(), info.model, sorted(info.flags)])
    return hashlib.sha256(text.encode()).hexdigest()


class PackedCache:
    """A folder of packed weights, one file per weight and packing (see the module docstring)."""

    def __init__(self, directory: Path, limit_bytes: int | None = None) -> None:
        self.directory = directory
        self.limit_bytes = _limit_from_environment() if limit_bytes is None else limit_bytes
        self._maps: list[mmap.mmap] = []  # never closed: a packed tensor made over one may still be in use
        # each entry is mapped once per process: a module switching between input shapes maps it again
        # from here, not anew (mappings are never closed, and a process may hold only ~65 k of them)
        self._loaded: dict[str, tuple[list[torch.Tensor], list[tuple[int, int]]]] = {}
        self._files: list[FileMapping] | None = None  # this process's file mappings, as last read
        self._lock = threading.Lock()
        self._store_failed = False
        self.max_mapped, self._full_warned = MAX_MAPPED, False

    def key(self, weight: torch.Tensor, packing: Any) -> str | None:
        """The entry's name for `weight` packed as `packing` (JSON-able), None if the weight has no
        file identity (not memory-mapped from a file, or not at one place)."""
        where = self._locate(weight)
        if where is None:
            return None
        mapping, offset = where
        try:
            st = os.stat(mapping.path)
        except OSError:
            return None
        if st.st_ino != mapping.inode:
            return None  # another file under that name now: the mapped one is not the file on disk
        ident = [os.path.realpath(mapping.path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, offset]
        text = json.dumps([_build_signature(), ident, str(weight.dtype), list(weight.shape), packing])
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def load(
        self, key: str, shapes: list[list[int]], dtype: torch.dtype
    ) -> tuple[list[torch.Tensor], list] | None:
        """The packed tensors of entry `key` mapped from its file, if it exists and holds `shapes`;
        with the (address, length) of their pages."""
        with self._lock:
            loaded = self._loaded.get(key)
        if loaded is not None:
            tensors, _ = loaded
            return loaded if [list(t.shape) for t in tensors] == shapes else None
        if len(self._maps) >= self.max_mapped:
            if not self._full_warned:
                self._full_warned = True
                logger.warning(
                    "%d packed-weight cache entries mapped: packing the next ones as usual", self.max_mapped
                )
            return None
        path = self.directory / f"{key}.packed"
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    return None
                mapped = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE)
        except (OSError, ValueError):
            return None
        tensors = self._tensors(mapped, size, shapes, dtype)
        if tensors is None:
            mapped.close()
            logger.warning("ignoring a damaged packed-weight cache entry %s (it will be rewritten)", path)
            return None
        with self._lock:
            self._maps.append(mapped)
            self._loaded[key] = tensors
        try:
            os.utime(path)  # the least recently used entries go first
        except OSError:
            pass
        return tensors

    def _tensors(self, mapped: mmap.mmap, size: int, shapes: list[list[int]], dtype: torch.dtype) -> Any:
        if mapped[: len(_MAGIC)] != _MAGIC:
            return None
        header_len = int.from_bytes(mapped[len(_MAGIC) : len(_MAGIC) + 8], "little")
        try:
            header = json.loads(mapped[len(_MAGIC) + 8 : len(_MAGIC) + 8 + header_len])
            parts = header["parts"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(parts, list) or [p.get("sizes") for p in parts] != shapes:
            return None
        data_start = _round_up(len(_MAGIC) + 8 + header_len, _ALIGN)
        base = ctypes.addressof(ctypes.c_char.from_buffer(mapped)) + data_start
        tensors, pages = [], []
        make = _make_tensor_fn()
        for part in parts:
            start, length, metadata = part["offset"], part["nbytes"], bytes.fromhex(part["metadata"])
            if start % _ALIGN or start < 0 or length <= 0 or data_start + start + length > size:
                return None
            tensor = make(base + start, part["sizes"], dtype, metadata)
            # the description must cover exactly the bytes the file holds for it
            if tensor is None or torch.ops.mkldnn._nbytes(tensor) != length:
                return None
            tensors.append(tensor)
            pages.append((base + start, length))
        return tensors, pages

    def store(self, key: str, tensors: list[torch.Tensor]) -> None:
        """Write packed `tensors` as entry `key` (atomically); a failure only turns storing off."""
        if self._store_failed:
            return
        lengths = [torch.ops.mkldnn._nbytes(t) for t in tensors]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(self.directory).free < sum(lengths) + _SPARE_BYTES:
                raise OSError(f"less than {sum(lengths) + _SPARE_BYTES} bytes free")
            parts = []
            for tensor, length in zip(tensors, lengths, strict=True):
                metadata = torch.ops.mkldnn._get_mkldnn_serialized_md(tensor).numpy().tobytes().hex()
                parts.append({"sizes": list(tensor.shape), "nbytes": length, "metadata": metadata})
            offset = 0  # from the first page after the header, so the header's length does not matter
            for part, length in zip(parts, lengths, strict=True):
                part["offset"] = offset
                offset = _round_up(offset + length, _ALIGN)
            body = json.dumps({"parts": parts}).encode()
            data_start = _round_up(len(_MAGIC) + 8 + len(body), _ALIGN)
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=_WRITING, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_MAGIC + len(body).to_bytes(8, "little") + body)
                    for part, tensor, length in zip(parts, tensors, lengths, strict=True):
                        f.seek(data_start + part["offset"])
                        address = torch.ops.mkldnn.data_ptr(tensor)
                        f.write(memoryview((ctypes.c_char * length).from_address(address)))
                os.replace(temporary, self.directory / f"{key}.packed")
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as error:
            self._store_failed = True
            logger.warning("not writing the packed-weight cache in %s: %s", self.directory, error)
            return
        self._evict(keep=f"{key}.packed")

    def _evict(self, keep: str) -> None:
        """Delete the least recently used entries but `keep` while the folder holds more than the limit,
        and files left half-written by a process that died writing them."""
        try:
            for left in self.directory.glob(f"{_WRITING}*.tmp"):
                if time.time() - left.stat().st_mtime > _STALE_SECONDS:
                    left.unlink(missing_ok=True)
            entries = [(e.stat(), e) for e in self.directory.glob("*.packed") if e.name != keep]
            total = sum(st.st_size for st, _ in entries) + (self.directory / keep).stat().st_size
        except OSError:
            return
        for st, entry in sorted(entries, key=lambda e: e[0].st_mtime_ns):
            if total <= self.limit_bytes:
                break
            entry.unlink(missing_ok=True)  # a process that maps it keeps its pages until it ends
            total -= st.st_size

    def release(self, pages: list[tuple[int, int]]) -> None:
        """Give back the resident pages of entries no longer used (they stay mapped: see `_maps`)."""
        for address, length in pages:
            drop_page_range(address, length)

    def _locate(self, weight: torch.Tensor) -> tuple[FileMapping, int] | None:
        """The file mapping `weight` lies in and its byte offset in the file.

        /proc/self/maps is read once and kept (0.7 ms a read: 0.2 s for SD1.5's 257 weights); a kept
        entry is checked against /proc/self/map_files, which names the file mapped at that range now,
        so a range unmapped and reused for another file is never taken for the old one.
        """
        begin = weight.data_ptr()
        end = begin + weight.numel() * weight.element_size()
        for fresh in (False, True):
            if self._files is None or fresh:
                self._files = _mapped_files()
            for mapping in self._files:
                if mapping.start <= begin and end <= mapping.end:
                    if fresh or _still_mapped(mapping):
                        return mapping, mapping.offset + begin - mapping.start
                    break
        return None


def _mapped_files() -> list[FileMapping]:
    """This process's file mappings, those of files since deleted left out (they have no identity)."""
    return [m for m in mapped_files() if m.path.startswith("/") and not m.path.endswith(" (deleted)")]


def _still_mapped(mapping: FileMapping) -> bool:
    """Whether the range still maps the file it did when read (False where this cannot be checked)."""
    try:
        return os.readlink(f"/proc/self/map_files/{mapping.start:x}-{mapping.end:x}") == mapping.path
    except OSError:
        return False


def _limit_from_environment() -> int:
    value = os.environ.get(ENV_LIMIT, "").strip() or str(DEFAULT_LIMIT_GB)
    try:
        gigabytes = float(value)
    except ValueError:
        gigabytes = -1.0
    if not gigabytes >= 0:  # also NaN
        raise ValueError(f"{ENV_LIMIT} must be a size in GB (e.g. 20 or 2.5), got {value!r}")
    return int(gigabytes * 2**30)


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to
