"""``python -m lra.data <task> --out DIR``: make a task's data ready under the data root DIR.

listops, pathfinder: generate with our generators (the LRA algorithms), in the lra_release layout.
text, retrieval, image: check the files under DIR (or unpack/copy them there with ``--from``), tokenise them
into the cache, and print a summary; when they are missing, print which files are needed and how to get them.
Then train with ``python run.py task=<task> data_dir=DIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from lra import LRAError
from lra.data import listops, pathfinder
from lra.data.tasks import HOW_TO_GET, load_splits

CONF = Path(__file__).resolve().parents[2] / "conf" / "task"
PREPARED = ("text", "retrieval", "image")


def task_config(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)


def unpack(source: Path, out: Path) -> None:
    """Put a downloaded archive or folder under the data root: archives are extracted as they are laid out
    (aclImdb/, cifar-10-batches-py/, lra_release/...), folders are copied."""
    if not source.exists():
        raise LRAError(f"--from {source}: no such file or folder")
    out.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, out / source.name, dirs_exist_ok=True)
        return
    try:
        with tarfile.open(source) as tar:
            tar.extractall(out, filter="data")
    except tarfile.TarError as err:
        raise LRAError(f"--from {source}: not a readable tar archive ({err})") from None
    release = out / "lra_release" / "lra_release"
    if release.is_dir():  # the LRA archive nests everything under lra_release/lra_release/
        for item in release.iterdir():
            target = out / item.name
            if not target.exists():
                item.rename(target)


def prepare(task: str, out: Path, source: Path | None) -> None:
    if source is not None:
        unpack(source, out)
    cfg = task_config(task)
    folder = out / cfg["path"]
    if not folder.exists():
        raise LRAError(
            f"{task}: nothing at {folder}. {HOW_TO_GET[task][0].upper()}{HOW_TO_GET[task][1:]}; "
            f"or pass the downloaded archive with --from FILE"
        )
    start = time.perf_counter()
    splits = load_splits(cfg, out, cache_dir=out / ".cache")
    took = time.perf_counter() - start
    sizes = ", ".join(f"{s} {len(splits[s].labels)}" for s in ("train", "val", "test"))
    state = "loaded from cache" if splits.from_cache else "tokenised and cached"
    print(
        f"{task}: {sizes} examples from {folder} ({state} in {took:.1f}s); "
        f"train with: python run.py task={task} data_dir={out}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lra.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="task", required=True)
    lo = sub.add_parser("listops", help="generate ListOps with the LRA algorithm into OUT/listops-1000/")
    d = listops.ListOpsConfig()
    lo.add_argument("--out", type=Path, required=True, help="data root (pass it to run.py as data_dir=)")
    for name in ("num_train", "num_val", "num_test", "max_depth", "max_args", "min_length", "max_length", "seed"):
        lo.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name))
    lo.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    pathfinder.add_arguments(sub.add_parser("pathfinder", help="generate Pathfinder / Path-X images"))
    for task in PREPARED:
        p = sub.add_parser(task, help=f"check, unpack (--from) and tokenise the {task} files under OUT")
        p.add_argument("--out", type=Path, required=True, help="data root (pass it to run.py as data_dir=)")
        p.add_argument(
            "--from",
            dest="source",
            type=Path,
            default=None,
            help="a downloaded archive (.tar.gz) or folder to put under OUT first",
        )
    args = parser.parse_args(argv)
    try:
        if args.task == "listops":
            cfg = listops.ListOpsConfig(**{k: v for k, v in vars(args).items() if k not in {"task", "out", "workers"}})
            start = time.perf_counter()
            paths = listops.write_splits(args.out / "listops-1000", cfg, workers=args.workers)
            took = time.perf_counter() - start
            total = cfg.num_train + cfg.num_val + cfg.num_test
            print(f"wrote {total} ListOps examples in {took:.1f}s: " + ", ".join(str(p) for p in paths.values()))
        elif args.task == "pathfinder":
            pathfinder.run_from_args(args)
        else:
            prepare(args.task, args.out, args.source)
    except LRAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
