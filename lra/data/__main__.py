"""``python -m lra.data <task> --out DIR``: generate (ListOps) or explain how to get a task's data."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lra import LRAError
from lra.data import listops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lra.data", description=__doc__)
    sub = parser.add_subparsers(dest="task", required=True)
    lo = sub.add_parser("listops", help="generate ListOps with the LRA algorithm into DIR/listops-1000/")
    d = listops.ListOpsConfig()
    lo.add_argument("--out", type=Path, required=True, help="data root (pass it to run.py as data_dir=)")
    for name in ("num_train", "num_val", "num_test", "max_depth", "max_args", "min_length", "max_length", "seed"):
        lo.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    args = parser.parse_args(argv)
    try:
        if args.task == "listops":
            cfg = listops.ListOpsConfig(**{k: v for k, v in vars(args).items() if k not in {"task", "out"}})
            start = time.perf_counter()
            paths = listops.write_splits(args.out / "listops-1000", cfg)
            took = time.perf_counter() - start
            total = cfg.num_train + cfg.num_val + cfg.num_test
            print(f"wrote {total} ListOps examples in {took:.1f}s: " + ", ".join(str(p) for p in paths.values()))
    except LRAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
