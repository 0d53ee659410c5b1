"""Figures for the report: accuracy vs speed (LRA Figure 3), time and memory vs length, accuracy per seed,
learning curves.

Each figure is written as PNG and PDF. Functions return the paths they wrote (none when there is no data).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lra.leaderboard import TASKS  # noqa: E402


def _save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})  # same bytes on a re-run
    plt.close(fig)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def accuracy_vs_speed(runs: pd.DataFrame, bench: pd.DataFrame, out: Path, length: int = 4096) -> list[Path]:
    """y: mean test accuracy over the tasks run; x: training speed relative to softmax (benchmark at ``length``
    when there is one, else tokens/s of the runs); bubble area: peak memory. One figure per protocol.

    Every point averages the same tasks (softmax's, else all run): an attention that has not run one of them is
    left out and named under the plot, not averaged over fewer tasks (nystromformer's ListOps-only 36.4 once stood
    beside others' ListOps + Pathfinder means)."""
    paths = []
    ok = runs[(runs["status"] == "ok") & (runs["data"] == "real") & runs["test_acc"].notna()]
    for protocol, group in ok.groupby("protocol"):
        per_task = group.groupby(["attention", "task"])["test_acc"].mean().unstack()
        if "softmax" in per_task.index:
            per_task = per_task.loc[:, per_task.loc["softmax"].notna()]
        complete = per_task.notna().all(axis=1)
        acc = per_task[complete].mean(axis=1) * 100
        bench_n = bench[(bench["mode"] == "train") & (bench["seq_len"] == length) & (bench["status"] == "ok")]
        if not bench_n.empty and "softmax" in set(bench_n["attention"]):
            dev = bench_n[bench_n["device"] == bench_n["device"].iloc[0]].set_index("attention")
            speed = dev["ms"].loc["softmax"] / dev["ms"]
            memory = dev["peak_mem_mb"]
            xlabel = f"speed vs softmax at N={length} ({dev['device'].iloc[0]} benchmark)"
        else:
            tput = group.groupby("attention")[["tokens_per_sec", "peak_mem_mb"]].mean()
            ref = tput["tokens_per_sec"].get("softmax", tput["tokens_per_sec"].max())
            speed, memory = tput["tokens_per_sec"] / ref, tput["peak_mem_mb"]
            xlabel = "training tokens/s vs softmax (from the runs)"
        names = [a for a in acc.index if a in speed.index]
        incomplete = [a for a in per_task.index[~complete] if a in speed.index]
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(6, 4.5))
        mem = np.array([float(memory.get(a, np.nan)) for a in names])
        sizes = 2000 * mem / np.nanmax(mem) if np.isfinite(mem).any() else np.full(len(names), 200.0)
        ax.scatter([speed[a] for a in names], [acc[a] for a in names], s=sizes, alpha=0.5)
        for a in names:
            ax.annotate(a, (speed[a], acc[a]), ha="center", va="center", fontsize=8)
        ax.margins(0.25)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mean test accuracy (%) over {', '.join(t for t in TASKS if t in per_task.columns)}")
        ax.set_title(f"Accuracy vs speed, protocol {protocol} (bubble area = peak memory)")
        ax.grid(alpha=0.3)
        if incomplete:
            ax.text(
                0,
                -0.16,
                f"not on every task yet, left out: {', '.join(incomplete)}",
                transform=ax.transAxes,
                fontsize=7,
                va="top",
            )
        paths += _save(fig, out, f"accuracy_vs_speed_{_slug(str(protocol))}")
    return paths


def scaling(bench: pd.DataFrame, out: Path, mode: str = "train") -> list[Path]:
    """Time and peak memory against sequence length, log-log, one line per attention, per device."""
    paths = []
    for device, dev in bench[(bench["mode"] == mode) & (bench["status"] == "ok")].groupby("device"):
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.2))
        markers = "os^vD<>pPX*hH8d"
        for i, (attention, rows) in enumerate(dev.groupby("attention")):
            rows = rows.sort_values("seq_len")
            style = dict(marker=markers[i % len(markers)], color=plt.cm.tab20(i % 20), label=attention)
            ax_t.plot(rows["seq_len"], rows["ms"], **style)
            ax_m.plot(rows["seq_len"], rows["peak_mem_mb"] / 1024, **style)
        for ax, label in ((ax_t, "ms per step"), (ax_m, "peak memory (GB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, which="both")
        ax_m.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        what = "forward + backward" if mode == "train" else "forward"
        fig.suptitle(f"{what} vs length on {device}")
        paths += _save(fig, out, f"scaling_{mode}_{_slug(str(device))}")
    return paths


def seeds(runs: pd.DataFrame, out: Path) -> list[Path]:
    """Test accuracy of every seed, one panel per task: the spread behind each mean ± std."""
    ok = runs[(runs["status"] == "ok") & (runs["data"] == "real") & runs["test_acc"].notna()]
    paths = []
    for protocol, group in ok.groupby("protocol"):
        tasks = [t for t in (*TASKS, "pathx") if t in set(group["task"])]
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.8), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            rows = group[group["task"] == task]
            names = sorted(rows["attention"].unique())
            rng = np.random.default_rng(0)
            for i, a in enumerate(names):
                acc = rows[rows["attention"] == a]["test_acc"].to_numpy() * 100
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(acc)), acc, s=18)
                ax.hlines(acc.mean(), i - 0.25, i + 0.25, color="k", lw=1)
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            ax.set_title(task)
            ax.grid(alpha=0.3, axis="y")
        axes[0][0].set_ylabel("test accuracy (%)")
        fig.suptitle(f"Accuracy per seed, protocol {protocol}")
        paths += _save(fig, out, f"seeds_{_slug(str(protocol))}")
    return paths


LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 3)))


def line_styles(labels) -> dict[str, tuple[str, object]]:
    """(colour, line style) per label: one colour per attention, a line style per variant of it ("nalaformer
    (rope=false)" is dashed nalaformer), so variants read as their attention's relatives and no two labels look
    alike (ten colours alone repeat once there are more than ten labels, as on Pathfinder)."""
    bases = sorted({str(label).split(" (")[0] for label in labels})
    palette = plt.cm.tab10 if len(bases) <= 10 else plt.cm.tab20
    styles = {}
    for i, base in enumerate(bases):
        variants = sorted(label for label in labels if str(label).split(" (")[0] == base)  # the plain one first
        for j, label in enumerate(variants):
            styles[label] = (palette(i % palette.N), LINE_STYLES[j % len(LINE_STYLES)])
    return styles


def _thousands(x: float, _pos: int) -> str:
    return f"{x / 1000:g}K" if abs(x) >= 1000 else f"{x:g}"


def curves(runs: pd.DataFrame, results: Path, out: Path) -> list[Path]:
    """Validation accuracy (top) and loss (bottom) against training step, one line per run that left a learning
    curve (``results/curves/<run_id>.csv``, see ``lra.callbacks.LearningCurve``), one column per task, grey dashes
    at the majority class: a final accuracy cannot tell a run that never left chance from one that peaked and
    fell, and a validation loss that climbs while the accuracy stays at chance is a run memorising its data."""
    if "curve" not in runs:
        return []
    ok = runs[(runs["status"] == "ok") & (runs["data"] == "real") & runs["curve"].notna()]
    paths = []
    for protocol, group in ok.groupby("protocol"):
        tasks = [t for t in (*TASKS, "pathx") if t in set(group["task"])]
        fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.6), squeeze=False, sharex="col")
        styles = line_styles(group["attention"].unique())
        legend = {}  # label -> line, over all tasks: one legend beside the panels, not one over each
        for ax, loss_ax, task in zip(axes[0], axes[1], tasks, strict=True):
            for row in group[group["task"] == task].itertuples():
                path = Path(results) / row.curve
                if not path.exists():
                    continue
                curve = pd.read_csv(path)
                colour, ls = styles[row.attention]
                line = ax.plot(curve["step"], curve["val/acc"] * 100, color=colour, ls=ls, lw=1, label=row.attention)
                legend.setdefault(row.attention, line[0])
                if "val/loss" in curve:
                    loss_ax.plot(curve["step"], curve["val/loss"], color=colour, ls=ls, lw=1)
                if pd.notna(row.majority_acc):
                    ax.axhline(row.majority_acc * 100, color="grey", ls="--", lw=0.8)
            ax.set_title(task)
            loss_ax.set_xlabel("training step")
            loss_ax.xaxis.set_major_formatter(plt.FuncFormatter(_thousands))
            for a in (ax, loss_ax):
                a.grid(alpha=0.3)
        if legend:
            labels = sorted(legend)
            fig.legend([legend[k] for k in labels], labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[0][0].set_ylabel("validation accuracy (%)")
        axes[1][0].set_ylabel("validation loss")
        fig.suptitle(f"Learning curves, protocol {protocol} (grey: majority class)")
        paths += _save(fig, out, f"curves_{_slug(str(protocol))}")
    return paths
