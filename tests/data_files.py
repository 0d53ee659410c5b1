"""Writers of tiny data sets in each official format, for the tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

REVIEWS = {
    ("train", "pos"): ["A wonderful film, truly great.", "Loved it: caf\u00e9 scenes are charming!"],
    ("train", "neg"): ["Terrible. I walked out.", "Boring and far too long."],
    ("test", "pos"): ["Great acting and a great story.", "Superb!"],
    ("test", "neg"): ["Awful script.", "Worst film this year."],
}


def write_aclimdb(root: Path, copies: int = 8) -> Path:
    folder = root / "aclImdb"
    for (split, label), texts in REVIEWS.items():
        d = folder / split / label
        d.mkdir(parents=True, exist_ok=True)
        for c in range(copies):
            for i, text in enumerate(texts):
                (d / f"{c}_{i}_{7 + i}.txt").write_text(f"{text} #{c}", encoding="utf-8")
    return folder


def write_aan(root: Path, rows: int = 40, seed: int = 0) -> Path:
    folder = root / "tsv_data"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split in ("train", "eval", "test"):
        lines = []
        for i in range(rows):
            label = i % 2
            words = " ".join(rng.choice(["graph", "neural", "parsing", "tree", "bank"], size=30))
            other = words if label else " ".join(rng.choice(["vision", "pixel", "image"], size=30))
            lines.append(f"{float(label)}\tid{i}a\tid{i}b\t{words}\t{other}")
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_cifar(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, size=per_batch)
        data = (labels[:, None] * 25 + rng.integers(0, 5, size=(per_batch, 3072))).astype(np.uint8)
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist(), b"batch_label": name.encode()}, f)
    return folder
