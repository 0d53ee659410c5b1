"""ListOps: the LRA generator (``lra_benchmarks/data/listops.py`` algorithm), TSV writer and reader.

The generator follows the official algorithm (shared/specs/lra.md, section 2) with one deliberate change: it is
seeded, and deduplication keeps insertion order (a dict instead of a set of string-hashed tuples), so the same
seed always writes the same files.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lra import LRAError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUE_P = 0.25
HEADER = ("Source", "Target")
# Token ids after the LRA preprocessing (']' -> 'X', parentheses dropped). 0 is padding, 1 is out-of-vocabulary.
VOCAB = ("<pad>", "<unk>", *[str(d) for d in range(10)], *OPERATORS, "X")
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}


@dataclass(frozen=True)
class ListOpsConfig:
    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2_000
    seed: int = 0


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int) -> tuple[object, int]:
    """A random expression as the official left-nested tuple, and its token count (parentheses excluded)."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.randint(0, 9), 1
    num_args = rng.randint(2, max_args)
    children, length = [], 2  # operator token and ']'
    for _ in range(num_args):
        child, child_len = generate_tree(rng, depth + 1, max_depth, max_args)
        children.append(child)
        length += child_len
    tree: object = (rng.choice(OPERATORS), children[0])
    for child in children[1:]:
        tree = (tree, child)
    return (tree, END), length


def to_string(tree: object) -> str:
    """The official serialisation: a pair ``(a, b)`` becomes ``( a b )``."""
    out: list[str] = []
    stack: list[object] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):
            out.append("(")
            stack += [")", node[1], node[0]]  # popped in the order a, b, ")"
        else:
            out.append(str(node))
    return " ".join(out)


def to_value(tree: object) -> int:
    """The label: MIN, MAX, MED (numpy median truncated to int) or SM (sum mod 10) of the arguments."""
    if not isinstance(tree, tuple):
        return int(tree)  # type: ignore[arg-type]
    # Unwind ((((op, a1), a2), ...), ']') into op and its arguments.
    node, args = tree[0], []
    while isinstance(node, tuple) and node[0] not in OPERATORS:
        args.append(node[1])
        node = node[0]
    op, first = node  # type: ignore[misc]
    values = [to_value(first), *(to_value(a) for a in reversed(args))]
    if op == "[MIN":
        return min(values)
    if op == "[MAX":
        return max(values)
    if op == "[MED":  # int(np.median(values)): the mean of the two middle values, truncated
        values.sort()
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
    return sum(values) % 10


def _chunk(args: tuple[ListOpsConfig, int, int]) -> list[tuple[str, int]]:
    """``size`` accepted samples from the chunk's own random stream (so chunks can run in parallel)."""
    cfg, index, size = args
    rng = random.Random(cfg.seed * 1_000_003 + index)
    out = []
    for _ in range(50 * size + 1000):
        tree, length = generate_tree(rng, 1, cfg.max_depth, cfg.max_args)
        if cfg.min_length < length < cfg.max_length:
            out.append((to_string(tree), to_value(tree)))
            if len(out) == size:
                break
    return out


def generate(cfg: ListOpsConfig, workers: int = 1, chunk_size: int = 1000) -> dict[str, list[tuple[str, int]]]:
    """Unique samples with ``min_length < length < max_length``, split train/val/test in generation order.

    Samples come in chunks with their own seeds, merged in chunk order, so the result depends on the seed and
    chunk size only, not on the number of workers."""
    total = cfg.num_train + cfg.num_val + cfg.num_test
    samples: dict[str, int] = {}
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        index, max_chunks = 0, 3 * (total // chunk_size + 1) + 10
        while len(samples) < total:
            need = -(-(total - len(samples)) // chunk_size)
            jobs = [(cfg, i, chunk_size) for i in range(index, index + need)]
            index += need
            chunks = pool.imap(_chunk, jobs) if pool else map(_chunk, jobs)
            for chunk in chunks:
                for source, label in chunk:
                    if len(samples) < total:
                        samples.setdefault(source, label)
            if index > max_chunks:  # the space of expressions is too small for the request
                break
    finally:
        if pool:
            pool.close()
    if len(samples) < total:
        raise LRAError(
            f"ListOps generator found only {len(samples)} of {total} unique expressions with "
            f"{cfg.min_length} < length < {cfg.max_length} and max_depth={cfg.max_depth}: widen the length "
            "range, raise max_depth or ask for fewer samples"
        )
    items = list(samples.items())
    a, b = cfg.num_train, cfg.num_train + cfg.num_val
    return {"train": items[:a], "val": items[a:b], "test": items[b:]}


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
    """The official layout: header ``Source<TAB>Target``; written to a temporary file, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(HEADER)
        writer.writerows(rows)
    tmp.replace(path)


def write_splits(out_dir: Path, cfg: ListOpsConfig, task: str = "basic", workers: int = 1) -> dict[str, Path]:
    splits = generate(cfg, workers=workers)
    paths = {}
    for split, rows in splits.items():
        paths[split] = out_dir / f"{task}_{split}.tsv"
        write_tsv(paths[split], rows)
    return paths


def tokenize(source: str) -> list[int]:
    """LRA preprocessing: ']' becomes 'X', parentheses are dropped, then whitespace split."""
    tokens = source.replace("]", "X").replace("(", " ").replace(")", " ").split()
    return [TOKEN_ID.get(tok, TOKEN_ID["<unk>"]) for tok in tokens]


def read_tsv(path: Path, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``(n, max_len)`` (right-padded with 0, truncated) and labels ``(n,)`` from an official TSV."""
    if not path.is_file():
        raise LRAError(
            f"ListOps data not found at {path}; generate it with `python -m lra.data listops --out DIR` "
            "(then pass data_dir=DIR) or point data_dir at your lra_release/lra_release folder; see README"
        )
    ids, labels = [], []
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise LRAError(f"{path}:1: expected the header 'Source<TAB>Target', found {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) != 2:
                raise LRAError(f"{path}:{line_no}: expected 2 tab-separated columns, found {len(row)}")
            source, target = row
            try:
                label = int(target)
            except ValueError:
                raise LRAError(f"{path}:{line_no}: Target {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise LRAError(f"{path}:{line_no}: Target {label} is out of range 0..9")
            tokens = tokenize(source)[:max_len]
            ids.append(tokens + [0] * (max_len - len(tokens)))
            labels.append(label)
    if not ids:
        raise LRAError(f"{path}: no examples after the header")
    return np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
