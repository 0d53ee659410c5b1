"""Aggregate ``runs.jsonl`` into the leaderboard: rows attention, columns tasks and their average.

    python report.py                       # results/runs.jsonl -> results/tables/
    python report.py --results results/demo --out results/demo/tables

Cells are ``mean ± std (n)`` of test accuracy (%) over seeds. Rows are grouped by protocol, and runs on
synthetic stand-in data are reported apart from real ones, never averaged together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from lra.results import read_rows

TASKS = ("listops", "text", "retrieval", "image", "pathfinder")
MISSING = "—"


def load_runs(results: Path) -> pd.DataFrame:
    rows = read_rows(results)
    cols = ["task", "attention", "seed", "protocol", "data", "status", "test_acc", "majority_acc"]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    return df


def leaderboard(runs: pd.DataFrame) -> pd.DataFrame:
    """One table per (protocol, data) group: mean/std/n of test accuracy in percent per attention x task."""
    ok = runs[runs["status"] == "ok"].dropna(subset=["test_acc"])
    if ok.empty:
        return pd.DataFrame()
    ok = ok.assign(acc=ok["test_acc"] * 100)
    stats = ok.groupby(["protocol", "data", "attention", "task"])["acc"].agg(["mean", "std", "count"])
    return stats.reset_index()


def format_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Wide table: attention rows, task columns (in LRA order, only tasks that have runs) and Avg."""
    tasks = [t for t in TASKS if t in set(stats["task"])] + sorted(set(stats["task"]) - set(TASKS))
    table = {}
    for attention, group in stats.groupby("attention"):
        cells, means = {}, {}
        for _, r in group.iterrows():
            std = 0.0 if pd.isna(r["std"]) else r["std"]
            cells[r["task"]] = f"{r['mean']:.2f} ± {std:.2f} ({int(r['count'])})"
            means[r["task"]] = r["mean"]
        row = {t: cells.get(t, MISSING) for t in tasks}
        # The average is only meaningful over the same task set for every row.
        row["Avg"] = f"{sum(means.values()) / len(means):.2f}" if len(means) == len(tasks) else MISSING
        table[attention] = row
    df = pd.DataFrame.from_dict(table, orient="index")
    df.index.name = "attention"
    return df


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"), help="folder with runs.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="where tables go (default: RESULTS/tables)")
    parser.add_argument("--check-majority", action="store_true",
                        help="also say, per run, whether it beat the majority-class baseline")
    args = parser.parse_args(argv)
    out = args.out or args.results / "tables"
    runs = load_runs(args.results)
    if runs.empty:
        print(f"no runs in {args.results}/runs.jsonl; run `python run.py ...` first", file=sys.stderr)
        return 1
    stats = leaderboard(runs)
    out.mkdir(parents=True, exist_ok=True)
    md_parts, csv_parts = [], []
    for (protocol, data), group in stats.groupby(["protocol", "data"]):
        table = format_table(group)
        title = f"Test accuracy (%), protocol `{protocol}`, {data} data: mean ± std (n seeds)"
        md_parts.append(f"### {title}\n\n{table.to_markdown()}\n")
        csv_parts.append(table.reset_index().assign(protocol=protocol, data=data))
    failed = runs[runs["status"] != "ok"]
    if not failed.empty:
        lines = [f"- {r.task} / {r.attention} / seed {r.seed}: {r.status}" for r in failed.itertuples()]
        md_parts.append("### Runs without a result\n\n" + "\n".join(lines) + "\n")
    markdown = "\n".join(md_parts)
    (out / "leaderboard.md").write_text(markdown)
    if csv_parts:
        pd.concat(csv_parts).to_csv(out / "leaderboard.csv", index=False)
    print(markdown)
    print(f"wrote {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}")
    if args.check_majority:
        done = runs[(runs["status"] == "ok") & runs["test_acc"].notna()]
        beat = done["test_acc"] > done["majority_acc"]
        for r, b in zip(done.itertuples(), beat, strict=True):
            verdict = "beats" if b else "DOES NOT beat"
            print(f"{r.task}/{r.attention}/seed {r.seed}: test {100 * r.test_acc:.1f}% {verdict} "
                  f"the majority class ({100 * r.majority_acc:.1f}%)")
        if not beat.all():
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
