"""report.py on fixture rows: values, published references, gaps, filters, golden Markdown, figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import report
from lra.leaderboard import load_published
from lra.results import append_row
from tests.test_results_and_report import fixture_row

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "leaderboard.md"
PUBLISHED = ROOT / "results" / "published"


def write_fixture(folder: Path) -> None:
    accs = {
        ("softmax", "listops"): [0.36, 0.38, 0.37],
        ("softmax", "image"): [0.40, 0.42],
        ("softmax", "text"): [0.6],
        ("softmax", "retrieval"): [0.8],
        ("softmax", "pathfinder"): [0.7],
        ("nalaformer", "listops"): [0.39, 0.41],
    }
    for (attention, task), values in accs.items():
        for seed, acc in enumerate(values):
            append_row(
                folder,
                fixture_row(
                    task=task,
                    attention=attention,
                    seed=seed,
                    test_acc=acc,
                    steps_per_sec=10.0,
                    tokens_per_sec=1e4 if attention == "softmax" else 3e4,
                    peak_mem_mb=500.0 if attention == "softmax" else 100.0,
                    device="cpu",
                ),
            )
    append_row(folder, fixture_row(task="image", attention="nalaformer", status="failed"))
    append_row(folder, fixture_row(task="listops", attention="performer", status="diverged", test_acc=0.1))
    append_row(folder, fixture_row(task="listops", attention="softmax", data="synthetic", test_acc=0.9))
    append_row(
        folder,
        fixture_row(task="text", attention="softmax", protocol="lra_original", test_acc=0.65, device="NVIDIA H200"),
    )


def write_bench(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for attention, ms, mem in (
        ("softmax", (10.0, 80.0, None), (100.0, 1600.0, None)),
        ("nalaformer", (5.0, 20.0, 160.0), (50.0, 200.0, 1600.0)),
    ):
        for n, t, m in zip((1024, 4096, 65536), ms, mem, strict=True):
            rows.append(
                {
                    "device": "NVIDIA H200",
                    "torch": "2.11.0",
                    "attention": attention,
                    "impl": "fast",
                    "mode": "train",
                    "seq_len": n,
                    "batch": 8,
                    "heads": 8,
                    "head_dim": 64,
                    "dtype": "bf16",
                    "ms": t,
                    "peak_mem_mb": m,
                    "status": "ok" if t else "oom",
                }
            )
    pd.DataFrame(rows).to_csv(folder / "NVIDIA_H200.csv", index=False)


@pytest.fixture
def results(tmp_path):
    write_fixture(tmp_path)
    write_bench(tmp_path / "bench")
    return tmp_path


def run_report(results: Path, *extra: str) -> int:
    return report.main(["--results", str(results), "--published", str(PUBLISHED), *extra])


def test_published_tables_state_the_averages_of_their_scores():
    for csv in sorted(PUBLISHED.glob("*.csv")):
        df = pd.read_csv(csv)
        assert df["source"].str.len().min() > 20, f"{csv.name}: every row cites its paper and table"
        if "avg" not in df.columns:
            continue
        five = df[["listops", "text", "retrieval", "image", "pathfinder"]].apply(pd.to_numeric)
        for (_, row), mean in zip(df.iterrows(), five.mean(axis=1), strict=True):
            if "mean of its five scores is" in row["source"]:  # a discrepancy in the paper, noted in the row
                assert abs(mean - row["avg"]) > 0.05
            else:
                assert abs(mean - row["avg"]) < 0.006, f"{csv.name}: {row['model']} avg {row['avg']} vs {mean:.3f}"


def test_published_references_map_to_our_attentions():
    pub = load_published(PUBLISHED)
    sky = pub[(pub["table"] == "skyformer_table1") & (pub["attention"] == "softmax")].set_index("task")
    assert sky.loc["listops", "value"] == 38.37 and sky.loc["pathfinder", "value"] == 65.26
    lra = pub[(pub["table"] == "lra_paper_table1") & (pub["attention"] == "softmax")].set_index("task")
    assert lra.loc["pathx", "raw"] == "FAIL" and pd.isna(lra.loc["pathx", "value"])


def test_leaderboard_values_published_deltas_and_gaps(results):
    assert run_report(results, "--no-figures") == 0
    csv = pd.read_csv(results / "tables" / "leaderboard.csv")
    lite = csv[(csv["protocol"] == "lra_lite") & (csv["data"] == "real")].set_index(["attention", "task"])
    assert lite.loc[("softmax", "listops"), "mean"] == pytest.approx(37.0)
    assert lite.loc[("softmax", "listops"), "std"] == pytest.approx(1.0)
    assert lite.loc[("softmax", "listops"), "n"] == 3
    assert lite.loc[("softmax", "listops"), "published"] == pytest.approx(37.10)  # NYS: the lra_lite recipe
    assert lite.loc[("softmax", "listops"), "delta"] == pytest.approx(-0.10)
    assert lite.loc[("softmax", "avg"), "mean"] == pytest.approx((37 + 60 + 80 + 41 + 70) / 5)
    assert lite.loc[("softmax", "avg"), "published"] == pytest.approx(58.766)
    assert lite.loc[("nalaformer", "listops"), "best"] and not lite.loc[("softmax", "listops"), "best"]
    assert lite.loc[("nalaformer", "image"), "note"] == "failed (1)"
    assert lite.loc[("performer", "listops"), "note"] == "diverged (1)"
    assert pd.isna(lite.loc[("nalaformer", "avg"), "mean"])
    md = (results / "tables" / "leaderboard.md").read_text()
    assert "stand-in data: not comparable" in md  # the synthetic row is reported apart
    assert "| 90.00 (1) |" in md and "± 0.00" not in md and "90.00" not in md.split("stand-in")[0]
    tex = (results / "tables" / "leaderboard.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{40.00 $\pm$ 1.41}" in tex


def test_a_seed_run_again_counts_once_by_its_latest_row(results):
    append_row(results, fixture_row(task="listops", attention="nalaformer", seed=0, test_acc=0.45))
    assert run_report(results, "--no-figures") == 0
    csv = pd.read_csv(results / "tables" / "leaderboard.csv")
    cell = csv[(csv.protocol == "lra_lite") & (csv.data == "real")].set_index(["attention", "task"])
    assert cell.loc[("nalaformer", "listops"), "n"] == 2  # seeds 0 and 1, not three rows
    assert cell.loc[("nalaformer", "listops"), "mean"] == pytest.approx(43.0)  # (45 + 41) / 2: the rerun replaced 39


def test_golden_markdown(results):
    assert run_report(results, "--no-figures", "--protocol", "lra_lite") == 0
    assert (results / "tables" / "leaderboard.md").read_text() == GOLDEN.read_text()


def test_filters(results, capsys):
    assert run_report(results, "--no-figures", "--attention", "nalaformer", "--task", "listops") == 0
    csv = pd.read_csv(results / "tables" / "leaderboard.csv")
    assert set(csv["attention"]) == {"nalaformer"}
    assert run_report(results, "--no-figures", "--device", "NVIDIA H200") == 0
    csv = pd.read_csv(results / "tables" / "leaderboard.csv")
    assert set(csv["protocol"]) == {"lra_original"}
    capsys.readouterr()
    assert run_report(results, "--no-figures", "--protocol", "nope") == 0  # the benchmark table still renders
    assert "no runs match" in capsys.readouterr().err
    assert (results / "tables" / "leaderboard.md").read_text() == ""


def test_efficiency_table_ratios_and_oom(results):
    assert run_report(results, "--no-figures") == 0
    eff = (results / "tables" / "efficiency.md").read_text()
    assert "| nalaformer | 200.0 (2.0x) | 50.0 (4.0x) | 6.2 |" in eff  # steps/s and speed-up vs softmax
    assert "| softmax | 100.0 (1.0x) | 12.5 (1.0x) | OOM |" in eff
    assert "| nalaformer | 0.05 (0.50x) | 0.20 (0.12x) | 1.56 |" in eff  # GB and memory vs softmax


def test_corrupt_line_is_skipped_with_a_warning(results, capsys):
    with (results / "runs.jsonl").open("a") as f:
        f.write("{not json\n")
    assert run_report(results, "--no-figures") == 0
    assert "runs.jsonl:15: skipped a corrupt line" in capsys.readouterr().err


def test_figures_are_written(results):
    curve = results / "curves" / "pf.csv"  # a run that left a learning curve gets the curves figure
    curve.parent.mkdir()
    pd.DataFrame({"step": [10, 20, 30], "val/acc": [0.5, 0.6, 0.7]}).to_csv(curve, index=False)
    append_row(results, fixture_row(task="pathfinder", attention="nalaformer", test_acc=0.7, curve="curves/pf.csv"))
    assert run_report(results) == 0
    figs = results / "figures"
    for stem in ("accuracy_vs_speed_lra_lite", "scaling_train_NVIDIA_H200", "seeds_lra_lite", "curves_lra_lite"):
        for ext in ("png", "pdf"):
            assert (figs / f"{stem}.{ext}").stat().st_size > 1000, stem


def test_runs_on_variant_data_stay_out_of_the_tables(results, capsys):
    """An easy-difficulty or quantised-pixel Pathfinder run is a diagnostic: beside the published (hard) number it
    would mislead, so the report leaves it out and says so."""
    easy = {"task": {"path": "pathfinder32/curv_baseline"}}
    quantised = {"task": {"path": "pathfinder32/curv_contour_length_14", "pixel_levels": 4}}
    standard = {"task": {"path": "pathfinder32/curv_contour_length_14", "mask_pixel_zero": True, "split_seed": 42}}
    black = {"task": {"path": "pathfinder32/curv_contour_length_14", "mask_pixel_zero": False}}  # black as tokens
    resplit = {"task": {"path": "pathfinder32/curv_contour_length_14", "split_seed": 7}}
    unmasked = {"task": {"path": "pathfinder32/curv_contour_length_14"}, "model": {"mask_attention": False}}
    for run_id, config, acc in (
        ("easy", easy, 0.99),
        ("quant", quantised, 0.98),
        ("black", black, 0.95),
        ("resplit", resplit, 0.94),
        ("unmasked", unmasked, 0.93),
        ("std", standard, 0.61),
    ):
        append_row(
            results, fixture_row(task="pathfinder", attention="linear", run_id=run_id, config=config, test_acc=acc)
        )
    # a row marked by hand as superseded, and one on data of an older generator version, even on the standard path
    old = fixture_row(task="pathfinder", attention="linear", run_id="old", config=standard, test_acc=0.97, seed=1)
    append_row(results, {**old, "superseded": "older generator"})
    v1 = fixture_row(task="pathfinder", attention="linear", run_id="v1", config=standard, test_acc=0.96, seed=2)
    append_row(results, {**v1, "data_generator": 1})
    official = fixture_row(task="pathfinder", attention="softmax", run_id="rel", config=standard, test_acc=0.7)
    append_row(results, {**official, "data_generator": None})  # unstamped files (the released archive): kept
    assert run_report(results, "--no-figures") == 0
    err = capsys.readouterr().err
    assert "left out of the tables: easy (task.path=pathfinder32/curv_baseline)" in err
    assert "left out of the tables: quant (task.pixel_levels=4)" in err
    assert "left out of the tables: black (task.mask_pixel_zero=false)" in err
    assert "left out of the tables: resplit (task.split_seed=7)" in err
    assert "left out of the tables: unmasked (model.mask_attention=false)" in err
    assert "left out of the tables: old (superseded: older generator)" in err
    assert "left out of the tables: v1 (data of generator version 1, now 2)" in err and "rel (" not in err
    md = (results / "tables" / "leaderboard.md").read_text()
    linear = next(line for line in md.splitlines() if line.startswith("| linear |"))
    assert (
        "61.00 (1)" in linear and all(f"{a}.00" not in md for a in (99, 98, 97, 96, 95, 94, 93)) and "70.00 (1)" in md
    )
    # ... and lists them apart, each with its result and why, so that a diagnostic's number is not lost
    diag = (results / "tables" / "diagnostics.md").read_text()
    assert "| pathfinder | linear | 0 | lra_lite | 95.00 | `black` | task.mask_pixel_zero=false |" in diag
    assert all(f"{a}.00" in diag for a in (99, 98, 97, 96, 95, 94, 93)) and "61.00" not in diag and "70.00" not in diag


def test_runs_off_their_protocols_schedule_stay_out_of_the_tables(results, capsys):
    """A short probe run (trainer.max_steps=200 under lra_lite) or one with another learning rate is not a
    protocol run: its row is left out, named, while a run on the protocol's schedule stays."""
    schedule = {"batch_size": 256, "lr": 1.0e-4, "warmup_steps": 312, "max_steps": 62400}

    def config(max_steps: int = 62400, lr: float = 1.0e-4) -> dict:
        return {
            "protocol": "lra_lite",
            "task": {
                "path": "pathfinder32/curv_contour_length_14",
                "batch_size": 256,
                "protocols": {"lra_lite": schedule},
            },
            "model": {"optim": {"lr": lr, "warmup_steps": 312}},
            "trainer": {"max_steps": max_steps},
        }

    for run_id, cfg, acc, seed in (
        ("probe", config(max_steps=200), 0.55, 0),
        ("hot", config(lr=1e-3), 0.99, 1),
        ("full", config(), 0.81, 2),
    ):
        row = fixture_row(task="pathfinder", attention="linear", run_id=run_id, config=cfg, test_acc=acc, seed=seed)
        append_row(results, row)
    assert run_report(results, "--no-figures") == 0
    err = capsys.readouterr().err
    assert "left out of the tables: probe (trainer.max_steps=200 (protocol lra_lite: 62400))" in err
    assert "left out of the tables: hot (model.optim.lr=0.001 (protocol lra_lite: 0.0001))" in err
    assert "full (" not in err
    linear = next(
        line for line in (results / "tables" / "leaderboard.md").read_text().splitlines() if "| linear |" in line
    )
    assert "81.00 (1)" in linear


