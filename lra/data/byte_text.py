"""Byte-level text tasks: IMDB (Text) and AAN (Retrieval).

Tokens are UTF-8 bytes + 1 (TFDS ``ByteTextEncoder``; 0 is padding), truncated to ``seq_len`` and right-padded
with 0 to ``max_len`` (shared/specs/lra.md 1.3, 1.4).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from lra import LRAError


def encode_bytes(texts: list[str], seq_len: int, max_len: int) -> np.ndarray:
    out = np.zeros((len(texts), max_len), dtype=np.int64)
    limit = min(seq_len, max_len)
    for i, text in enumerate(texts):
        ids = np.frombuffer(text.encode("utf-8")[:limit], dtype=np.uint8)
        out[i, : len(ids)] = ids.astype(np.int64) + 1
    return out


# --- Text: IMDB ----------------------------------------------------------------------------------------------

IMDB_HELP = (
    "put the IMDB reviews there as aclImdb/{train,test}/{pos,neg}/*.txt (ai.stanford.edu/~amaas/data/sentiment/"
    "aclImdb_v1.tar.gz, unpacked) or as a Hugging Face `imdb` copy (a save_to_disk folder, or "
    "{train,test}*.parquet with columns text, label)"
)


def read_imdb(folder: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """train and test reviews with labels (1 = positive), from aclImdb/ or a Hugging Face copy in ``folder``."""
    if not folder.is_dir():
        raise LRAError(f"Text data not found at {folder}: {IMDB_HELP}; see README, 'Data'")
    if (folder / "train" / "pos").is_dir():
        out = {}
        for split in ("train", "test"):
            texts, labels = [], []
            for label, sub in ((0, "neg"), (1, "pos")):
                d = folder / split / sub
                if not d.is_dir():
                    raise LRAError(f"{d} is missing: {IMDB_HELP}")
                files = sorted(d.glob("*.txt"))
                texts += [f.read_text(encoding="utf-8", errors="replace") for f in files]
                labels += [label] * len(files)
            if not texts:
                raise LRAError(f"{folder / split} holds no reviews: {IMDB_HELP}")
            out[split] = (texts, np.asarray(labels, dtype=np.int64))
        return out
    return read_hf_text(folder)


def read_hf_text(folder: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    ds = load_hf(folder, IMDB_HELP)
    out = {}
    for split in ("train", "test"):
        if split not in ds:
            raise LRAError(f"{folder}: Hugging Face copy has no '{split}' split (found {sorted(ds)}): {IMDB_HELP}")
        cols = ds[split].column_names
        if not {"text", "label"} <= set(cols):
            raise LRAError(f"{folder}: split '{split}' needs columns text and label, found {cols}")
        labels = np.asarray(ds[split]["label"], dtype=np.int64)
        bad = np.flatnonzero((labels < 0) | (labels > 1))
        if len(bad):
            raise LRAError(f"{folder}: split '{split}' row {bad[0]}: label {labels[bad[0]]} is not 0 or 1")
        out[split] = (list(ds[split]["text"]), labels)
    return out


def load_hf(folder: Path, help_text: str):
    """A Hugging Face DatasetDict from a ``save_to_disk`` folder or from parquet files named by split."""
    import datasets

    datasets.disable_progress_bars()
    if (folder / "dataset_dict.json").exists():
        return datasets.load_from_disk(str(folder))
    files = {}
    for split in ("train", "validation", "test"):
        found = sorted(folder.rglob(f"{split}*.parquet")) or sorted(folder.rglob(f"{split}-*.parquet"))
        if found:
            files[split] = [str(f) for f in found]
    if not files:
        raise LRAError(f"no data found in {folder}: {help_text}")
    return datasets.load_dataset("parquet", data_files=files)


# --- Retrieval: AAN ------------------------------------------------------------------------------------------

AAN_SPLITS = {"train": "train", "val": "eval", "test": "test"}
AAN_HELP = (
    "put new_aan_pairs.{train,eval,test}.tsv there (from lra_release.gz: lra_release/lra_release/tsv_data/); "
    "point data_dir at the unpacked lra_release/lra_release folder"
)


def read_aan(path: Path, seq_len: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Two byte-level documents per row ``(n, 2, max_len)`` and labels, from a headerless 5-column TSV
    (label, id1, id2, text1, text2); quotes are not special, as in the LRA reader."""
    if not path.is_file():
        raise LRAError(f"Retrieval data not found at {path}: {AAN_HELP}")
    csv.field_size_limit(sys.maxsize)
    docs1, docs2, labels = [], [], []
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if len(row) != 5:
                raise LRAError(
                    f"{path}:{line_no}: expected 5 tab-separated columns "
                    f"(label, id1, id2, text1, text2), found {len(row)}"
                )
            try:
                label = int(float(row[0]))
            except ValueError:
                raise LRAError(f"{path}:{line_no}: label {row[0]!r} is not a number") from None
            if label not in (0, 1):
                raise LRAError(f"{path}:{line_no}: label {label} is not 0 or 1")
            labels.append(label)
            docs1.append(row[3])
            docs2.append(row[4])
    if not labels:
        raise LRAError(f"{path} holds no rows")
    ids = np.stack([encode_bytes(docs1, seq_len, max_len), encode_bytes(docs2, seq_len, max_len)], axis=1)
    return ids, np.asarray(labels, dtype=np.int64)
