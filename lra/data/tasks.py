"""Per-task loaders: official files when ``source=files``, small generated stand-ins when ``source=synthetic``.

``source=auto`` uses the files if they exist and falls back to the stand-in otherwise (smoke tests). A row made
from a stand-in records ``data: synthetic`` so it is never mistaken for a real result. Real files are tokenised
once and cached (``lra.data.cache``); ids are stored as uint16 (every LRA vocabulary fits) and widened per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lra import LRAError
from lra.data import byte_text, cifar, listops
from lra.data.cache import SPLITS, cached_arrays, fingerprint

CACHE_VERSION = 1  # bump when a reader's output changes, so old cache entries are not reused


@dataclass
class Split:
    ids: np.ndarray  # (n, L), or (n, 2, L) for two-document tasks; 0 = padding
    labels: np.ndarray  # (n,) int64


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    source: str  # "files:<path>" or "synthetic"
    from_cache: bool = False
    generator: int | None = None  # version of our generator that wrote the files (its generator.json), if any

    def __getitem__(self, name: str) -> Split:
        return getattr(self, name)


def load_splits(
    task: dict[str, Any], data_dir: str | Path, seed: int = 0, cache_dir: str | Path | None = None
) -> Splits:
    name, source = task["name"], task.get("source", "files")
    if name not in READERS:
        raise LRAError(f"unknown task {name!r}; available: {', '.join(sorted(READERS))}")
    if source not in {"files", "synthetic", "auto"}:
        raise LRAError(f"task.source={source!r} is not one of files, synthetic, auto")
    folder = Path(data_dir) / task["path"]
    if source == "synthetic" or (source == "auto" and not folder.exists()):
        return synthetic_splits(task, seed)
    if not folder.exists():
        raise LRAError(f"{name} data not found at {folder}: {HOW_TO_GET[name]}; see README, 'Data'")

    def build() -> dict[str, np.ndarray]:
        splits = READERS[name](task, folder)
        out = {}
        for s in SPLITS:
            ids, labels = splits[s]
            out[f"{s}_ids"], out[f"{s}_labels"] = compact(ids), np.asarray(labels, dtype=np.int64)
        return out

    if cache_dir is None:
        arrays, hit = build(), False
    else:
        material = {
            "version": CACHE_VERSION,
            "task": {k: task.get(k) for k in DATA_KEYS},
            "folder": str(folder.resolve()),
            "fingerprint": fingerprint(folder),
        }
        arrays, hit = cached_arrays(Path(cache_dir), name, material, build)
    parts = {s: Split(arrays[f"{s}_ids"], arrays[f"{s}_labels"]) for s in SPLITS}
    width = parts["train"].ids.shape[-1]
    if width > task["max_len"]:
        raise LRAError(
            f"{name} examples in {folder} are {width} tokens long but task.max_len={task['max_len']}; "
            f"set task.max_len={width} (images are not truncated)"
        )
    from lra.data.pathfinder import generator_version  # reads the stamp any generated folder may carry

    return Splits(**parts, source=f"files:{folder}", from_cache=hit, generator=generator_version(folder))


# The task keys that change the tokenised arrays (and so the cache key).
DATA_KEYS = ("name", "path", "max_len", "seq_len", "mask_pixel_zero", "split_seed", "pixel_levels")


def compact(ids: np.ndarray) -> np.ndarray:
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint16).max):
        raise LRAError(f"token ids must lie in 0..65535, found {ids.min()}..{ids.max()}")
    return ids.astype(np.uint16)


def pixel_tokens(pixels: np.ndarray, task: dict[str, Any]) -> np.ndarray:
    """Pixel value = token id with 0 as padding (LRA and NYS/SKY mask black pixels), or value + 1 when
    ``mask_pixel_zero`` is false so that black pixels are real tokens."""
    pixels = np.asarray(pixels).astype(np.uint16, copy=False)  # uint16: Path-X as int64 would take 26 GB
    levels = task.get("pixel_levels")  # a diagnostic, off unless given (`+task.pixel_levels=4`)
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 255:
            raise LRAError(f"task.pixel_levels={levels!r}: expected an integer 1..255 (or leave it out)")
        # Why: Lanczos-rendered strokes spread over ~190 intensities, each its own learned embedding. Quantised,
        # ink of every brightness shares a few tokens: 1..levels for pixels 1..255, 0 stays padding.
        pixels = np.where(pixels == 0, 0, 1 + (pixels.astype(np.uint32) * levels) // 256).astype(np.uint16)
    return pixels if task.get("mask_pixel_zero", True) else pixels + 1


# --- official files ------------------------------------------------------------------------------------------

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


def _listops(task: dict[str, Any], folder: Path) -> Arrays:
    return {s: listops.read_tsv(folder / f"basic_{s}.tsv", task["max_len"]) for s in SPLITS}


def _text(task: dict[str, Any], folder: Path) -> Arrays:
    raw = byte_text.read_imdb(folder)
    enc = {s: (byte_text.encode_bytes(t, task["seq_len"], task["max_len"]), y) for s, (t, y) in raw.items()}
    return {"train": enc["train"], "val": enc["test"], "test": enc["test"]}  # LRA validates on the test set


def _retrieval(task: dict[str, Any], folder: Path) -> Arrays:
    return {
        s: byte_text.read_aan(folder / f"new_aan_pairs.{f}.tsv", task["seq_len"], task["max_len"])
        for s, f in byte_text.AAN_SPLITS.items()
    }


def _image(task: dict[str, Any], folder: Path) -> Arrays:
    return {s: (pixel_tokens(x, task), y) for s, (x, y) in cifar.read_cifar(folder).items()}


def _pathfinder(task: dict[str, Any], folder: Path) -> Arrays:
    from lra.data import pathfinder

    splits = pathfinder.read_pathfinder(
        folder, max_len=task["max_len"], split_seed=task.get("split_seed", 42), dtype=np.uint8
    )
    return {s: (pixel_tokens(x, task), y) for s, (x, y) in splits.items()}


READERS: dict[str, Callable[[dict[str, Any], Path], Arrays]] = {
    "listops": _listops,
    "text": _text,
    "retrieval": _retrieval,
    "image": _image,
    "pathfinder": _pathfinder,
    "pathx": _pathfinder,
}
HOW_TO_GET = {
    "listops": "generate it with `python -m lra.data listops --out DIR` and pass data_dir=DIR, or point data_dir "
    "at your lra_release/lra_release folder",
    "text": byte_text.IMDB_HELP,
    "retrieval": byte_text.AAN_HELP,
    "image": cifar.CIFAR_HELP,
    "pathfinder": "generate it with `python -m lra.data pathfinder --out DIR` and pass data_dir=DIR, or point "
    "data_dir at your lra_release/lra_release folder",
    "pathx": "generate it with `python -m lra.data pathfinder --resolution 128 --out DIR` and pass data_dir=DIR, "
    "or point data_dir at your lra_release/lra_release folder",
}


# --- stand-ins for smoke runs --------------------------------------------------------------------------------


def synthetic_splits(task: dict[str, Any], seed: int) -> Splits:
    """Small stand-ins of the task's shape. ListOps uses the real generator at short lengths; the others are
    random token sequences whose label is a simple function of the tokens (so learning is possible)."""
    syn = task.get("synthetic", {})
    sizes = {s: int(syn.get(f"num_{s}", d)) for s, d in (("train", 512), ("val", 128), ("test", 128))}
    max_len = int(task["max_len"])
    if task["name"] == "listops":
        cfg = listops.ListOpsConfig(
            num_train=sizes["train"],
            num_val=sizes["val"],
            num_test=sizes["test"],
            max_depth=int(syn.get("max_depth", 4)),
            min_length=int(syn.get("min_length", 1)),
            max_length=min(max_len, int(syn.get("max_length", max_len))),
            seed=seed,
        )
        out = {}
        for s, items in listops.generate(cfg).items():
            ids = np.zeros((len(items), max_len), dtype=np.int64)
            for i, (src, _) in enumerate(items):
                toks = listops.tokenize(src)[:max_len]
                ids[i, : len(toks)] = toks
            out[s] = Split(ids, np.asarray([y for _, y in items], dtype=np.int64))
        return Splits(**out, source="synthetic")

    rng = np.random.default_rng(seed)
    vocab, classes = int(task["vocab_size"]), int(task["num_classes"])
    docs = 2 if task.get("dual") else 1
    out = {}
    for s, n in sizes.items():
        lengths = rng.integers(max_len // 2, max_len + 1, size=(n, docs))
        ids = rng.integers(1, vocab, size=(n, docs, max_len))
        ids[np.arange(max_len)[None, None, :] >= lengths[..., None]] = 0
        labels = ids[:, :, 0].sum(axis=1) % classes  # depends on the first token(s): learnable
        out[s] = Split(ids if docs == 2 else ids[:, 0], labels.astype(np.int64))
    return Splits(**out, source="synthetic")