def test_curves_figure_plots_validation_loss_under_accuracy(tmp_path, monkeypatch):
    """The loss row is what shows a run memorising (validation loss up while accuracy stays at chance); a curve
    file without a loss column (older runs) still gets its accuracy line."""
    from lra import figures

    (tmp_path / "curves").mkdir()
    pd.DataFrame({"step": [1, 2], "val/acc": [0.5, 0.5], "val/loss": [0.69, 0.8]}).to_csv(tmp_path / "curves/a.csv")
    pd.DataFrame({"step": [1, 2], "val/acc": [0.5, 0.9]}).to_csv(tmp_path / "curves/b.csv")
    runs = pd.DataFrame(
        [
            {
                "status": "ok",
                "data": "real",
                "protocol": "lra_lite",
                "task": "pathfinder",
                "attention": att,
                "curve": f"curves/{name}.csv",
                "majority_acc": 0.5,
            }
            for att, name in (("nalaformer", "a"), ("softmax", "b"))
        ]
    )
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, stem: saved.append(fig) or [])
    figures.curves(runs, tmp_path, tmp_path)
    acc_ax, loss_ax = saved[0].axes  # one task: accuracy above, loss below
    assert [list(line.get_ydata()) for line in acc_ax.lines if line.get_label() in {"nalaformer", "softmax"}] == [
        [50.0, 50.0],
        [50.0, 90.0],
    ]
    assert [list(line.get_ydata()) for line in loss_ax.lines] == [[0.69, 0.8]]


