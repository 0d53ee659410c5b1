"""scripts/gpu_session.sh on the CPU, with a stand-in nvidia-smi: the stages the next GPU call will run finish
(no hang), write their rows where the copy-back expects them, and parse their lists. Device time is scarce: a
script bug found here costs seconds, found there it cost minutes (a bare `wait` hung on the log's `tee`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE_SMI = """#!/usr/bin/env bash
if [ "${1:-}" = "-L" ]; then echo "GPU 0: Stand-in"; echo "GPU 1: Stand-in"; else echo "Stand-in, 0 MiB, 0"; fi
"""


def session(tmp_path: Path, timeout: int = 400, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "nvidia-smi").write_text(FAKE_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    # a link would lose the venv; HANG_RUNS=1 stands in for a run that ignores SIGTERM (one compiling did, session 19);
    # ECHO_MODULE=M prints what `python3 -m M` was given instead of running it
    hang = 'if [ -n "${HANG_RUNS:-}" ] && [ "$1" = run.py ]; then trap "" TERM; exec sleep 600; fi\n'
    echo = 'if [ -n "${ECHO_MODULE:-}" ] && [ "$2" = "$ECHO_MODULE" ]; then echo "ARGS: $*"; exit 0; fi\n'
    (bin_dir / "python3").write_text(f'#!/bin/sh\n{hang}{echo}exec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    out = tmp_path / "out"
    full_env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OUT": str(out),
        "CKPT": str(tmp_path),
        "DATA": str(tmp_path / "data"),
        "EXPERIMENT": "smoke",
        **env,
    }
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    res = subprocess.run(
        ["bash", "scripts/gpu_session.sh"], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    # What the device tool would send back: at most 8 files, 16 MiB each, no deeper than $OUT/a/b/file (it dropped
    # the rows and checkpoints of a whole call once). Then unpack in place, as after a real call.
    sent = [p for p in out.rglob("*") if p.is_file()]
    assert len(sent) <= 8 and all(p.stat().st_size <= 16 << 20 for p in sent), sent
    assert all(len(p.relative_to(out).parts) <= 3 for p in sent), sent
    subprocess.run(["bash", "scripts/unpack_device.sh", str(out), str(out)], cwd=ROOT, check=True, capture_output=True)
    return res, out


SHORT = "trainer.max_steps=2 trainer.val_check_interval=2"


def pruns(tmp_path: Path, runs: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The parallel-runs stage on RUNS (two-step runs unless RUN_EXTRA says otherwise); the script must succeed."""
    res, out = session(tmp_path, STAGES="pruns", RUNS=runs, **{"RUN_EXTRA": SHORT, **env})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res, out


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_parallel_runs_finish_and_land(tmp_path):
    res, out = pruns(
        tmp_path,
        "listops:softmax:0 listops:linear:1 listops:softmax:2",
        PER_GPU="1",
        RUN_EXTRA="trainer.max_steps=3 trainer.val_check_interval=3",
    )
    assert "== done in" in res.stdout  # the stage returned: it did not wait for the log's tee
    got = sorted((r["attention"], r["seed"], r["status"]) for r in rows(out / "runs.jsonl"))
    assert got == [("linear", 1, "ok"), ("softmax", 0, "ok"), ("softmax", 2, "ok")]
    assert sorted(p.name for p in (out / "logs").iterdir()) == [
        "listops-linear-1.log",
        "listops-softmax-0.log",
        "listops-softmax-2.log",
    ]
    assert res.stdout.count(" rc=0 test_acc=") == 3


