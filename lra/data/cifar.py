"""Image: CIFAR-10 as 1024 grayscale pixel tokens (shared/specs/lra.md 1.5).

Grayscale uses the luma weights of ``tf.image.rgb_to_grayscale`` (0.2989, 0.5870, 0.1140), rounded to 0..255.
Splits as in LRA: train = the first 45,000 training images, val = the last 5,000, test = the test batch.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from lra import LRAError

LUMA = np.array([0.2989, 0.5870, 0.1140])
CIFAR_HELP = (
    "put CIFAR-10 there as cifar-10-batches-py/ (www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked: "
    "data_batch_1..5, test_batch) or a Hugging Face `cifar10` copy (save_to_disk folder or {train,test}*.parquet "
    "with columns img, label)"
)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(n, 3, 32, 32) or (n, 32, 32, 3) uint8 -> (n, 1024) int64 gray levels, row-major."""
    if rgb.shape[1] == 3:
        rgb = rgb.transpose(0, 2, 3, 1)
    gray = np.rint(rgb.astype(np.float64) @ LUMA).clip(0, 255)
    return gray.reshape(len(rgb), -1).astype(np.int64)


def _load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise LRAError(f"{path} is missing: {CIFAR_HELP}")
    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError) as err:
        raise LRAError(f"{path} is not a CIFAR-10 python batch (dict with b'data', b'labels'): {err}") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise LRAError(f"{path}: b'data' must be (n, 3072) uint8 (32x32 RGB), found {data.shape}")
    if len(labels) != len(data):
        raise LRAError(f"{path}: {len(labels)} labels for {len(data)} images")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise LRAError(f"{path}: image {bad[0]} has label {labels[bad[0]]}, outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"val"|"test": (ids (n, 1024), labels)}``."""
    if not folder.is_dir():
        raise LRAError(f"Image data not found at {folder}: {CIFAR_HELP}; see README, 'Data'")
    if (folder / "test_batch").exists() or (folder / "data_batch_1").exists():
        parts = [_load_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
        train_x, train_y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        test_x, test_y = _load_batch(folder / "test_batch")
        train_ids, test_ids = to_gray(train_x), to_gray(test_x)
    else:
        train_ids, train_y, test_ids, test_y = _read_hf(folder)
    cut = len(train_ids) * 9 // 10
    return {
        "train": (train_ids[:cut], train_y[:cut]),
        "val": (train_ids[cut:], train_y[cut:]),
        "test": (test_ids, test_y),
    }


def _read_hf(folder: Path):
    from PIL import Image

    from lra.data.byte_text import load_hf

    ds = load_hf(folder, CIFAR_HELP)
    out = []
    for split in ("train", "test"):
        if split not in ds:
            raise LRAError(f"{folder}: Hugging Face copy has no '{split}' split (found {sorted(ds)})")
        cols = ds[split].column_names
        img_col = "img" if "img" in cols else "image"
        if img_col not in cols or "label" not in cols:
            raise LRAError(f"{folder}: split '{split}' needs columns img (or image) and label, found {cols}")
        images = []
        for i, item in enumerate(ds[split].with_format("python")[img_col]):
            img = item if isinstance(item, Image.Image) else Image.open(io.BytesIO(item["bytes"]))
            if img.size != (32, 32):
                raise LRAError(f"{folder}: split '{split}' image {i} is {img.size[0]}x{img.size[1]}, expected 32x32")
            images.append(np.asarray(img.convert("RGB")))
        labels = np.asarray(ds[split]["label"], dtype=np.int64)
        out += [to_gray(np.stack(images)), labels]
    return tuple(out)