def test_accuracy_vs_speed_averages_the_same_tasks_for_every_point(monkeypatch):
    """An attention without a run on one of softmax's tasks is left out and named, not averaged over fewer tasks."""
    from lra import figures

    base = {"status": "ok", "data": "real", "protocol": "lra_lite", "tokens_per_sec": 1000.0, "peak_mem_mb": 10.0}
    accs = {("softmax", "listops"): 0.4, ("softmax", "pathfinder"): 0.8, ("linear", "listops"): 0.2}
    accs |= {("linear", "pathfinder"): 0.6, ("nystromformer", "listops"): 0.36, ("performer", "text"): 0.6}
    runs = pd.DataFrame([{**base, "attention": a, "task": t, "test_acc": acc} for (a, t), acc in accs.items()])
    runs.loc[runs["attention"] == "linear", "tokens_per_sec"] = 2000.0
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, out, stem: saved.append(fig) or [])
    bench = pd.DataFrame(columns=["device", "attention", "mode", "seq_len", "status", "ms", "peak_mem_mb"])
    figures.accuracy_vs_speed(runs, bench, Path("unused"))
    ax = saved[0].axes[0]
    points = {text.get_text(): tuple(text.xy) for text in ax.texts if text.get_text() in {a for a, _ in accs}}
    assert points == {"softmax": (1.0, pytest.approx(60.0)), "linear": (2.0, pytest.approx(40.0))}
    assert "left out: nystromformer, performer" in " ".join(t.get_text() for t in ax.texts)
    assert ax.get_ylabel().endswith("over listops, pathfinder")


