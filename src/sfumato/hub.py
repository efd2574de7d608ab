"""An id or a folder becomes a local folder.

A local path always wins and never touches the network. Otherwise the Hugging Face cache is
searched first (a complete cached snapshot is used without any network call, even when online),
then `huggingface_hub` downloads only the files a caller's `select` function asks for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# `select(files)` gets every file name of a snapshot (posix paths relative to its root) and returns
# the ones to fetch; it raises FileNotFoundError when the snapshot cannot satisfy the request.
Selector = Callable[[Sequence[str]], Sequence[str]]

_TRUE = {"1", "on", "yes", "true"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class HubError(OSError):
    """A repository could not be found locally, in the cache, or on the Hub."""


def hub_offline() -> bool:
    """True when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set, read now rather than at import."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder huggingface_hub uses, honouring `HF_HUB_CACHE` and `HF_HOME` at call time."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def list_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or os.path.isabs(name)


def resolve_folder(
    id_or_folder: str | os.PathLike,
    *,
    select: Selector | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """Return a local folder holding `id_or_folder` (with at least the files `select` asks for)."""
    path = Path(os.fspath(id_or_folder)).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; expected a model folder or a Hub id like 'org/name'")
    repo_id = os.fspath(id_or_folder)
    if _looks_like_path(repo_id) or not _REPO_ID.match(repo_id):
        raise FileNotFoundError(f"no folder {path} (and {repo_id!r} is not a valid Hub id like 'org/name')")

    cache = hub_cache_dir(cache_dir)
    snapshot, missing = _cached_snapshot(repo_id, revision, cache, select)
    if snapshot is not None and not missing:
        return snapshot
    if local_files_only or hub_offline():
        raise HubError(_not_cached_message(repo_id, revision, cache, snapshot, missing, local_files_only))
    return _download(repo_id, revision, cache, token, select)


def resolve_file(
    id_or_folder: str | os.PathLike, filename: str, subfolder: str | None = None, **hub_kwargs: Any
) -> Path:
    """Path of `filename` in `subfolder` of a folder or Hub repo (flat layouts without the subfolder too)."""
    path = Path(os.fspath(id_or_folder)).expanduser()
    if path.is_file():
        return path
    candidates = [f"{subfolder}/{filename}", filename] if subfolder else [filename]

    def select(files: Sequence[str]) -> list[str]:
        for name in candidates:
            if name in files:
                return [name]
        raise FileNotFoundError(f"no {' or '.join(candidates)}")

    folder = resolve_folder(id_or_folder, select=select, **hub_kwargs)
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    where = folder / subfolder if subfolder else folder
    raise FileNotFoundError(
        f"no file named {filename} in {where}" + (f" (nor in {folder})" if subfolder else "")
    )


def _repo_cache_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _cached_snapshot(
    repo_id: str, revision: str | None, cache: Path, select: Selector | None
) -> tuple[Path | None, list[str]]:
    """(snapshot folder or None, files `select` wants that the snapshot lacks); reads the cache layout only."""
    repo = _repo_cache_folder(cache, repo_id)
    revision = revision or "main"
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    elif _COMMIT.match(revision):
        commit = revision
    else:
        return None, []
    folder = repo / "snapshots" / commit
    if not folder.is_dir():
        return None, []
    if select is None:
        return folder, []
    files = list_files(folder)
    try:
        wanted = select(files)
    except FileNotFoundError as err:
        return folder, [str(err)]
    return folder, [f for f in wanted if not (folder / f).is_file()]


def _not_cached_message(
    repo_id: str,
    revision: str | None,
    cache: Path,
    snapshot: Path | None,
    missing: list[str],
    local_only: bool,
) -> str:
    why = "local_files_only=True" if local_only else "HF_HUB_OFFLINE is set"
    rev = f" (revision {revision})" if revision else ""
    if snapshot is None:
        found = f"it is not in the Hugging Face cache (searched {_repo_cache_folder(cache, repo_id)})"
    else:
        found = f"its cached snapshot {snapshot} lacks: {', '.join(missing)}"
    return (
        f"cannot load {repo_id!r}{rev}: it is not a local folder, {found}, and downloading is disabled "
        f"({why}). To fix: download it once with network access, point HF_HOME or cache_dir at a cache "
        f"that has it, or pass the path of a local folder."
    )


def _download(repo_id: str, revision: str | None, cache: Path, token: Any, select: Selector | None) -> Path:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        patterns = None
        if select is not None:
            files = HfApi(token=token).list_repo_files(repo_id, revision=revision)
            patterns = list(select(files))
        folder = snapshot_download(
            repo_id, revision=revision, cache_dir=cache, token=token, allow_patterns=patterns
        )
    except GatedRepoError:
        raise HubError(f"{repo_id!r} is gated: accept its licence on the Hub and pass token=") from None
    except RepositoryNotFoundError:
        raise HubError(
            f"no repository {repo_id!r} on the Hugging Face Hub (if it is private, pass token=); "
            f"and no local folder of that name"
        ) from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id!r} has no revision {revision!r}") from None
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{repo_id!r} on the Hub does not have what is needed: {err}") from None
    except (HfHubHTTPError, OSError) as err:
        raise HubError(
            f"cannot reach the Hugging Face Hub to download {repo_id!r} ({type(err).__name__}: {err}); it "
            f"is not in the cache at {_repo_cache_folder(cache, repo_id)}. Pass a local folder, or set "
            f"HF_HUB_OFFLINE=1 to fail fast without network."
        ) from None
    return Path(folder)