def test_a_spec_that_finished_in_an_earlier_call_is_not_trained_again(tmp_path):
    """The same spec in a later call on the warm machine (same checkpoints): skipped, no second row; with
    SKIP_FINISHED=false it trains afresh."""
    _, out = pruns(tmp_path, "listops:softmax:0", PER_GPU="1")
    assert len(rows(out / "runs.jsonl")) == 1
    # its best checkpoint comes back (for lra.ablate), with the row it finished with
    (sent,) = (out / "best" / "ckpt").iterdir()
    assert sorted(p.name for p in sent.iterdir()) == ["best.ckpt", "finished.json"]
    shutil.rmtree(out)
    res, out = pruns(tmp_path, "listops:softmax:0", PER_GPU="1")
    assert rows(out / "runs.jsonl") == [] and "finished already" in (out / "logs/listops-softmax-0.log").read_text()
    assert not (out / "best").exists()  # finished in an earlier call: sent back then
    shutil.rmtree(out)
    _, out = pruns(tmp_path, "listops:softmax:0", PER_GPU="1", SKIP_FINISHED="false")
    assert len(rows(out / "runs.jsonl")) == 1


def test_stagger_spaces_the_starts(tmp_path):
    """STAGGER=N: each run starts N seconds after the one before (their loading and compiling do not collide);
    runs that fail at once are enough to see when each started."""
    res, _ = pruns(tmp_path, "listops:nosuch:0 listops:nosuch:1", PER_GPU="2", STAGGER="4")
    starts = [int(m) for m in re.findall(r"== \[(\d+)s\] start listops:nosuch:\d on GPU \d", res.stdout)]
    assert len(starts) == 2 and starts[1] - starts[0] >= 4, res.stdout


def test_runs_stay_on_the_gpus_named_in_GPUS(tmp_path):
    res, out = pruns(
        tmp_path,
        "listops:softmax:0 listops:linear:0 listops:linear:0:trainer.max_steps=3,trainer.val_check_interval=3",
        GPUS="1",
        PER_GPU="2",
    )
    assert "parallel runs: GPUs 1 x 2" in res.stdout
    logs = sorted((out / "logs").iterdir())
    assert len(logs) == 3  # the variant has a log of its own
    for log in logs:
        assert log.read_text().splitlines()[0].startswith("CUDA_VISIBLE_DEVICES=1 listops:"), log.name
    # a spec's own overrides (after a fourth colon) win over RUN_EXTRA, for that run only
    assert sorted((r["attention"], r["steps"]) for r in rows(out / "runs.jsonl")) == [
        ("linear", 2),
        ("linear", 3),
        ("softmax", 2),
    ]


def test_the_next_run_goes_to_the_gpu_that_came_free(tmp_path):
    # GPU 0 holds a long run; the short one on GPU 1 ends first, so the third run must go to GPU 1, not GPU 0.
    res, out = pruns(
        tmp_path,
        "listops:softmax:0:trainer.max_steps=400,trainer.val_check_interval=400 listops:linear:0 listops:linear:1",
        PER_GPU="1",
    )
    first = {p.name: p.read_text().splitlines()[0] for p in (out / "logs").iterdir()}
    assert first["listops-linear-0.log"].startswith("CUDA_VISIBLE_DEVICES=1 ")
    assert first["listops-linear-1.log"].startswith("CUDA_VISIBLE_DEVICES=1 "), first
    assert len(rows(out / "runs.jsonl")) == 3