def test_each_curve_label_gets_its_own_look_and_variants_keep_their_attention_colour():
    """Pathfinder's curves had 13 labels on ten colours: softmax and a linear variant were drawn alike."""
    from lra.figures import line_styles

    labels = ["softmax", "linear", "linear (feature_map=relu)", "linear (feature_map=relu, shift=1)", "nalaformer"]
    labels += [f"nalaformer (variant={i})" for i in range(5)] + [f"att{i}" for i in range(5)]
    styles = line_styles(labels)
    looks = [(tuple(colour), str(ls)) for colour, ls in styles.values()]
    assert set(styles) == set(labels) and len(set(looks)) == len(labels)
    assert styles["linear"][1] == "-" and styles["linear (feature_map=relu)"][1] != "-"
    assert styles["linear (feature_map=relu)"][0] == styles["linear"][0] != styles["softmax"][0]
    assert len({tuple(styles[f"att{i}"][0]) for i in range(5)} | {tuple(styles["softmax"][0])}) == 6


def test_curve_summary_says_when_each_run_left_chance_and_where_its_loss_went(tmp_path):
    from lra.leaderboard import curve_summary, curve_summary_markdown

    (tmp_path / "curves").mkdir()
    steps = [100, 200, 300, 400]
    curves = {
        "learns": {"val/acc": [0.50, 0.54, 0.58, 0.80], "val/loss": [0.69, 0.70, 0.60, 0.40]},
        "memorises": {"val/acc": [0.50, 0.51, 0.52, 0.53], "val/loss": [0.69, 0.75, 0.85, 0.90]},
        "old": {"val/acc": [0.50, 0.60, 0.70, 0.65]},  # an older curve file: no loss column
    }
    for name, cols in curves.items():
        pd.DataFrame({"step": steps, **cols}).to_csv(tmp_path / "curves" / f"{name}.csv", index=False)
    base = {"status": "ok", "data": "real", "protocol": "lra_lite", "task": "pathfinder", "majority_acc": 0.5}
    runs = pd.DataFrame(
        [
            {**base, "attention": "softmax", "seed": 0, "test_acc": 0.5, "curve": "curves/memorises.csv"},
            {**base, "attention": "softmax", "seed": 0, "test_acc": 0.8, "curve": "curves/learns.csv"},  # rerun
            {**base, "attention": "nalaformer", "seed": 0, "test_acc": 0.52, "curve": "curves/memorises.csv"},
            {**base, "attention": "linear", "seed": 1, "test_acc": 0.66, "curve": "curves/old.csv"},
            {**base, "attention": "linear", "seed": 2, "test_acc": 0.7, "curve": "curves/missing.csv"},
        ]
    )
    s = curve_summary(runs, tmp_path).set_index("attention")
    assert list(s.index) == ["linear", "nalaformer", "softmax"]  # the missing file is skipped
    soft, nala, lin = s.loc["softmax"], s.loc["nalaformer"], s.loc["linear"]
    assert soft["test"] == pytest.approx(80.0) and soft["left_chance_step"] == 300  # the latest row of seed 0
    assert (soft["best_val"], soft["best_val_step"]) == (pytest.approx(80.0), 400)
    assert (soft["lowest_val_loss"], soft["lowest_val_loss_step"]) == (pytest.approx(0.40), 400)
    assert pd.isna(nala["left_chance_step"]) and nala["last_val_loss"] == pytest.approx(0.90)
    assert lin["left_chance_step"] == 200 and pd.isna(lin["lowest_val_loss"])
    md = curve_summary_markdown(curve_summary(runs, tmp_path))
    assert "| pathfinder | nalaformer | 0 | 52.00 | 53.00 (400) | never | 0.690 (100) | 0.900 |" in md
    assert "| pathfinder | linear | 1 | 66.00 | 70.00 (300) | 200 | — | — |" in md


