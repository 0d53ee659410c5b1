"""Bring what a device call sent back into results/: finished runs' rows and their learning curves, benchmark rows,
throughput rows. Run it on the folder that `scripts/unpack_device.sh` filled:

    bash scripts/unpack_device.sh /work/.device/N/a results/device_logs/session_K_callN/a checkpoints/device
    python scripts/merge_device.py results/device_logs/session_K_callN/a

Why a script: done by hand each session, it is easy to append a row twice, to forget a curve, or to let a lane's
copy of the benchmark table (made before the call) overwrite rows that another lane measured meanwhile.
Rows: only `status: ok` ones on the benchmark's data (not diagnostics on other data or with another schedule:
`lra.leaderboard.diagnostic_reason`; not runs on synthetic stand-ins, which a device call makes only to time a task
whose files it lacks), each once (by run id and time). A run on the same files under another input convention or
with padding visible to attention is merged: the report lists it apart, in tables/diagnostics.md.
Benchmark rows: only those newer than the row of the same key already in results/bench/<device>.csv.
Throughput rows: appended with their source folder, once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lra.bench import _key, write_rows  # noqa: E402
from lra.leaderboard import diagnostic_reason  # noqa: E402
from lra.results import RUNS_FILE, append_csv_row, append_row, read_rows, write_csv  # noqa: E402


def merge_runs(src: Path, results: Path) -> int:
    done = {(r.get("run_id"), r.get("time")) for r in read_rows(results)}
    added = 0
    for path in sorted(src.rglob(RUNS_FILE)):
        for row in read_rows(path):
            if row.get("status") != "ok" or (row.get("run_id"), row.get("time")) in done:
                continue
            variant = (
                "synthetic stand-in data"
                if row.get("data") == "synthetic"
                else diagnostic_reason(row, conventions=False)
            )
            if variant:  # a diagnostic on other data: its curve and row stay in the call's folder
                print(f"not merged: {row.get('run_id')} ({variant})")
                continue
            curve = row.get("curve")
            if curve and (path.parent / curve).exists():  # atomically, as run.py writes it
                write_csv(results / curve, pd.read_csv(path.parent / curve))
            append_row(results, row)
            done.add((row.get("run_id"), row.get("time")))
            added += 1
    return added


def merge_bench(src: Path, results: Path) -> int:
    added = 0
    for path in sorted(src.rglob("bench/*.csv")):
        target = results / "bench" / path.name
        known = {}
        if target.exists():
            known = {_key(r): str(r.get("time")) for _, r in pd.read_csv(target).iterrows()}
        fresh = [
            r
            for _, r in pd.read_csv(path).iterrows()
            if r["status"] != "skipped" and str(r.get("time")) > known.get(_key(r), "")
        ]
        if fresh:
            write_rows(target, [r.to_dict() for r in fresh])
            added += len(fresh)
    return added


def merge_throughput(src: Path, results: Path) -> int:
    target = results / "throughput.csv"

    def key(row) -> tuple:  # one measurement: its setting, its overrides and what it measured
        return row["setting"], row["overrides"], round(float(row["steady_steps_per_sec"]), 6)

    seen = {key(r) for _, r in pd.read_csv(target).iterrows()} if target.exists() else set()
    added = 0
    for path in sorted(src.rglob("throughput.csv")):
        folder = path.parent.resolve()
        source = str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder)
        for _, row in pd.read_csv(path).iterrows():
            if key(row) in seen:
                continue
            append_csv_row(target, {**row.to_dict(), "source": source})
            seen.add(key(row))
            added += 1
    return added


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="an unpacked device call folder")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    args = p.parse_args(argv)
    if not args.src.is_dir():
        print(f"{args.src}: no such folder (unpack the call first: scripts/unpack_device.sh)", file=sys.stderr)
        return 2
    runs = merge_runs(args.src, args.results)
    bench = merge_bench(args.src, args.results)
    tput = merge_throughput(args.src, args.results)
    print(f"{args.src}: {runs} run rows, {bench} benchmark rows, {tput} throughput rows merged into {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
