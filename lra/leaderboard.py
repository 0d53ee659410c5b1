"""Leaderboard tables from run rows and the published numbers in ``results/published/``.

Accuracy: one table per (protocol, data) group; rows are attentions, columns the LRA tasks (Path-X when run)
and their average; each cell is ``mean ± std (n)`` over seeds with the published value and the delta beside it.
Efficiency: LRA Table 2's layout (steps/s and peak memory, each relative to softmax) from benchmark rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from attention_zoo import SAME_RESULT_KEYS, default_config
from lra import LRAError
from lra.data.pathfinder import GENERATOR_VERSION
from lra.results import read_rows

TASKS = ("listops", "text", "retrieval", "image", "pathfinder")  # the LRA average is over these five
EXTRA_TASKS = ("pathx",)
MISSING = "—"
# Which published table stands beside ours, per protocol, in order of preference (results/published/*.csv).
# lra_lite is NYS's training recipe (steps, batch, lr: conf/task/*.yaml), so NYS's table comes first; Skyformer's
# (same model, but e.g. 50,000 ListOps steps instead of 5,000) and PolaFormer's fill in attentions NYS did not run.
REFERENCES = {
    "lra_lite": ("nystromformer_lra", "skyformer_table1", "polaformer_lra"),
    # Skyformer's own schedule (experiment=lra_sky); PolaFormer's table follows it (inferred, lra.md 5).
    "lra_sky": ("skyformer_table1", "polaformer_lra"),
    "lra_original": ("lra_paper_table1",),
}
RUN_COLUMNS = [
    "task",
    "attention",
    "seed",
    "protocol",
    "data",
    "status",
    "test_acc",
    "best_val_acc",
    "curve",
    "majority_acc",
    "device",
    "steps_per_sec",
    "tokens_per_sec",
    "peak_mem_mb",
    "train_seconds",
]


@lru_cache(maxsize=1)
def shipped_tasks() -> dict[str, dict]:
    """Each task's config as shipped (conf/task/<task>.yaml), the benchmark's data settings."""
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "task"
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted(conf.glob("*.yaml"))}


# What the model is shown of the same files: black pixels as padding or as tokens, which examples are held out.
INPUT_KEYS = ("mask_pixel_zero", "split_seed")


# A protocol's training schedule: (key in task.protocols.<protocol>, where the run's resolved config holds it).
SCHEDULE_KEYS = {
    "batch_size": ("task", "batch_size"),
    "lr": ("model", "optim", "lr"),
    "warmup_steps": ("model", "optim", "warmup_steps"),
    "max_steps": ("trainer", "max_steps"),
}


def override_text(key: str, value) -> str:
    """``key=value`` as one would type it on the command line (booleans lower-case, as Hydra reads them)."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def diagnostic_reason(row: dict, conventions: bool = True) -> str | None:
    """What makes a run other than the benchmark's, or None. Its data: another Pathfinder difficulty or generator
    variant, quantised pixels, black pixels as tokens or another split (``INPUT_KEYS``), padding visible to
    attention (``model.mask_attention``), a row marked ``superseded``; or its schedule: batch size, learning rate,
    warm-up or steps overridden away from its protocol's (a short probe run, ``scripts/gpu_session.sh``
    STAGES=graphs). Such a run is a diagnostic: beside the published number it would mislead. ``conventions=False``
    leaves out the input-convention and mask changes: such a run trained on the benchmark's own files, so its row
    belongs in results/ (the report lists it apart, ``tables/diagnostics.md``), unlike a run on other data."""
    config = row.get("config") or {}
    task = config.get("task") or {}
    changes = []
    schedule = (task.get("protocols") or {}).get(config.get("protocol")) or {}
    for key, where in SCHEDULE_KEYS.items():
        value = config
        for part in where:
            value = value.get(part) if isinstance(value, dict) else None
        if key in schedule and value is not None and value != schedule[key]:
            changes.append(f"{'.'.join(where)}={value} (protocol {config['protocol']}: {schedule[key]})")
    shipped = shipped_tasks().get(str(row.get("task"))) or {}
    if shipped.get("path") and task.get("path") not in (None, shipped["path"]):
        changes.append(f"task.path={task['path']}")
    for key in INPUT_KEYS if conventions else ():  # absent in rows from before the key: the shipped value
        if key in shipped and key in task and task[key] != shipped[key]:
            changes.append(override_text(f"task.{key}", task[key]))
    if conventions and (config.get("model") or {}).get("mask_attention") is False:  # padded keys seen by attention
        changes.append(override_text("model.mask_attention", False))
    if task.get("pixel_levels") is not None:
        changes.append(f"task.pixel_levels={task['pixel_levels']}")
    version = row.get("data_generator")  # absent in rows before it was recorded; None for unstamped (official) data
    if version is not None and version < GENERATOR_VERSION:
        changes.append(f"data of generator version {version}, now {GENERATOR_VERSION}")
    if row.get("superseded"):  # e.g. data of an older generator, marked by hand in runs.jsonl
        changes.append(f"superseded: {row['superseded']}")
    return ", ".join(changes) or None