def test_report_writes_the_curve_summary(results):
    curve = results / "curves" / "pf.csv"
    curve.parent.mkdir()
    pd.DataFrame({"step": [10, 20], "val/acc": [0.5, 0.7], "val/loss": [0.7, 0.5]}).to_csv(curve, index=False)
    append_row(results, fixture_row(task="pathfinder", attention="nalaformer", test_acc=0.7, curve="curves/pf.csv"))
    assert run_report(results, "--no-figures") == 0
    assert "| pathfinder | nalaformer |" in (results / "tables" / "curves.md").read_text()


def test_an_ablation_is_a_row_of_its_own_not_one_more_seed(tmp_path):
    """attention.lepe=false is another model: under the bare name its seed 0 would replace the default's. Settings
    of how it is computed (impl) keep the name: the same attention, tested equal."""
    from attention_zoo import default_config
    from lra.leaderboard import build_boards, load_runs

    def row(acc: float, **attention) -> dict:
        config = {"attention": {"_target_": None, **default_config("nalaformer", **attention)}}
        return fixture_row(task="listops", attention="nalaformer", seed=0, test_acc=acc, config=config)

    for r in (row(0.30), row(0.32, impl="reference"), row(0.20, lepe=False, lepe_kernel=3)):
        append_row(tmp_path, r)
    (board,) = build_boards(load_runs(tmp_path), load_published(PUBLISHED))
    assert {a: (c["listops"].mean, c["listops"].n) for a, c in board.cells.items()} == {
        "nalaformer": (pytest.approx(32.0), 1),  # the latest row of the default's seed 0
        "nalaformer (lepe=false, lepe_kernel=3)": (pytest.approx(20.0), 1),
    }


