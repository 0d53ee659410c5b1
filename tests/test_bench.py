"""lra.bench on CPU at small sizes: the CSV rows, replacement on re-runs, OOM as a result, budget, leaderboard."""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from attention_zoo.registry import REGISTRY, AttentionSpec
from lra import bench
from lra.leaderboard import BENCH_COLUMNS, efficiency_markdown, load_bench
from lra.results import git_commit
from tests.conftest import run_cli

SMALL = [
    "--device",
    "cpu",
    "--tokens",
    "128",
    "--heads",
    "2",
    "--head-dim",
    "8",
    "--repeats",
    "2",
    "--warmup",
    "1",
    "--threads",
    "1",
    "--quiet",
]


def run_bench(tmp_path, *args: str) -> pd.DataFrame:
    assert bench.main([*SMALL, "--out", str(tmp_path), *args]) == 0
    return pd.read_csv(tmp_path / "cpu.csv")


def test_rows_have_the_columns_and_values(tmp_path):
    df = run_bench(tmp_path, "--attention", "softmax,linear", "--extra", "elu_linear_plain", "--lengths", "32,64")
    assert set(BENCH_COLUMNS) <= set(df.columns)
    assert {"error", "tokens_per_sec", "repeats", "time", "command"} <= set(df.columns)
    assert set(df["git_commit"]) == {git_commit()}  # which code each row timed
    assert len(df) == 3 * 2 * 2  # attentions x lengths x modes
    assert set(df["attention"]) == {"softmax", "linear", "elu_linear_plain"}
    assert set(df["mode"]) == {"train", "infer"} and set(df["seq_len"]) == {32, 64}
    assert (df["status"] == "ok").all()
    assert (df["ms"] > 0).all() and (df["tokens_per_sec"] > 0).all()
    assert (df["batch"] * df["seq_len"] == 128).all()
    assert (df["heads"] == 2).all() and (df["head_dim"] == 8).all() and (df["dtype"] == "fp32").all()
    assert (df["device"] == "cpu").all() and (df["torch"] == torch.__version__).all()
    assert df["peak_mem_mb"].isna().all()  # no allocator statistics on CPU
    assert (df["repeats"] == 2).all()
    impl = df.set_index("attention")["impl"].groupby(level=0).first()
    assert impl["softmax"] == "auto" and impl["elu_linear_plain"] == "torch"


def test_every_reference_entry_runs_or_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fla.ops.linear_attn", None)  # as if flash-linear-attention were missing
    df = run_bench(tmp_path, "--attention", "softmax", "--lengths", "32")  # --extra default: all four
    status = df.groupby("attention")["status"].agg(set).to_dict()
    assert set(status) == {"softmax", *bench.EXTRAS}
    assert status["fla_chunk_linear"] == {"unavailable"}
    assert all(status[a] == {"ok"} for a in ("softmax", "sdpa_flash", "elu_linear_plain", "nala_released_fp32"))
    assert df[df["attention"] == "fla_chunk_linear"]["error"].str.contains("not importable").all()


def test_rerun_replaces_rows_and_keeps_others(tmp_path):
    args = ("--attention", "softmax,linear", "--extra", "none", "--modes", "train")
    first = run_bench(tmp_path, *args, "--lengths", "32,64")
    again = run_bench(tmp_path, *args, "--lengths", "32,64")
    assert len(first) == len(again) == 4
    assert not again.duplicated(subset=bench.KEY).any()
    more = run_bench(tmp_path, *args, "--lengths", "64,128")
    assert sorted(more["seq_len"]) == [32, 32, 64, 64, 128, 128]
    assert (more[more["seq_len"] == 32]["time"] == again[again["seq_len"] == 32]["time"].iloc[0]).all()  # kept
    other = run_bench(
        tmp_path, "--attention", "softmax", "--extra", "none", "--modes", "train", "--lengths", "32", "--tokens", "64"
    )  # another batch: a different key, kept beside the others
    assert len(other) == 7 and sorted(other[other["seq_len"] == 32]["batch"]) == [2, 4, 4]