# How an attention is computed, not what it computes (each path is tested against the reference): a row that set
# one of these is the same attention as the shipped config.
IMPLEMENTATION_KEYS = ("impl", *SAME_RESULT_KEYS, "eager")


def attention_label(row: dict) -> str:
    """The attention's name, plus every setting that differs from its shipped config (``conf/attention/``):
    ``nalaformer (lepe=false)``. An ablation is another model; under the bare name it would be counted as one more
    seed of the default, or replace one."""
    name = str(row.get("attention"))
    used = (row.get("config") or {}).get("attention") or {}
    if used.get("_target_"):  # a class from the user's own package: no shipped config to compare with
        return name
    default = default_config(str(used.get("name", name)))
    changed = []
    for key, value in sorted(used.items()):
        if key in IMPLEMENTATION_KEYS or key in {"name", "_target_"} or value == default.get(key):
            continue
        changed.append(override_text(key, value))
    return f"{name} ({', '.join(changed)})" if changed else name


def load_runs(path: Path) -> pd.DataFrame:
    """Run rows as a table, each attention labelled with its non-default settings (``attention_label``); rows on
    variant data are left out, with a warning that names them."""
    rows = []
    for r in read_rows(path):
        missing = [k for k in ("status", "task", "attention", "protocol") if r.get(k) is None]
        if missing:  # a row written by hand or cut by an editor: it could only make a table of its own
            warnings.warn(f"left out of the tables: {r.get('run_id')} lacks {', '.join(missing)}", stacklevel=2)
            continue
        if r.get("data") is None:  # failed before reading its data (a bad option): no table to put it in
            warnings.warn(
                f"left out of the tables: {r.get('run_id')} ({r['status']} before its data was read: "
                f"{r.get('error', 'no error recorded')})",
                stacklevel=2,
            )
            continue
        variant = diagnostic_reason(r)
        if variant:
            warnings.warn(
                f"left out of the tables: {r.get('run_id')} ({variant}), not the benchmark's data or schedule",
                stacklevel=2,
            )
            continue
        rows.append({c: r.get(c) for c in RUN_COLUMNS} | {"attention": attention_label(r)})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


DIAGNOSTIC_COLUMNS = ["run_id", "task", "attention", "seed", "protocol", "test_acc", "device", "reason"]


def load_diagnostics(path: Path) -> pd.DataFrame:
    """The rows ``load_runs`` leaves out, each with the reason: a diagnostic's result (another input convention,
    difficulty or schedule) belongs beside the tables where a reader finds it, not only in a warning."""
    rows = [
        {c: r.get(c) for c in DIAGNOSTIC_COLUMNS} | {"attention": attention_label(r), "reason": reason}
        for r in read_rows(path)
        if (reason := diagnostic_reason(r))
    ]
    return pd.DataFrame(rows, columns=DIAGNOSTIC_COLUMNS)