def test_a_default_written_without_a_decimal_point_is_not_an_ablation(tmp_path, monkeypatch):
    """PyYAML reads ``eps: 1e-6`` as a string; Hydra, and so the run's config, as a float. The defaults must be
    read as Hydra reads them, or every run of such a plugin would be labelled ``(eps=1e-06)``."""
    import attention_zoo.registry as registry
    from lra.leaderboard import attention_label

    (tmp_path / "plain.yaml").write_text("name: plain\neps: 1e-6\n")
    monkeypatch.setattr(registry, "CONF_DIR", tmp_path)
    row = {"attention": "plain", "config": {"attention": {"_target_": None, "name": "plain", "eps": 1e-06}}}
    assert attention_label(row) == "plain"
    row["config"]["attention"]["eps"] = 1e-5
    assert attention_label(row) == "plain (eps=1e-05)"


def test_the_way_a_convolution_is_computed_keeps_the_label():
    """lepe_impl and conv_impl pick a kernel for the same convolution (tested equal; not part of the run id either):
    a nystromformer seed trained with the Triton skip conv counts with the others."""
    from attention_zoo import default_config
    from lra.leaderboard import attention_label

    for name, key, value in (("nystromformer", "conv_impl", "triton"), ("nalaformer", "lepe_impl", "conv1d")):
        row = {"attention": name, "config": {"attention": {"_target_": None, **default_config(name, **{key: value})}}}
        assert attention_label(row) == name


