"""Can Pathfinder images be told apart at all? A small CNN on a difficulty folder, read and split as run.py does.

Why: when a transformer stays at chance, this separates "the images are ambiguous or the labels wrong" from "this
model does not learn them". In session 10 it reached 99.5% validation on our easy images of generator version 1
(all distractors placed) after 5 epochs of 24,000 training images, where the LRA-lite transformer stayed at 50%
for 40,000 steps (results/diagnostics/pathfinder/README.md). Runs on CPU (~6 min an epoch on 2 cores at 24K).

    python -m lra.data pathfinder --out /tmp/pf --difficulty easy --num-images 30000
    python scripts/pathfinder_cnn_probe.py /tmp/pf/pathfinder32/curv_baseline --epochs 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lra.data.pathfinder import read_pathfinder


def block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU())


def cnn() -> nn.Sequential:
    """Eight 3x3 convolutions, two of them strided: a receptive field (~33 px) that spans a 32 px image."""
    widths = [(1, 32, 1), (32, 32, 1), (32, 64, 1), (64, 64, 1), (64, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
    return nn.Sequential(*(block(*w) for w in widths), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 2))


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(a).argmax(1) == b).sum()) for a, b in zip(x.split(1000), y.split(1000), strict=True))
    return hits / len(y)


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a difficulty folder, e.g. DIR/pathfinder32/curv_baseline")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    splits = read_pathfinder(args.folder, workers=1, dtype=np.uint8)  # run.py's reader and 80/10/10 split
    side = int(np.sqrt(splits["train"][0].shape[1]))
    x = {k: torch.from_numpy(ids).float().view(-1, 1, side, side) / 255 for k, (ids, _) in splits.items()}
    y = {k: torch.from_numpy(labels) for k, (_, labels) in splits.items()}
    net = cnn()
    opt = torch.optim.AdamW(net.parameters(), args.lr)
    result: dict[str, float] = {}
    for epoch in range(args.epochs):
        net.train()
        start, order = time.time(), torch.randperm(len(y["train"]))
        for i in range(0, len(order), args.batch_size):
            b = order[i : i + args.batch_size]
            loss = nn.functional.cross_entropy(net(x["train"][b]), y["train"][b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        result = {"train": accuracy(net, x["train"], y["train"]), "val": accuracy(net, x["val"], y["val"])}
        print(f"epoch {epoch} train {result['train']:.3f} val {result['val']:.3f} ({time.time() - start:.0f} s)")
    return result


if __name__ == "__main__":
    main()