class Exploding(nn.Module):
    """A registered attention that fails from length 64 on with the exception under test."""

    lengths: list[int] = []
    error: Exception = RuntimeError

    def __init__(self, dim: int, num_heads: int, max_len: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        Exploding.lengths.append(x.shape[1])
        if x.shape[1] >= 64:
            raise Exploding.error
        return self.proj(x)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
        (RuntimeError("CUDA error: out of memory"), "oom"),
        (ValueError("a bug in the attention"), "error"),
    ],
)
def test_oom_is_a_result_and_larger_lengths_are_not_run(tmp_path, monkeypatch, error, status):
    monkeypatch.setitem(REGISTRY, "exploding", AttentionSpec("exploding", Exploding, "O(N)", "test"))
    monkeypatch.setattr(Exploding, "lengths", [])
    monkeypatch.setattr(Exploding, "error", error)
    df = run_bench(tmp_path, "--attention", "exploding,linear", "--extra", "none", "--lengths", "32,64,128")
    rows = df[df["attention"] == "exploding"].set_index(["mode", "seq_len"])
    for mode in ("train", "infer"):
        assert rows.loc[(mode, 32), "status"] == "ok"
        assert rows.loc[(mode, 64), "status"] == status
        assert str(error) in rows.loc[(mode, 64), "error"]
    if status == "oom":
        assert 128 not in Exploding.lengths  # recorded without running
        assert all(rows.loc[(m, 128), "status"] == "oom" for m in ("train", "infer"))
        assert rows.loc[("train", 128), "error"] == "not run: out of memory at N=64"
    else:  # an error is not carried over: the next length still runs
        assert 128 in Exploding.lengths and rows.loc[("train", 128), "status"] == "error"
    assert (df[df["attention"] == "linear"]["status"] == "ok").all()  # the run went on


def test_budget_skips_what_did_not_start(tmp_path, monkeypatch):
    calls = []

    def slow_case(case, *_):
        calls.append(case)
        import time

        time.sleep(0.05)
        return {"status": "ok", "error": "", "ms": 1.0, "peak_mem_mb": math.nan, "repeats": 1}

    monkeypatch.setattr(bench, "run_case", slow_case)
    df = run_bench(
        tmp_path, "--attention", "softmax,linear", "--extra", "none", "--lengths", "32,64", "--budget-seconds", "0.01"
    )
    assert len(calls) == 1 and len(df) == 8
    assert (df["status"] == "skipped").sum() == 7
    assert df[df["status"] == "skipped"]["error"].str.contains("budget").all()


def test_efficiency_markdown_renders_the_csv(tmp_path):
    run_bench(tmp_path, "--attention", "softmax,nalaformer", "--extra", "sdpa_flash", "--lengths", "32,64")
    bench_rows = load_bench(tmp_path)
    train = efficiency_markdown(bench_rows, "train")
    assert "on cpu" in train and "| attention | 32 | 64 |" in train
    for name in ("softmax", "nalaformer", "sdpa_flash"):
        assert f"| {name} | " in train
    assert "| softmax | " in train and "(1.0x)" in train
    assert "forward only" in efficiency_markdown(bench_rows, "infer")