def test_a_published_number_stands_beside_the_runs_of_its_own_model(tmp_path):
    """NYS's Performer used the relu kernel with 256 features: its 18.80 / 69.87 stand beside our runs of that
    configuration; our default (FAVOR+, exp kernel, 128 features, as Skyformer ran it) stands beside Skyformer's."""
    from attention_zoo import default_config
    from lra.leaderboard import build_boards, load_runs

    nys = dict(kernel="relu", eps=1e-3, nb_features=256, redraw_interval=0)
    for acc, settings in ((0.36, {}), (0.19, nys)):
        config = {"attention": {"_target_": None, **default_config("performer", **settings)}}
        append_row(tmp_path, fixture_row(task="listops", attention="performer", test_acc=acc, config=config))
    (board,) = build_boards(load_runs(tmp_path), load_published(PUBLISHED))
    relu = "performer (eps=0.001, kernel=relu, nb_features=256, redraw_interval=0)"
    assert set(board.cells) == {"performer", relu}
    assert board.cells[relu]["listops"].published == pytest.approx(18.80)  # NYS
    assert board.cells[relu]["pathfinder"].published == pytest.approx(69.87)
    assert board.cells["performer"]["listops"].published == pytest.approx(38.02)  # Skyformer table 1
    assert board.cells["performer"]["pathfinder"].published == pytest.approx(66.30)


def test_a_published_table_without_a_needed_column_is_named(tmp_path):
    from lra import LRAError

    pd.DataFrame({"model": ["X"], "attention": ["softmax"], "protocol": ["lra_lite"], "listops": ["37.1"]}).to_csv(
        tmp_path / "paper.csv", index=False
    )
    with pytest.raises(LRAError, match=r"paper.csv: a published table needs the column\(s\) source"):
        load_published(tmp_path)


def test_rows_that_cannot_make_a_table_are_left_out_with_a_warning(tmp_path, capsys):
    """A row lacking the fields tables group by (edited by hand), or a run that failed before reading its data (a
    bad option), once made a table of its own ("protocol nan, nan data"); now each is a warning naming it."""
    append_row(tmp_path, fixture_row(task="listops", attention="softmax", test_acc=0.4))
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"run_id": "by-hand", "test_acc": 0.7}\n')
    failed = fixture_row(task="listops", attention="linear", run_id="bad-option", test_acc=None)
    append_row(tmp_path, {**failed, "status": "failed", "data": None, "error": "LRAError: seed='abc'"})
    assert run_report(tmp_path, "--no-figures") == 0
    out = capsys.readouterr()
    assert "protocol `nan`" not in out.out and "nan data" not in out.out and "| softmax |" in out.out
    assert "by-hand lacks status, task, attention, protocol" in out.err
    assert "bad-option (failed before its data was read: LRAError: seed='abc')" in out.err


def test_a_filter_that_matches_nothing_says_what_there_is(results, capsys):
    run_report(results, "--task", "lisops", "--no-figures")
    assert "--task lisops matches no run; the runs have: " in capsys.readouterr().err


def test_an_lra_sky_run_stands_beside_skyformer_and_polaformer_not_nystromformer(tmp_path):
    from lra.leaderboard import build_boards, load_runs

    for attention, acc in (("polaformer", 0.70), ("softmax", 0.66), ("nystromformer", 0.69)):
        append_row(tmp_path, fixture_row(task="pathfinder", attention=attention, protocol="lra_sky", test_acc=acc))
    (board,) = build_boards(load_runs(tmp_path), load_published(PUBLISHED))
    assert board.protocol == "lra_sky" and board.referenced
    assert board.cells["polaformer"]["pathfinder"].published == pytest.approx(70.53)  # PolaFormer's README
    assert board.cells["softmax"]["pathfinder"].published == pytest.approx(65.26)  # Skyformer table 1, not NYS 74.16
    assert board.cells["nystromformer"]["pathfinder"].published == pytest.approx(69.48)  # not NYS's 70.94