def diagnostics_markdown(diagnostics: pd.DataFrame) -> str:
    """One line per diagnostic run, grouped by task and attention."""
    lines = [
        "### Diagnostic runs (left out of the leaderboard: other data, input or schedule)",
        "",
        "| task | attention | seed | protocol | test | run | why left out |",
        "|:--|:--|--:|:--|--:|:--|:--|",
    ]
    for r in diagnostics.sort_values(["task", "attention", "seed", "run_id"]).itertuples():
        acc = MISSING if pd.isna(r.test_acc) else f"{100 * r.test_acc:.2f}"
        lines.append(f"| {r.task} | {r.attention} | {r.seed} | {r.protocol} | {acc} | `{r.run_id}` | {r.reason} |")
    return "\n".join(lines) + "\n"


def load_published(folder: Path) -> pd.DataFrame:
    """Long table: source, model, attention, label, protocol, task, value (NaN for FAIL), citation.

    ``label`` is what our runs of the same model are labelled (``attention_label``): the attention, plus the
    row's ``settings`` where the paper ran it configured otherwise than our shipped config (NYS's Performer: the
    relu kernel, 256 features). A published number then stands beside the runs of that model, not of another
    one of the same name."""
    frames = []
    for csv in sorted(folder.glob("*.csv")):
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        if "protocol" not in df.columns:  # efficiency tables
            continue
        lacking = [c for c in ("model", "attention", "source") if c not in df.columns]
        if lacking or not any(t in df.columns for t in (*TASKS, *EXTRA_TASKS)):
            need = ", ".join(lacking) if lacking else f"a task column ({', '.join(TASKS)})"
            raise LRAError(f"{csv}: a published table needs the column(s) {need} (see results/published/README.md)")
        settings = df["settings"] if "settings" in df.columns else pd.Series("", index=df.index)
        df["label"] = df["attention"].where(settings == "", df["attention"] + " (" + settings + ")")
        tasks = [t for t in (*TASKS, *EXTRA_TASKS) if t in df.columns]
        long = df.melt(
            id_vars=["model", "attention", "label", "protocol", "source"],
            value_vars=tasks,
            var_name="task",
            value_name="raw",
        )
        long["value"] = pd.to_numeric(long["raw"], errors="coerce")
        long["table"] = csv.stem
        frames.append(long.rename(columns={"source": "citation"}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def reference_for(published: pd.DataFrame, protocol: str, attention: str) -> pd.DataFrame:
    """The published row for this attention (its label, settings included) from the most preferred table that has
    it (empty if none)."""
    if published.empty:
        return published
    for table in REFERENCES.get(protocol, ()):
        rows = published[(published["table"] == table) & (published["label"] == attention)]
        if not rows.empty:
            first_model = rows["model"].iloc[0]
            return rows[rows["model"] == first_model]
    return published.iloc[0:0]


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    published: float | None = None
    published_raw: str = ""
    note: str = ""  # "failed (2)" etc. when no run finished
    best: bool = False

    @property
    def delta(self) -> float | None:
        if self.mean is None or self.published is None:
            return None
        return self.mean - self.published

    def ours(self) -> str:
        if self.mean is None:
            return self.note or MISSING
        # one seed has no spread to show: "± 0.00" would read as a measured zero
        spread = f" ± {self.std:.2f}" if self.n > 1 else ""
        return f"{self.mean:.2f}{spread} ({self.n})"

    def pub(self) -> str:
        return f"{self.published:.2f}" if self.published is not None else (self.published_raw or MISSING)

    def delta_text(self) -> str:
        return MISSING if self.delta is None else f"{self.delta:+.2f}"


@dataclass
class Board:
    protocol: str
    data: str
    tasks: list[str]
    cells: dict[str, dict[str, Cell]]  # attention -> task (and "avg") -> cell
    citations: list[str]
    referenced: bool  # a published table exists for this protocol: pub and delta columns are shown


def build_boards(runs: pd.DataFrame, published: pd.DataFrame) -> list[Board]:
    boards = []
    for (protocol, data), group in runs.groupby(["protocol", "data"], dropna=False, sort=True):
        ran = set(group["task"])
        referenced = protocol in REFERENCES and data == "real"
        # A protocol with published numbers shows all five LRA tasks (gaps as "—"); others show what ran.
        tasks = [t for t in TASKS if referenced or t in ran]
        tasks += [t for t in EXTRA_TASKS if t in ran] + sorted(ran - set(TASKS) - set(EXTRA_TASKS))
        cells: dict[str, dict[str, Cell]] = {}
        citations: set[str] = set()
        for attention, by_attention in group.groupby("attention", sort=True):
            ref = reference_for(published, str(protocol), str(attention)) if data == "real" else published.iloc[0:0]
            citations |= set(ref["citation"]) if not ref.empty else set()
            row: dict[str, Cell] = {}
            for task in tasks:
                cell = Cell()
                runs_t = by_attention[by_attention["task"] == task]
                ok = runs_t[(runs_t["status"] == "ok") & runs_t["test_acc"].notna()]
                # One value per seed: a seed run again (new code, a fixed bug) counts once, by its latest row.
                ok = ok.drop_duplicates(subset="seed", keep="last")
                if len(ok):
                    acc = ok["test_acc"].astype(float) * 100
                    cell.mean, cell.std, cell.n = acc.mean(), (acc.std() if len(acc) > 1 else 0.0), len(acc)
                elif len(runs_t):
                    counts = runs_t["status"].value_counts()
                    cell.note = ", ".join(f"{s} ({c})" for s, c in counts.items())
                pub = ref[ref["task"] == task] if not ref.empty else ref
                if not pub.empty:
                    value = pub["value"].iloc[0]
                    cell.published = None if pd.isna(value) else float(value)
                    cell.published_raw = str(pub["raw"].iloc[0])
                row[task] = cell
            five = [row.get(t, Cell()) for t in TASKS]
            avg = Cell()
            if all(c.mean is not None for c in five):
                avg.mean = float(np.mean([c.mean for c in five]))
                avg.std = float(np.mean([c.std for c in five]))  # mean of the per-task stds
                avg.n = min(c.n for c in five)
            if all(c.published is not None for c in five):
                avg.published = float(np.mean([c.published for c in five]))
            row["avg"] = avg
            cells[str(attention)] = row
        for col in [*tasks, "avg"]:
            means = [r[col].mean for r in cells.values() if r[col].mean is not None]
            if len(means) > 1:
                best = max(means)
                for r in cells.values():
                    r[col].best = r[col].mean is not None and math.isclose(r[col].mean, best)
        boards.append(Board(str(protocol), str(data), tasks, cells, sorted(citations), referenced))
    return boards


def _title(board: Board) -> str:
    warn = " (stand-in data: not comparable with published numbers)" if board.data != "real" else ""
    return f"Test accuracy (%), protocol `{board.protocol}`, {board.data} data{warn}"


def board_markdown(board: Board) -> str:
    cols = [*board.tasks, "avg"]
    extra = ("pub", "Δ") if board.referenced else ()
    header = ["attention"] + [h for c in cols for h in (("Avg" if c == "avg" else c), *extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
    for attention, row in board.cells.items():
        cells = [attention]
        for c in cols:
            ours = row[c].ours() if c != "avg" or row[c].mean is None else f"{row[c].mean:.2f}"
            if c == "avg" and row[c].mean is None:
                ours = MISSING
            cells.append(f"**{ours}**" if row[c].best else ours)
            if board.referenced:
                cells += [row[c].pub(), row[c].delta_text()]
        lines.append("| " + " | ".join(cells) + " |")
    out = [f"### {_title(board)}", "", *lines, ""]
    out.append(
        "Cells: mean ± std (n seeds; a seed run twice counts once, its latest row) of test accuracy; "
        "**bold** = best in column; "
        + ("pub = published value for the same protocol; Δ = ours − pub; " if board.referenced else "")
        + "— = no run or no published value; Avg over the five LRA tasks (Path-X excluded, as in the LRA "
        "paper)."
    )
    if board.citations:
        out.append("Published: " + "; ".join(board.citations) + ".")
    return "\n".join(out) + "\n"


def board_latex(board: Board) -> str:
    """A booktabs tabular: ours (mean ± std) and, where published numbers exist, the published value."""
    cols = [*board.tasks, "avg"]
    per = 2 if board.referenced else 1

    def tex(s: str) -> str:
        return s.replace("±", r"$\pm$").replace("—", "--").replace("_", r"\_")

    names = [("Avg" if c == "avg" else tex(c)) for c in cols]
    head = [rf"\multicolumn{{2}}{{c}}{{{n}}}" for n in names] if board.referenced else names
    lines = [
        r"\begin{tabular}{l" + "r" * (per * len(cols)) + "}",
        r"\toprule",
        " & ".join(["Attention", *head]) + r" \\",
    ]
    if board.referenced:
        lines.append(" & ".join([""] + ["ours", "pub"] * len(cols)) + r" \\")
    lines.append(r"\midrule")
    for attention, row in board.cells.items():
        cells = [tex(attention)]
        for c in cols:
            cell = row[c]
            if cell.mean is None:
                ours = cell.note or MISSING
            else:
                ours = f"{cell.mean:.2f}" + (f" ± {cell.std:.2f}" if c != "avg" and cell.n > 1 else "")
            cells.append(rf"\textbf{{{tex(ours)}}}" if cell.best else tex(ours))
            if board.referenced:
                cells.append(tex(cell.pub()))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return f"% {_title(board)}\n" + "\n".join(lines) + "\n"


def board_long(board: Board) -> pd.DataFrame:
    rows = []
    for attention, row in board.cells.items():
        for task, cell in row.items():
            rows.append(
                {
                    "protocol": board.protocol,
                    "data": board.data,
                    "attention": attention,
                    "task": task,
                    "mean": cell.mean,
                    "std": cell.std,
                    "n": cell.n,
                    "published": cell.published,
                    "delta": cell.delta,
                    "best": cell.best,
                    "note": cell.note,
                }
            )
    return pd.DataFrame(rows)


# --- efficiency ----------------------------------------------------------------------------------------------

BENCH_COLUMNS = [
    "device",
    "torch",
    "attention",
    "impl",
    "mode",
    "seq_len",
    "batch",
    "heads",
    "head_dim",
    "dtype",
    "ms",
    "peak_mem_mb",
    "status",
]


CHANCE_MARGIN = 0.05  # a run has left chance once validation accuracy is this far above the majority class


def curve_summary(runs: pd.DataFrame, results: Path) -> pd.DataFrame:
    """One line per run with a learning curve: when validation left chance, its best accuracy, and where the
    validation loss bottomed out and ended. On Pathfinder the seed decides whether and when a run leaves chance,
    and a run at chance that memorises shows only in its loss; these are the numbers the diagnostics cite,
    computed the same way every time."""
    lines = []
    ok = runs[(runs["status"] == "ok") & runs["curve"].notna()] if "curve" in runs else runs.iloc[0:0]
    for r in ok.drop_duplicates(subset=["protocol", "data", "task", "attention", "seed"], keep="last").itertuples():
        path = Path(results) / r.curve
        if not path.exists():
            continue
        c = pd.read_csv(path)
        above = c.loc[c["val/acc"] > (r.majority_acc or 0) + CHANCE_MARGIN, "step"]
        best = c["val/acc"].idxmax()
        loss = c.get("val/loss")
        lines.append(
            {
                "protocol": r.protocol,
                "data": r.data,
                "task": r.task,
                "attention": r.attention,
                "seed": r.seed,
                "test": 100 * r.test_acc,
                "best_val": 100 * c.at[best, "val/acc"],
                "best_val_step": int(c.at[best, "step"]),
                "left_chance_step": int(above.iloc[0]) if len(above) else None,
                "lowest_val_loss": None if loss is None else float(loss.min()),
                "lowest_val_loss_step": None if loss is None else int(c.at[loss.idxmin(), "step"]),
                "last_val_loss": None if loss is None else float(loss.iloc[-1]),
            }
        )
    if not lines:
        return pd.DataFrame()
    return pd.DataFrame(lines).sort_values(["protocol", "data", "task", "attention", "seed"], ignore_index=True)


def curve_summary_markdown(summary: pd.DataFrame) -> str:
    def num(v, fmt: str, none: str = MISSING) -> str:
        return none if v is None or pd.isna(v) else format(int(v) if fmt == "," else v, fmt)

    out = []
    for (protocol, data), group in summary.groupby(["protocol", "data"], sort=True):
        out += [
            f"### Learning curves, protocol `{protocol}`, {data} data",
            "",
            "| task | attention | seed | test | best val (step) | left chance at | lowest val loss (step) "
            "| last val loss |",
            "|:--|:--|--:|--:|--:|--:|--:|--:|",
        ]
        for r in group.itertuples():
            low = num(r.lowest_val_loss, ".3f")
            if low != MISSING:
                low += f" ({int(r.lowest_val_loss_step):,})"
            out.append(
                f"| {r.task} | {r.attention} | {r.seed} | {r.test:.2f} | {r.best_val:.2f} ({r.best_val_step:,}) | "
                f"{num(r.left_chance_step, ',', 'never')} | {low} | {num(r.last_val_loss, '.3f')} |"
            )
        out += [
            "",
            f"Left chance: the first validation more than {100 * CHANCE_MARGIN:.0f} points above the majority class. "
            "A validation loss that climbs while the accuracy stays at chance is a run memorising its training data.",
            "",
        ]
    return "\n".join(out)


def load_bench(folder: Path) -> pd.DataFrame:
    frames = [pd.read_csv(f) for f in sorted(folder.glob("*.csv"))] if folder.is_dir() else []
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=BENCH_COLUMNS)


def _length_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def efficiency_markdown(bench: pd.DataFrame, mode: str = "train") -> str:
    """Per device: steps/s (x softmax) and peak memory GB (x softmax) per attention and length; OOM as OOM."""
    out = []
    for device, dev in bench[bench["mode"] == mode].groupby("device", sort=True):
        lengths = sorted(dev["seq_len"].unique())
        base = dev[dev["attention"] == "softmax"].set_index("seq_len")
        what = "forward + backward" if mode == "train" else "forward only"
        speed_lines, mem_lines = [], []
        header = "| attention | " + " | ".join(_length_label(n) for n in lengths) + " |"
        rule = "|:--|" + "--:|" * len(lengths)
        for attention, rows in dev.groupby("attention", sort=True):
            rows = rows.set_index("seq_len")
            speed, mem = [attention], [attention]
            for n in lengths:
                if n not in rows.index:
                    speed.append(MISSING)
                    mem.append(MISSING)
                    continue
                r = rows.loc[n]
                if r["status"] != "ok":
                    speed.append(str(r["status"]).upper())
                    mem.append(str(r["status"]).upper())
                    continue
                b = base.loc[n] if n in base.index and base.loc[n]["status"] == "ok" else None
                sps = 1000.0 / r["ms"]
                speed.append(f"{sps:.1f}" + (f" ({b['ms'] / r['ms']:.1f}x)" if b is not None else ""))
                gb = r["peak_mem_mb"] / 1024
                mem.append(f"{gb:.2f}" + (f" ({r['peak_mem_mb'] / b['peak_mem_mb']:.2f}x)" if b is not None else ""))
            speed_lines.append("| " + " | ".join(speed) + " |")
            mem_lines.append("| " + " | ".join(mem) + " |")
        cfg = dev.iloc[0]
        setup = (
            f"{cfg['dtype']}, batch x heads chosen per length (see results/bench), head dim {cfg['head_dim']}, "
            f"torch {cfg['torch']}"
        )
        out += [
            f"### Speed, {what}: steps/s (× softmax) on {device}",
            "",
            header,
            rule,
            *speed_lines,
            "",
            f"### Peak memory, {what}: GB (× softmax) on {device}",
            "",
            header,
            rule,
            *mem_lines,
            "",
            f"Setup: {setup}. OOM = out of memory (a result, not a crash).",
            "",
        ]
    return "\n".join(out)