def test_cli_prints_ratios_and_writes_the_named_file(tmp_path):
    out = tmp_path / "mine.csv"
    proc = run_cli(
        "-m",
        "lra.bench",
        *SMALL[:-1],
        "--attention",
        "softmax,linear",
        "--extra",
        "none",
        "--lengths",
        "32",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "speed vs softmax" in proc.stdout and "train N=   32 linear" in proc.stdout
    assert out.exists() and len(pd.read_csv(out)) == 4


def test_bad_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main([*SMALL, "--out", str(tmp_path), "--attention", "nope"])
    assert "unknown attention nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main([*SMALL, "--out", str(tmp_path), "--lengths", "4X"])
    # an impl one of the attentions refuses: refused before anything runs, no error rows written
    with pytest.raises(SystemExit):
        bench.main([*SMALL, "--out", str(tmp_path), "--attention", "nalaformer,softmax", "--impl", "linear"])
    err = capsys.readouterr().err
    assert "softmax cannot be built with --impl linear" in err and "is not one of auto, fast, reference" in err
    assert not list(tmp_path.glob("*.csv"))
    assert bench.parse_lengths("1K,2k,4096,1K") == [1024, 2048, 4096]
    with pytest.raises(argparse.ArgumentTypeError, match="'0' is not a positive number"):
        bench.parse_lengths("1K,0")  # it once reached a division by zero
    assert bench.csv_path(tmp_path, "NVIDIA H200").name == "NVIDIA_H200.csv"


def test_a_skipped_row_never_replaces_a_measured_one(tmp_path, monkeypatch):
    args = ("--attention", "softmax,linear", "--extra", "none", "--modes", "train", "--lengths", "32")
    first = run_bench(tmp_path, *args)
    assert (first["status"] == "ok").all()

    def slow_case(case, *_):
        import time

        time.sleep(0.05)
        return {"status": "ok", "error": "", "ms": 1.0, "peak_mem_mb": math.nan, "repeats": 1}

    monkeypatch.setattr(bench, "run_case", slow_case)
    again = run_bench(tmp_path, *args, "--budget-seconds", "0.01")  # softmax re-measured, linear skipped
    rows = again.set_index("attention")
    assert len(again) == 2 and (again["status"] == "ok").all()
    assert rows.loc["softmax", "ms"] == 1.0  # re-measured: replaced
    assert rows.loc["linear", "ms"] == first.set_index("attention").loc["linear", "ms"]  # kept, not "skipped"


def test_a_package_missing_here_keeps_its_rows_from_a_machine_that_had_it(tmp_path, monkeypatch):
    """fla left the GPU image between sessions: its measured rows stay, and --missing-only tries its unavailable
    rows again (the next machine may have it) instead of counting them as done."""
    args = ("--attention", "softmax", "--extra", "fla_chunk_linear", "--modes", "train")
    calls = []

    def machine(has_fla: bool):
        def run_case(case, *_):
            calls.append(case.attention)
            if case.attention == "fla_chunk_linear" and not has_fla:
                return {"status": "unavailable", "error": "flash-linear-attention not importable", "repeats": 0}
            return {"status": "ok", "error": "", "ms": 2.0, "peak_mem_mb": math.nan, "repeats": 1}

        monkeypatch.setattr(bench, "run_case", run_case)

    machine(has_fla=True)
    run_bench(tmp_path, *args, "--lengths", "32")
    machine(has_fla=False)
    rows = run_bench(tmp_path, *args, "--lengths", "32,64").set_index(["attention", "seq_len"])
    assert rows.loc[("fla_chunk_linear", 32), "status"] == "ok" and rows.loc[("fla_chunk_linear", 32), "ms"] == 2.0
    assert rows.loc[("fla_chunk_linear", 64), "status"] == "unavailable"  # a gap, recorded as such
    calls.clear()
    machine(has_fla=True)
    rows = run_bench(tmp_path, *args, "--lengths", "32,64", "--missing-only").set_index(["attention", "seq_len"])
    assert calls == ["fla_chunk_linear"] and rows.loc[("fla_chunk_linear", 64), "status"] == "ok"


def test_an_oom_inferred_from_a_shorter_length_keeps_a_measured_row(tmp_path, monkeypatch):
    """After an OOM at N, longer lengths are recorded "oom, not run" without running: on a smaller GPU that must not
    overwrite what a larger one measured there; the OOM that did happen is a result and replaces its row."""
    args = ("--attention", "softmax", "--extra", "none", "--modes", "train", "--lengths", "32,64")
    monkeypatch.setattr(
        bench, "run_case", lambda *_: {"status": "ok", "error": "", "ms": 2.0, "peak_mem_mb": 1.0, "repeats": 1}
    )
    run_bench(tmp_path, *args)
    monkeypatch.setattr(bench, "run_case", lambda *_: {"status": "oom", "error": "CUDA out of memory", "repeats": 0})
    rows = run_bench(tmp_path, *args).set_index("seq_len")
    assert rows.loc[32, "status"] == "oom" and (rows.loc[64, "status"], rows.loc[64, "ms"]) == ("ok", 2.0)


def test_missing_only_measures_just_the_gaps(tmp_path, monkeypatch):
    args = ("--attention", "softmax,linear", "--extra", "none", "--modes", "train")
    run_bench(tmp_path, *args, "--lengths", "32")
    calls = []

    def counting_case(case, *_):
        calls.append((case.attention, case.seq_len))
        return {"status": "ok", "error": "", "ms": 1.0, "peak_mem_mb": math.nan, "repeats": 1}

    monkeypatch.setattr(bench, "run_case", counting_case)
    df = run_bench(tmp_path, *args, "--lengths", "32,64", "--missing-only")
    assert sorted(calls) == [("linear", 64), ("softmax", 64)]
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert (df[df["seq_len"] == 32]["ms"] != 1.0).all()  # the earlier measurements are kept
