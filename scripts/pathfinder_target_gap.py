"""How close do the two target snakes of a Pathfinder image come? Per generator variant, on CPU (issue 8).

Why: our standard images keep the two marked snakes apart (``target_separation``), the reference's do not, and on
images whose targets may touch softmax stayed at chance (results/diagnostics/pathfinder/README.md, sessions
11-12). The gap is measured between the paddles' centre lines (the generator's own segments, 9 points per paddle),
so a gap below ~2 px means painted paddles that touch.

    python scripts/pathfinder_target_gap.py --images 1000 \
        --variant standard= --variant nosep=target_separation=0 \
        --variant nosep-nobacktrack=target_separation=0,max_backtracks=0
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lra.data.pathfinder import PathfinderConfig, generate_batch  # noqa: E402


def gap(a: np.ndarray, b: np.ndarray, points: int = 9) -> float:
    """Smallest distance between two snakes given as (paddles, 4) segments y0, x0, y1, x1."""
    t = np.linspace(0.0, 1.0, points)[None, :, None]
    pa = (a[:, None, :2] * (1 - t) + a[:, None, 2:] * t).reshape(-1, 2)
    pb = (b[:, None, :2] * (1 - t) + b[:, None, 2:] * t).reshape(-1, 2)
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min())


def parse_variant(text: str) -> tuple[str, dict[str, float | int]]:
    name, _, sets = text.partition("=")
    fields = {f.name: f.type for f in dataclasses.fields(PathfinderConfig)}
    over: dict[str, float | int] = {}
    for item in filter(None, sets.split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--variant {text!r}: {key!r} is not a PathfinderConfig field")
        over[key] = int(value) if value.lstrip("-").isdigit() else float(value)
    return name, over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--variant", action="append", default=[], help="NAME=FIELD=V,FIELD=V (NAME= for the default)")
    args = ap.parse_args()
    base = PathfinderConfig.lra(args.resolution)
    for name, over in map(parse_variant, args.variant or ["standard="]):
        cfg = dataclasses.replace(base, **over)
        start = time.time()
        samples = [s for b in range(-(-args.images // 250)) for s in generate_batch(cfg, 250, 7, b, truth=True)]
        d = np.array([gap(*s.segments[:2]) for s in samples[: args.images]])
        shares = ", ".join(f"<{k} px {np.mean(d < k) * 100:.1f}%" for k in (2, 3, 4))
        print(f"{name}: {len(d)} images in {time.time() - start:.1f} s, median gap {np.median(d):.2f} px, {shares}")


if __name__ == "__main__":
    main()
