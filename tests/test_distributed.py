"""DDP on CPU (gloo, two processes) and the submitit local launcher: sharded data, one row, failures contained."""

from __future__ import annotations

import numpy as np
import pytest

from lra.data.datamodule import LengthGroupedBatches
from lra.results import read_rows
from tests.conftest import run_cli


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_get_disjoint_batches(shuffle):
    lengths = np.random.default_rng(0).integers(1, 100, size=101)
    shards = [list(LengthGroupedBatches(lengths, 8, shuffle, seed=3, rank=r, world_size=2)) for r in range(2)]
    seen = [{i for b in shard for i in b} for shard in shards]
    assert not seen[0] & seen[1]
    if shuffle:  # equal batch counts per rank; at most one batch per epoch left out
        assert len(shards[0]) == len(shards[1]) == 6 and len(seen[0] | seen[1]) >= 101 - 8 - 5
    else:  # evaluation sees every example exactly once across ranks
        assert seen[0] | seen[1] == set(range(101))
    assert [len(s) for s in shards] == [
        len(LengthGroupedBatches(lengths, 8, shuffle, 3, rank=r, world_size=2)) for r in range(2)
    ]


def test_ddp_two_processes_on_cpu(tmp_path):
    logs = tmp_path / "batches"
    logs.mkdir()
    res = run_cli(
        "run.py",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "experiment=smoke",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        f"results_dir={tmp_path / 'r'}",
        f"checkpoint_dir={tmp_path / 'c'}",
        f"data_dir={tmp_path / 'd'}",
        f"hydra.run.dir={tmp_path / 'out'}",
        env={"LRA_BATCH_LOG_DIR": str(logs)},
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_rows(tmp_path / "r")
    assert len(rows) == 1 and rows[0]["world_size"] == 2 and rows[0]["status"] == "ok" and rows[0]["steps"] == 6
    seen = [
        [int(i) for line in (logs / f"rank{r}.txt").read_text().split("\n") for i in line.split()] for r in range(2)
    ]
    assert len(seen[0]) == len(seen[1]) >= 6 * 16  # six steps of batch 16 on each rank
    assert not set(seen[0]) & set(seen[1])  # within the first epoch the ranks' examples are disjoint


def test_submitit_local_sweep_keeps_rows_when_a_job_fails(tmp_path):
    res = run_cli(
        "run.py",
        "-m",
        "hydra/launcher=submitit_local",
        "experiment=smoke",
        "task=listops,text",
        "task.source=synthetic,files",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        f"results_dir={tmp_path / 'r'}",
        f"checkpoint_dir={tmp_path / 'c'}",
        f"data_dir={tmp_path / 'd'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=600,
    )
    rows = read_rows(tmp_path / "r")
    status = sorted((r["task"], r["config"]["task"]["source"], r["status"]) for r in rows)
    assert status == [
        ("listops", "files", "failed"),
        ("listops", "synthetic", "ok"),
        ("text", "files", "failed"),
        ("text", "synthetic", "ok"),
    ], res.stderr[-3000:]
