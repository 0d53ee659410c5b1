"""Runs that are cut and waiting to resume: one line per ``<checkpoint_dir>/<run_id>/last.ckpt``.

    python -m lra.progress                      # checkpoints/
    python -m lra.progress checkpoints/device/ckpt

A finished run deletes its ``last.ckpt`` (run.py), so what is listed here is exactly what the same command would
continue: a campaign spread over several GPU sessions (Pathfinder's 62,400-step runs) reads its state here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from lra import LRAError, load_checkpoint


def in_progress(root: Path) -> pd.DataFrame:
    """run_id, step, total_steps, done (%), best_val_acc (%), saved (local time) of every cut run under ``root``."""
    rows: list[dict[str, Any]] = []
    for last in sorted(Path(root).glob("*/last.ckpt")):
        try:
            ckpt = load_checkpoint(last)
        except LRAError as err:  # one bad file must not hide the other runs
            print(f"warning: {err}", file=sys.stderr)
            continue
        total = ckpt.get("hyper_parameters", {}).get("total_steps")
        best = [
            float(cb["best_model_score"])
            for key, cb in ckpt.get("callbacks", {}).items()
            if "val/acc" in key and cb.get("best_model_score") is not None
        ]
        rows.append(
            {
                "run_id": last.parent.name,
                "step": ckpt["global_step"],
                "total_steps": total,
                "done": round(100 * ckpt["global_step"] / total, 1) if total else None,
                "best_val_acc": round(100 * best[0], 2) if best else None,
                "saved": time.strftime("%Y-%m-%d %H:%M", time.localtime(last.stat().st_mtime)),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "step", "total_steps", "done", "best_val_acc", "saved"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", nargs="?", type=Path, default=Path("checkpoints"), help="a checkpoint_dir")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        print(f"{args.root}: no such folder (pass the runs' checkpoint_dir)", file=sys.stderr)
        return 2
    table = in_progress(args.root)
    print(table.to_string(index=False) if len(table) else f"no cut runs under {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
