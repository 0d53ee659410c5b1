"""Tokenised splits cached as ``.npy`` files, keyed by the data config and a fingerprint of the source files.

Why: decoding 200K Pathfinder PNGs or 150K AAN pairs takes minutes; loading the arrays back takes seconds.
A cache entry is a folder ``<cache_dir>/<task>-<key>/`` with one ``.npy`` per array and ``meta.json``, written
last, that records each file's size and CRC32. No ``meta.json`` means a partial entry; a size or CRC mismatch
means corruption: either way the entry is rebuilt. Arrays are memory-mapped on load. Processes that want the same
missing entry build it once: the first takes a lock file beside it, the others wait and then load what it wrote
(five Pathfinder runs started together on a fresh machine once each decoded the 200K PNGs, session 14).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no lock, concurrent builds each write their own copy as before
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def fingerprint(path: Path) -> str:
    """Sizes and modification times of every file under ``path``: changes when the data does."""
    h = hashlib.sha1()
    if path.is_file():
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for root, dirs, files in os.walk(path):
        dirs.sort()
        rel = os.path.relpath(root, path)  # once per folder: per file it was most of the ~6 s for 200K PNGs
        prefix = "" if rel == "." else rel + os.sep
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            h.update(f"{prefix}{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_key(material: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _valid(entry: Path) -> dict[str, Any] | None:
    meta_path = entry / "meta.json"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        for name, info in meta["files"].items():
            f = entry / name
            if not f.exists() or f.stat().st_size != info["size"] or _crc(f) != info["crc32"]:
                log.warning("cache %s: %s is damaged; rebuilding", entry, name)
                return None
    except (json.JSONDecodeError, KeyError, TypeError):
        log.warning("cache %s: meta.json is unreadable; rebuilding", entry)
        return None
    return meta


def cached_arrays(
    cache_dir: Path, name: str, material: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], bool]:
    """The arrays for ``material``: loaded (memory-mapped) if a valid entry exists, else built and stored.
    Returns the arrays and whether they came from the cache."""
    entry = Path(cache_dir) / f"{name}-{cache_key(material)}"
    if (meta := _valid(entry)) is not None:
        return _load(entry, meta), True
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(entry):
        if (meta := _valid(entry)) is not None:  # built by the process we waited for
            return _load(entry, meta), True
        return _build(entry, material, build), False


def _load(entry: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.load(entry / f"{k}.npy", mmap_mode="r") for k in meta["files_order"]}


@contextmanager
def _build_lock(entry: Path) -> Iterator[None]:
    """Holds ``<entry>.lock`` exclusively; released when the holder exits, also if it crashes."""
    if fcntl is None:
        yield
        return
    with entry.with_name(entry.name + ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("cache %s: another process is building it; waiting for it", entry)
            start = time.perf_counter()
            fcntl.flock(f, fcntl.LOCK_EX)
            log.info("cache %s: waited %.0fs", entry, time.perf_counter() - start)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(entry: Path, material: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = build()
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {}
    for key, arr in arrays.items():
        f = tmp / f"{key}.npy"
        np.save(f, np.ascontiguousarray(arr))
        files[f.name] = {"size": f.stat().st_size, "crc32": _crc(f)}
    (tmp / "meta.json").write_text(
        json.dumps({"material": material, "files": files, "files_order": list(arrays)}, default=str, indent=1)
    )
    shutil.rmtree(entry, ignore_errors=True)
    try:
        tmp.rename(entry)
    except OSError:  # another process stored the same entry first: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return arrays