def test_scaling_runs_one_then_two_devices(tmp_path):
    res, out = session(
        tmp_path, STAGES="scaling", RUN_EXTRA="trainer.max_steps=3 trainer.val_check_interval=3 trainer.accelerator=cpu"
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    got = rows(out / "scaling" / "runs.jsonl")
    assert [(r["world_size"], r["config"]["task"]["batch_size"], r["status"]) for r in got] == [
        (1, 32, "ok"),
        (2, 16, "ok"),
    ]
    assert res.stdout.count("wall ") == 2


def test_a_run_cut_by_the_deadline_sends_its_checkpoints_back(tmp_path):
    """A run longer than the call is killed at DEADLINE; its last and best checkpoints come back under $OUT/ckpt
    (to be carried to the next machine), while finished runs leave nothing there."""
    # another instance's unfinished run in the same checkpoint folder is not this one's to send back
    (tmp_path / "ckpt" / "listops-cosformer-s0-x").mkdir(parents=True)
    (tmp_path / "ckpt" / "listops-cosformer-s0-x" / "last.ckpt").write_bytes(b"x")
    res, out = pruns(
        tmp_path,
        "listops:softmax:0 listops:linear:0",
        DEADLINE="45",
        RUN_EXTRA="trainer.max_steps=100000 trainer.val_check_interval=10",
    )
    assert res.stdout.count(" rc=124 ") == 2  # both killed by timeout, as on the device
    kept = sorted(p.relative_to(out / "ckpt") for p in (out / "ckpt").rglob("*.ckpt"))
    assert [p.name for p in kept] == ["best.ckpt", "last.ckpt"] * 2
    assert {p.parts[1].split("-s0-")[0] for p in kept} == {"listops-softmax", "listops-linear"}
    assert not (out / "runs.jsonl").exists()  # no row for a run that did not finish
    curves = sorted((out / "ckpt").rglob("curve.csv"))  # and their learning curves so far
    assert len(curves) == 2 and all(len(c.read_text().splitlines()) > 1 for c in curves)


def test_a_run_that_ignores_sigterm_is_killed_and_not_retried(tmp_path):
    """A run sent SIGTERM at the deadline that goes on (as one compiling did, session 19, which took the call past
    its 600 s) is killed 15 s later (rc 137), and that is a cut, not a compile failure to retry eagerly."""
    started = time.monotonic()
    res, _ = pruns(tmp_path, "listops:softmax:0:trainer.compile=true", DEADLINE="40", MIN_LEFT="5", HANG_RUNS="1")
    assert "no time left" not in res.stdout  # the run started (a slow import could eat the 40 s)
    assert " rc=137 " in res.stdout and "again eager" not in res.stdout
    assert time.monotonic() - started < 40 + 15 + 30  # the deadline, the grace, the script's own start and end


def test_a_throughput_entry_may_carry_overrides(tmp_path):
    """TP_ATTENTIONS="A A,attention.x=v": an A/B of one attention, the overrides after the attention they change."""
    res, _ = session(
        tmp_path, STAGES="throughput", TP_ATTENTIONS="linear linear,attention.feature_map=relu,attention.eps=0.001",
        ECHO_MODULE="lra.throughput",
    )  # fmt: skip
    calls = [line.split()[3:7] for line in res.stdout.splitlines() if line.startswith("ARGS: ")]
    assert calls == [
        ["task=listops", "experiment=lra_lite", "attention=linear", f"data_dir={tmp_path / 'data'}"],
        ["task=listops", "experiment=lra_lite", "attention=linear", "attention.feature_map=relu"],
    ]
    assert "attention.eps=0.001" in res.stdout


STEPS = "trainer.max_steps=3 trainer.val_check_interval=3"


@pytest.mark.parametrize(
    "runs, extra",
    [
        ("listops:softmax:0", f"{STEPS} trainer.compile=true trainer.compile_mode=bogus"),  # compile in RUN_EXTRA
        ("listops:linear:0:trainer.compile=true,trainer.compile_mode=bogus", STEPS),  # in the spec (session 11)
    ],
)
def test_a_run_failing_under_compile_goes_on_eager(tmp_path, runs, extra):
    """A compiled run that fails (here: a mode torch.compile refuses) is started again without compile, whether
    compile came from RUN_EXTRA or from the spec's own overrides."""
    res, out = pruns(tmp_path, runs, RUN_EXTRA=extra)
    assert "under compile: again eager" in res.stdout and " rc=0 test_acc=" in res.stdout
    failed, eager = rows(out / "runs.jsonl")
    assert (failed["status"], failed.get("compile"), eager["status"], eager["compile"]) == ("failed", None, "ok", False)
    # a compiled run validates compiled too, unless told otherwise; the eager retry drops that with the rest
    assert "trainer.compile_eval=true" in failed["overrides"] and eager["compile_eval"] is False


def test_compile_eval_is_left_to_the_spec_or_COMPILE_EVAL(tmp_path):
    """The default above gives way: a spec's own trainer.compile_eval, and COMPILE_EVAL=0 for the whole call."""
    bogus = "trainer.compile=true trainer.compile_mode=bogus"
    _, out = pruns(tmp_path / "a", "listops:softmax:0:trainer.compile_eval=false", RUN_EXTRA=f"{STEPS} {bogus}")
    assert [o for o in rows(out / "runs.jsonl")[0]["overrides"] if o.startswith("trainer.compile_eval")] == [
        "trainer.compile_eval=false"
    ]
    _, out = pruns(tmp_path / "b", "listops:softmax:0", RUN_EXTRA=f"{STEPS} {bogus}", COMPILE_EVAL="0")
    assert not [o for o in rows(out / "runs.jsonl")[0]["overrides"] if o.startswith("trainer.compile_eval")]


def test_no_run_left_to_start_does_not_hang(tmp_path):
    res, _ = session(tmp_path, timeout=120, STAGES="pruns", RUNS="listops:softmax:0", DEADLINE="1")
    assert res.returncode == 0 and "no time left for listops:softmax:0" in res.stdout and "== done in" in res.stdout


def test_min_left_starts_no_run_that_could_not_finish(tmp_path):
    """MIN_LEFT (a session's last call): a run is not started with fewer seconds left, so none is cut there."""
    res, out = session(tmp_path, timeout=120, STAGES="pruns", RUNS="listops:softmax:0", DEADLINE="500", MIN_LEFT="520")
    assert res.returncode == 0 and "no time left for listops:softmax:0" in res.stdout
    assert not (out / "logs" / "listops-softmax-0.log").exists()


def test_gen_writes_pathfinder_and_pathx_and_skips_listops_on_request(tmp_path):
    # OMP_NUM_THREADS, set for the training runs, must not shrink the generator's pool (`nproc` follows it)
    # an unfinished run of another instance (training beside this one) is not this instance's to send back
    (tmp_path / "ckpt" / "listops-softmax-s0-x").mkdir(parents=True)
    (tmp_path / "ckpt" / "listops-softmax-s0-x" / "last.ckpt").write_bytes(b"x")
    res, out = session(
        tmp_path, timeout=300, STAGES="gen", LISTOPS="0", PF_IMAGES="12", PX_IMAGES="4", OMP_NUM_THREADS="1"
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "checkpoint kept" not in res.stdout and not (out / "ckpt").exists()
    assert f"data generated on {len(os.sched_getaffinity(0))} cores" in res.stdout
    assert "skipped (LISTOPS=0)" in res.stdout and not (tmp_path / "data" / "listops-1000").exists()
    for res_dir, num in (("pathfinder32", 12), ("pathfinder128", 4)):
        images = list((tmp_path / "data" / res_dir / "curv_contour_length_14" / "imgs").rglob("*.png"))
        assert len(images) == num, res_dir


def test_gen_writes_generator_variants_under_their_names(tmp_path):
    res, _ = session(
        tmp_path,
        timeout=300,
        STAGES="gen",
        LISTOPS="0",
        PF_IMAGES="6",
        PF_VARIANTS="easy:easy-nodistract:num_distractor_snakes=0;distractor_length=1",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    variant = tmp_path / "data" / "pathfinder32" / "easy-nodistract"
    assert len(list((variant / "imgs").rglob("*.png"))) == 6
    # Both settings reached the generator: the metadata records distractor_length (field 7; the preset has 2).
    lines = [line.split() for f in (variant / "metadata").iterdir() for line in f.read_text().splitlines()]
    assert len(lines) == 6 and {line[6] for line in lines} == {"1"}


def test_graphs_stage_runs_each_variant_alone_and_lists_cpu_kernels(tmp_path):
    """The CUDA-graph probe: one short compiled run per attention x variant, inductor's code in its log. On the CPU
    every kernel is a C++ one, so the list must be non-empty here (on a GPU, any entry is the suspect)."""
    res, out = session(
        tmp_path,
        STAGES="graphs",
        GRAPH_TASK="listops",
        GRAPH_ATTENTIONS="linear",
        GRAPH_VARIANTS="static:trainer.compile_dynamic=false",
        GRAPH_STEPS="2",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    line = next(x for x in res.stdout.splitlines() if "graphs linear static rc=" in x)
    assert " rc=0 test_acc=" in line and "cpu kernels: cpp_fused_" in line
    assert "cpp_fused_" in (out / "graphs" / "linear-static.log").read_text()  # the output code is in the log
    assert not (out / "graphs" / "ckpt").exists()  # checkpoints of probe runs do not travel back
    (row,) = rows(out / "graphs" / "runs.jsonl")
    assert row["compile"] is True and row["steps"] == 2


def test_a_spec_ending_in_at_n_runs_on_gpu_n_only(tmp_path):
    # Both pinned runs go to GPU 1 (the second waits for its slot, GPU 0 stays free); a pin outside GPUS is named
    # and skipped, not waited on forever.
    res, out = pruns(
        tmp_path,
        "listops:softmax:0@1 listops:linear:0@1 listops:linear:1@7",
        PER_GPU="1",
    )
    first = {p.name: p.read_text().splitlines()[0] for p in (out / "logs").iterdir()}
    assert first == {
        "listops-softmax-0.log": "CUDA_VISIBLE_DEVICES=1 listops:softmax:0",
        "listops-linear-0.log": "CUDA_VISIBLE_DEVICES=1 listops:linear:0",
    }
    assert "listops:linear:1@7: GPU 7 is not among GPUS (0 1)" in res.stdout
    assert len(rows(out / "runs.jsonl")) == 2


def test_a_spec_may_name_its_own_experiment(tmp_path):
    # Hydra takes one value per group: the spec's experiment replaces EXPERIMENT instead of being passed twice.
    res, out = pruns(
        tmp_path,
        "listops:softmax:0:experiment=demo,trainer.max_steps=2,trainer.val_check_interval=2 listops:linear:0",
        PER_GPU="2",
        RUN_EXTRA="trainer.max_steps=2 trainer.val_check_interval=2 task.max_len=64",
    )
    got = {r["attention"]: (r["protocol"], r["overrides"].count("experiment=demo")) for r in rows(out / "runs.jsonl")}
    assert got == {"softmax": ("demo", 1), "linear": ("smoke", 0)}


@pytest.mark.parametrize("have_mps", [True, False])
def test_mps_is_started_and_stopped_or_its_absence_said(tmp_path, have_mps):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "mps_calls"
    if have_mps:  # a stand-in that records how it was called and what it read
        (bin_dir / "nvidia-cuda-mps-control").write_text(
            f'#!/bin/sh\n[ -z "$1" ] && read -r line\necho "$* $CUDA_MPS_PIPE_DIRECTORY ${{line:-}}" >>{calls}\n'
        )
        (bin_dir / "nvidia-cuda-mps-control").chmod(0o755)
    res, _ = session(tmp_path, STAGES="none", MPS="1")  # no stage: only the start and the end
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    if have_mps:
        assert "== MPS on" in res.stdout
        assert calls.read_text().split("\n")[:2] == ["-d /tmp/mps-pipe ", " /tmp/mps-pipe quit"]
    else:
        assert "== MPS not available here" in res.stdout


def test_the_compile_cache_goes_back_and_the_next_call_reuses_it(tmp_path):
    """Compiled kernels travel like checkpoints: the call sends its Inductor/Triton cache back, unpacking puts it
    where the next call carries it, and a run compiled there again finds every graph in it (no new entries)."""
    spec = "listops:softmax:0:trainer.compile=true"
    first, second = tmp_path / "first", tmp_path / "second"
    pruns(first, spec, COMPILE_CACHE=str(first / "cache"))
    assert (first / "out" / "compile_cache" / "inductor").is_dir()  # sent back (session() unpacked it in place)
    assert len(list((first / "out" / "finished").rglob("finished.json"))) == 1  # the finished run says so
    dest = tmp_path / "carried"
    subprocess.run(
        ["bash", "scripts/unpack_device.sh", str(first / "out"), str(first / "out"), str(dest)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert not (first / "out" / "compile_cache").exists()  # moved to where the next call carries it from
    # and the finished run's best checkpoint beside it (checkpoints/best/, not carried), where lra.ablate reads it
    assert not (first / "out" / "best").exists() and len(list((tmp_path / "best").rglob("best.ckpt"))) == 1
    graphs = sorted(
        p.relative_to(dest) for p in (dest / "compile_cache" / "inductor" / "fxgraph").rglob("*") if p.is_file()
    )
    assert graphs  # Inductor's FX graph cache, filled by the first call
    res, _ = pruns(second, spec.replace(":0:", ":1:"), COMPILE_CACHE=str(dest / "compile_cache"))
    assert "compile cache sent back" in res.stdout
    after = sorted(
        p.relative_to(dest) for p in (dest / "compile_cache" / "inductor" / "fxgraph").rglob("*") if p.is_file()
    )
    assert after == graphs  # every graph was found: nothing compiled anew


def test_unpacking_keeps_unfinished_runs_and_drops_finished_ones_from_the_resume_checkpoints(tmp_path):
    """checkpoints/device/ckpt/ is committed so a cut run resumes in the next session: a run that finished in this
    call leaves it (its best checkpoint goes to checkpoints/best/), one still unfinished stays."""
    sent, ckpt_dest = tmp_path / "sent", tmp_path / "checkpoints" / "device"
    # "done" came back with its best checkpoint, "done_no_best" only said it finished (BEST_BACK=0 or over the cap)
    for path in (
        sent / "ckpt/ckpt/cut/last.ckpt",
        sent / "best/ckpt/done/best.ckpt",
        sent / "finished/ckpt/done/finished.json",
        sent / "finished/ckpt/done_no_best/finished.json",
        ckpt_dest / "ckpt/done/last.ckpt",
        ckpt_dest / "ckpt/done_no_best/last.ckpt",
        ckpt_dest / "ckpt/other/last.ckpt",  # not run in this call: stays
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.parent.name)
    subprocess.run(
        ["bash", "scripts/unpack_device.sh", str(sent), str(sent), str(ckpt_dest)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in (ckpt_dest / "ckpt").iterdir()) == ["cut", "other"]
    assert (ckpt_dest / "ckpt/cut/last.ckpt").read_text() == "cut"
    assert (tmp_path / "checkpoints/best/ckpt/done/best.ckpt").read_text() == "done"


def test_git_keeps_resume_checkpoints_and_ignores_the_rest():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT).returncode == 0

    assert not ignored("checkpoints/device/ckpt/pathfinder-nystromformer-s0-abc/last.ckpt")
    assert ignored("checkpoints/device/compile_cache/inductor/x") and ignored("checkpoints/best/ckpt/run/best.ckpt")


def test_an_oversized_compile_cache_stays_behind(tmp_path):
    cache = tmp_path / "cache"
    (cache / "triton").mkdir(parents=True)
    (cache / "triton" / "blob").write_bytes(os.urandom(2 << 20))
    res, out = session(tmp_path, timeout=120, STAGES="none", COMPILE_CACHE=str(cache), CACHE_MAX_MB="1")
    assert "compile cache not sent back: 3 MB > CACHE_MAX_MB=1" in res.stdout  # du rounds 2 MiB and folders up
    assert not (out / "compile_cache").exists()


def test_evaluation_batches_default_to_large_ones_unless_chosen(tmp_path):
    """Validation at the training batch cost ListOps a third of its run on the H200: the script passes a large
    evaluation batch per task unless the spec, RUN_EXTRA or EVAL_BATCH says otherwise."""

    def chosen(out: Path) -> dict[int, list[str]]:
        return {r["seed"]: [o for o in r["overrides"] if o.startswith("task.eval_batch_size=")] for r in rows(out)}

    _, out = pruns(tmp_path / "a", "listops:softmax:0 listops:softmax:1:task.eval_batch_size=64", PER_GPU="2")
    assert chosen(out / "runs.jsonl") == {0: ["task.eval_batch_size=256"], 1: ["task.eval_batch_size=64"]}
    _, out = pruns(tmp_path / "b", "listops:softmax:2", EVAL_BATCH="train")
    assert chosen(out / "runs.jsonl") == {2: []}
