"""Why does a Pathfinder run sit at chance? Two checks on a checkpoint, on CPU (issue 8, session 9).

1. Memorisation: accuracy on a sample of the training split against the validation split, on the same data the
   run trained on (regenerate it with the same seed: `python -m lra.data pathfinder --out DIR`; split seed 42 and
   pixel 0 as padding, the defaults). A run that learned the rule scores alike on both; one that memorised scores
   high on training images only.
2. Spatial structure of the learned position embeddings: mean cosine similarity of horizontally and vertically
   adjacent pixels' embeddings against random pairs. A model that uses the 2-D layout learns similar embeddings
   for neighbours (as vision transformers do); ~0 for all three means the positions carry no learned layout.

    python scripts/pathfinder_diagnose.py checkpoints/device/ckpt/<run_id>/last.ckpt \
        --data /tmp/lra_data/pathfinder32/curv_contour_length_14 --examples 1536
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def position_structure(pos: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Mean cosine similarity of the (centred) position embeddings of horizontal and vertical neighbours in the
    square image, and of random pairs (the baseline)."""
    n = pos.shape[0]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} positions do not make a square image")
    unit = torch.nn.functional.normalize(pos - pos.mean(0), dim=-1)
    grid = unit.view(side, side, -1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return {
        "horizontal": float((grid[:, 1:] * grid[:, :-1]).sum(-1).mean()),
        "vertical": float((grid[1:] * grid[:-1]).sum(-1).mean()),
        "random": float((unit[perm] * unit).sum(-1).mean()),
    }


def plot_curves(folder: Path, out: Path) -> None:
    """Validation (solid) and training-batch (dotted) accuracy of every curve CSV in ``folder``, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, path in enumerate(sorted(folder.glob("*.csv"))):
        curve = pd.read_csv(path)
        ax.plot(curve["step"], curve["val/acc"] * 100, color=f"C{i % 10}", lw=1.2, label=path.stem)
        if "train/acc" in curve:
            ax.plot(curve["step"], curve["train/acc"] * 100, color=f"C{i % 10}", lw=0.6, ls=":")
    ax.axhline(50, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (%): validation solid, training batch dotted")
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=130, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, nargs="?")
    p.add_argument("--curves", type=Path, help="plot the curve CSVs of this folder to <folder>/curves.png instead")
    p.add_argument("--data", type=Path, help="the difficulty folder the run trained on (skip to check positions only)")
    p.add_argument("--examples", type=int, default=1536, help="per split")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if args.curves is not None:
        plot_curves(args.curves, args.curves / "curves.png")
        return 0
    if args.checkpoint is None:
        p.error("give a checkpoint, or --curves FOLDER")
    from lra.ablate import evaluate, load_classifier

    model, _ = load_classifier(args.checkpoint)
    s = position_structure(model.model.encoder.pos.detach().float())
    print(
        f"position embeddings: cosine of neighbours horizontal {s['horizontal']:.3f}, vertical {s['vertical']:.3f}, "
        f"random pairs {s['random']:.3f}"
    )
    if args.data is None:
        return 0
    from lra.data.pathfinder import read_pathfinder

    task = model.hparams["net"]
    splits = read_pathfinder(args.data, task["max_len"], split_seed=42, workers=args.workers)
    rng = np.random.default_rng(0)
    for name in ("train", "val"):
        ids, labels = splits[name]
        pick = rng.choice(len(labels), min(args.examples, len(labels)), replace=False)
        batches = (
            (torch.from_numpy(ids[pick[i : i + 256]]).long(), torch.from_numpy(labels[pick[i : i + 256]]))
            for i in range(0, len(pick), 256)
        )
        print(f"{name}: accuracy {evaluate(model, batches)[0]:.4f} on {len(pick)} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
