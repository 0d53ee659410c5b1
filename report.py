"""The report: our numbers beside the published LRA tables, the efficiency table, and figures.

    python report.py                                   # results/ -> results/tables/, results/figures/
    python report.py --protocol lra_lite --task listops,pathfinder --attention softmax,nalaformer
    python report.py --results results/demo --check-majority

Inputs: run rows (``results/runs.jsonl``), published tables (``results/published/*.csv``) and benchmark rows
(``results/bench/*.csv``). Outputs: ``leaderboard.{md,csv,tex}`` and ``efficiency.md`` under ``--tables``,
PNG + PDF figures under ``--figures``. Runs on synthetic stand-in data get tables of their own, never averaged
with real ones; a corrupt line in runs.jsonl is skipped with a warning naming it.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from lra import LRAError, figures
from lra.leaderboard import (
    board_latex,
    board_long,
    board_markdown,
    build_boards,
    curve_summary,
    curve_summary_markdown,
    diagnostics_markdown,
    efficiency_markdown,
    load_bench,
    load_diagnostics,
    load_published,
    load_runs,
)

ROOT = Path(__file__).resolve().parent


def _csv_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def filter_rows(df: pd.DataFrame, **allowed: list[str] | None) -> pd.DataFrame:
    for column, values in allowed.items():
        if values and column in df.columns:
            df = df[df[column].astype(str).isin(values)]
    return df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "results", help="folder with runs.jsonl")
    p.add_argument("--published", type=Path, default=ROOT / "results" / "published")
    p.add_argument("--bench", type=Path, default=None, help="folder of benchmark CSVs (default: RESULTS/bench)")
    p.add_argument("--tables", "--out", dest="tables", type=Path, default=None, help="default: RESULTS/tables")
    p.add_argument("--figures", type=Path, default=None, help="default: RESULTS/figures")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--task", help="comma-separated tasks to keep")
    p.add_argument("--attention", help="comma-separated attentions to keep")
    p.add_argument("--protocol", help="comma-separated protocols to keep (lra_lite, lra_original, ...)")
    p.add_argument("--device", help="comma-separated devices to keep (as recorded, e.g. 'NVIDIA H200', cpu)")
    p.add_argument(
        "--check-majority",
        action="store_true",
        help="say per run whether it beat the majority class; exit 1 if one did not",
    )
    args = p.parse_args(argv)
    tables = args.tables or args.results / "tables"
    figs = args.figures or args.results / "figures"
    keep = dict(
        task=_csv_list(args.task),
        attention=_csv_list(args.attention),
        protocol=_csv_list(args.protocol),
        device=_csv_list(args.device),
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_runs = load_runs(args.results)
        runs = filter_rows(all_runs, **keep)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    bench = filter_rows(
        load_bench(args.bench or args.results / "bench"), attention=keep["attention"], device=keep["device"]
    )
    if runs.empty:
        for key, wanted in keep.items():  # a typo in a filter (--task lisops) says so, with what there is
            present = sorted(set(all_runs[key].dropna().astype(str))) if key in all_runs else []
            if wanted and present and not set(wanted) & set(present):
                print(
                    f"--{key} {','.join(wanted)} matches no run; the runs have: {', '.join(present)}", file=sys.stderr
                )
    if runs.empty and bench.empty:
        print(f"no runs in {args.results}/runs.jsonl (after filters); run `python run.py ...` first", file=sys.stderr)
        return 1
    if runs.empty:
        print(f"no runs match in {args.results}/runs.jsonl; only the benchmark table is written", file=sys.stderr)
    if not args.published.is_dir():
        print(f"warning: {args.published}: no such folder; no published numbers beside ours", file=sys.stderr)
    tables.mkdir(parents=True, exist_ok=True)
    boards = build_boards(runs, load_published(args.published)) if not runs.empty else []
    markdown = "\n".join(board_markdown(b) for b in boards)
    (tables / "leaderboard.md").write_text(markdown)
    (tables / "leaderboard.tex").write_text("\n".join(board_latex(b) for b in boards))
    if boards:
        pd.concat([board_long(b) for b in boards]).to_csv(tables / "leaderboard.csv", index=False)
    print(markdown)
    written = [tables / "leaderboard.md", tables / "leaderboard.csv", tables / "leaderboard.tex"]
    diagnostics = filter_rows(load_diagnostics(args.results), **keep)
    if not diagnostics.empty:  # ablations on other data or schedules: findable, apart from the published numbers
        (tables / "diagnostics.md").write_text(diagnostics_markdown(diagnostics))
        written.append(tables / "diagnostics.md")
    summary = curve_summary(runs, args.results) if not runs.empty else pd.DataFrame()
    if not summary.empty:  # when runs left chance and where their validation loss went (results/curves/)
        (tables / "curves.md").write_text(curve_summary_markdown(summary))
        written.append(tables / "curves.md")
    if not bench.empty:
        eff = "\n".join(efficiency_markdown(bench, mode) for mode in ("train", "infer"))
        (tables / "efficiency.md").write_text(eff)
        print(eff)
        written.append(tables / "efficiency.md")
    if not args.no_figures:
        written += figures.accuracy_vs_speed(runs, bench, figs) + figures.scaling(bench, figs)
        written += figures.seeds(runs, figs) + figures.curves(runs, args.results, figs)
    print("wrote " + ", ".join(str(w) for w in written if w.exists()))

    if args.check_majority:
        done = runs[(runs["status"] == "ok") & runs["test_acc"].notna()]
        beat = done["test_acc"] > done["majority_acc"]
        for r, b in zip(done.itertuples(), beat, strict=True):
            verdict = "beats" if b else "DOES NOT beat"
            print(
                f"{r.task}/{r.attention}/seed {r.seed}: test {100 * r.test_acc:.1f}% {verdict} "
                f"the majority class ({100 * r.majority_acc:.1f}%)"
            )
        if not beat.all():
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LRAError as err:  # a malformed published table, say: one line naming the file
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
