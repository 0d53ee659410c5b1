"""Per-task loaders: official files when ``source=files``, small generated stand-ins when ``source=synthetic``.

``source=auto`` uses the files if they exist and falls back to the stand-in otherwise (smoke tests). A row made
from a stand-in records ``data: synthetic`` so it is never mistaken for a real result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lra import LRAError
from lra.data import listops


@dataclass
class Split:
    ids: np.ndarray  # (n, L) int64, or (n, 2, L) for two-document tasks; 0 = padding
    labels: np.ndarray  # (n,) int64


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    source: str  # "files:<path>" or "synthetic"

    def __getitem__(self, name: str) -> Split:
        return getattr(self, name)


def load_splits(task: dict[str, Any], data_dir: str | Path, seed: int = 0) -> Splits:
    name, source = task["name"], task.get("source", "files")
    if name not in _FILE_LOADERS:
        raise LRAError(f"unknown task {name!r}; available: {', '.join(sorted(_FILE_LOADERS))}")
    if source not in {"files", "synthetic", "auto"}:
        raise LRAError(f"task.source={source!r} is not one of files, synthetic, auto")
    root = Path(data_dir)
    if source == "synthetic" or (source == "auto" and not _files_present(task, root)):
        return synthetic_splits(task, seed)
    return _FILE_LOADERS[name](task, root)


def _files_present(task: dict[str, Any], root: Path) -> bool:
    return (root / task["path"]).exists()


# --- official files ------------------------------------------------------------------------------------------


def _listops_files(task: dict[str, Any], root: Path) -> Splits:
    folder = root / task["path"]
    split = {s: Split(*listops.read_tsv(folder / f"basic_{s}.tsv", task["max_len"])) for s in ("train", "val", "test")}
    return Splits(**split, source=f"files:{folder}")


def _not_yet(what: str) -> Callable[[dict[str, Any], Path], Splits]:
    def load(task: dict[str, Any], root: Path) -> Splits:
        raise LRAError(
            f"{task['name']} data not found at {root / task['path']} ({what}); see README, 'Data'. "
            f"For a smoke run without data use task.source=synthetic"
        )

    return load


_FILE_LOADERS: dict[str, Callable[[dict[str, Any], Path], Splits]] = {
    "listops": _listops_files,
    "text": _not_yet("aclImdb/{train,test}/{pos,neg}/*.txt"),
    "retrieval": _not_yet("tsv_data/new_aan_pairs.{train,eval,test}.tsv"),
    "image": _not_yet("cifar-10-batches-py/"),
    "pathfinder": _not_yet("pathfinder32/curv_contour_length_14/{imgs,metadata}"),
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
            num_train=sizes["train"], num_val=sizes["val"], num_test=sizes["test"],
            max_depth=int(syn.get("max_depth", 4)), min_length=int(syn.get("min_length", 1)),
            max_length=min(max_len, int(syn.get("max_length", max_len))), seed=seed,
        )
        rows = listops.generate(cfg)
        out = {}
        for s, items in rows.items():
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
