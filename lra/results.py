"""The results store: one JSON object per line in ``runs.jsonl``.

Appends are atomic: each row is one ``write`` on a file opened with ``O_APPEND`` while holding an exclusive
``flock``, then ``fsync``-ed, so rows from runs that finish at once never interleave and a crash leaves earlier
rows intact. Readers skip a corrupt line with a warning that names it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

RUNS_FILE = "runs.jsonl"

# Fields every row carries (tests check the schema against this list).
REQUIRED_FIELDS = (
    "run_id",
    "time",
    "status",
    "task",
    "attention",
    "seed",
    "protocol",
    "data",
    "data_source",
    "test_acc",
    "best_val_acc",
    "majority_acc",
    "steps",
    "train_seconds",
    "steps_per_sec",
    "tokens_per_sec",
    "peak_mem_mb",
    "peak_mem_kind",
    "params",
    "device",
    "torch",
    "git_commit",
    "overrides",
    "config",
)


def append_row(results_dir: str | Path, row: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        raise ValueError(f"result row lacks {', '.join(missing)}")
    path = Path(results_dir) / RUNS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (row_json(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return path


def append_csv_row(path: str | Path, row: dict[str, Any]) -> Path:
    """Add ``row`` to a small CSV table whose columns may differ from the row's (a column added since the file
    was started): the union of columns, the file rewritten atomically. A plain append would shift the values of
    every later row under the wrong header."""
    import pandas as pd

    path = Path(path)
    table = pd.DataFrame([row])
    if path.exists():
        table = pd.concat([pd.read_csv(path), table], ignore_index=True)
    return write_csv(path, table)


def write_csv(path: str | Path, table) -> Path:
    """Write a pandas table to ``path`` atomically (:func:`write_text`)."""
    return write_text(path, table.to_csv(index=False))


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def row_json(row: dict[str, Any]) -> str:
    """One row as strict JSON, as runs.jsonl holds it."""
    return json.dumps(_finite(row), sort_keys=True, default=str, allow_nan=False)


def _finite(value: Any) -> Any:
    """NaN and infinities become null: strict JSON, and a missing number reads as missing."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / RUNS_FILE
    if not path.exists():
        return []
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            warnings.warn(f"{path}:{line_no}: skipped a corrupt line ({err.msg})", stacklevel=2)
            continue
        if not isinstance(row, dict):
            warnings.warn(f"{path}:{line_no}: skipped a line that is not a JSON object", stacklevel=2)
            continue
        rows.append(row)
    return rows


_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """HEAD (with -dirty), or $LRA_GIT_COMMIT where the tree was copied without .git (e.g. to a GPU machine)."""
    if os.environ.get("LRA_GIT_COMMIT"):
        return os.environ["LRA_GIT_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=_ROOT, capture_output=True, text=True, timeout=5
        )
        sha = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("-dirty" if dirty else "")
