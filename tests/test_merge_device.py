"""scripts/merge_device.py: a device call's rows, curves, benchmark and throughput rows land in results/ once, and
a lane's stale copy of the benchmark table never overwrites a newer row."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from lra.bench import COLUMNS
from lra.results import append_row, read_rows
from tests.test_results_and_report import fixture_row

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "merge_device.py"
spec = importlib.util.spec_from_file_location("merge_device", SCRIPT)
merge = importlib.util.module_from_spec(spec)
spec.loader.exec_module(merge)


def bench_row(attention: str, ms: float, time: str) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(
        attention=attention,
        impl="auto",
        mode="train",
        seq_len=1024,
        dtype="bfloat16",
        batch=8,
        heads=8,
        head_dim=64,
        ms=ms,
        status="ok",
        time=time,
        device="GPU",
    )
    return row


def test_a_call_merges_once_and_keeps_newer_benchmark_rows(tmp_path):
    src, results = tmp_path / "call" / "a", tmp_path / "results"
    (src / "curves").mkdir(parents=True)
    (src / "curves" / "r1.csv").write_text("step,val/acc\n1,0.5\n")
    append_row(src, fixture_row(task="pathfinder", attention="softmax", run_id="r1", time="t1", curve="curves/r1.csv"))
    append_row(src, fixture_row(task="pathfinder", attention="nalaformer", run_id="r2", time="t1", status="failed"))
    easy = {"task": {"path": "pathfinder32/curv_baseline"}}  # a diagnostic on other data stays out
    append_row(src, fixture_row(task="pathfinder", attention="softmax", run_id="r3", time="t1", config=easy))
    # padding shown to attention, same files: merged (the report lists it apart, in tables/diagnostics.md)
    unmasked = {"model": {"mask_attention": False}}
    append_row(src, fixture_row(task="pathfinder", attention="softmax", run_id="r5", time="t1", config=unmasked))
    # a timing run on synthetic stand-ins (no text files on the device) stays out of the leaderboard's rows too
    append_row(src, fixture_row(task="text", attention="softmax", run_id="r4", time="t1", data="synthetic"))
    # the committed table has a row measured after this lane copied it (another lane, same call)
    (results / "bench").mkdir(parents=True)
    committed = [bench_row("softmax", 5.0, "2026-11-30T03:00"), bench_row("linear", 9.0, "2026-11-29T00:00")]
    pd.DataFrame(committed).to_csv(results / "bench" / "GPU.csv", index=False)
    (src / "bench").mkdir()
    pd.DataFrame([bench_row("softmax", 7.0, "2026-11-29T00:00"), bench_row("linear", 8.0, "2026-11-30T02:00")]).to_csv(
        src / "bench" / "GPU.csv", index=False
    )
    pd.DataFrame([{"setting": "bf16", "overrides": "[]", "steady_steps_per_sec": 70.0}]).to_csv(
        src / "throughput.csv", index=False
    )
    for _ in range(2):  # twice: nothing doubles
        assert merge.main([str(src), "--results", str(results)]) == 0
    rows = read_rows(results)
    assert [(r["run_id"], r["status"]) for r in rows] == [("r1", "ok"), ("r5", "ok")]
    assert (results / "curves" / "r1.csv").read_text() == "step,val/acc\n1,0.5\n"
    bench = pd.read_csv(results / "bench" / "GPU.csv").set_index("attention")["ms"].to_dict()
    assert bench == {"softmax": 5.0, "linear": 8.0}  # the newer of each key
    tput = pd.read_csv(results / "throughput.csv")
    assert len(tput) == 1 and tput.source.iloc[0].endswith("call/a")
