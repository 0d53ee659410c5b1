"""run.py end to end: every task's smoke run, the row schema, sweeps, errors, resume."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

import run
from attention_zoo import available
from lra import LRAError
from lra.callbacks import BestCheckpoint, ThroughputMonitor
from lra.results import REQUIRED_FIELDS, read_rows
from tests.conftest import run_cli


@pytest.mark.parametrize("task", ["listops", "text", "retrieval", "image", "pathfinder", "pathx"])
def test_smoke_run_of_every_task_appends_a_complete_row(cfg_factory, task):
    cfg = cfg_factory(f"task={task}", "experiment=smoke", "attention=softmax")
    row = run.train(cfg, overrides=[f"task={task}"])
    rows = read_rows(cfg.results_dir)
    assert rows == [json.loads(json.dumps(row))]
    assert set(REQUIRED_FIELDS) <= set(rows[0])
    r = rows[0]
    assert (r["task"], r["attention"], r["seed"], r["status"]) == (task, "softmax", 0, "ok")
    assert r["data"] == "synthetic" and r["data_source"] == "synthetic"  # no files in tmp data_dir
    assert r["steps"] == 20 and 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["best_val_acc"] <= 1.0
    assert r["steps_per_sec"] > 0 and r["tokens_per_sec"] > 0 and r["train_seconds"] > 0
    assert r["val_seconds"] > 0 and r["wall_seconds"] > r["train_seconds"] + r["val_seconds"]  # + the test
    assert r["peak_mem_mb"] > 0 and r["params"] > 1000
    assert r["device"] == "cpu" and r["torch"] == torch.__version__
    assert r["config"]["task"]["name"] == task and r["overrides"] == [f"task={task}"]
    assert r["config"]["model"]["dim"] == 32  # the resolved config, experiment applied


def test_nalaformer_smoke_run(cfg_factory):
    cfg = cfg_factory("attention=nalaformer", "experiment=smoke")
    row = run.train(cfg)
    assert row["attention"] == "nalaformer" and row["status"] == "ok"
    assert row["config"]["attention"]["rope"] is True


def test_real_listops_files_are_used_when_present(cfg_factory, tmp_path):
    from lra.data import listops

    cfg = cfg_factory("experiment=smoke", "task.source=files")
    listops.write_splits(
        tmp_path / "data" / "listops-1000",
        listops.ListOpsConfig(num_train=64, num_val=16, num_test=16, max_depth=3, min_length=3, max_length=60),
    )
    row = run.train(cfg)
    assert row["data"] == "real" and row["data_source"].endswith("listops-1000")


def test_missing_data_is_a_clear_error(tmp_path):
    res = run_cli("run.py", "task=text", f"data_dir={tmp_path}", f"results_dir={tmp_path / 'r'}")
    assert res.returncode == 2
    assert "data not found at" in res.stderr + res.stdout and "Traceback" not in res.stderr
    assert read_rows(tmp_path / "r")[0]["status"] == "failed"


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.max_len=4k", "task.max_len='4k': expected a positive integer"),
        ("trainer.max_steps=0", "trainer.max_steps=0: expected a positive integer"),
        ("model.optim.lr=fast", "model.optim.lr='fast': expected a positive number"),
        ("task.eval_batch_size=0", "task.eval_batch_size=0: expected a positive integer or null"),
        ("trainer.limit_val_batches=0.5", "trainer.limit_val_batches=0.5: expected a positive integer or null"),
        ("+attention.not_an_option=1", "attention 'softmax' has no option not_an_option"),
        ("seed=abc", "seed='abc': expected a non-negative integer"),
        ("skip_finished=no", "skip_finished='no': expected true or false"),  # a string would read as true
        ("model.optim.decay=cosin", "model.optim.decay='cosin': expected one of linear, cosine, constant, rsqrt"),
        ("trainer.precision=bf17", "a trainer.* setting was refused: Precision 'bf17' is invalid"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, override, message):
    res = run_cli("run.py", "experiment=smoke", override, f"results_dir={tmp_path}", f"checkpoint_dir={tmp_path}/c")
    assert res.returncode == 2 and message in res.stderr + res.stdout and "Traceback" not in res.stderr


def test_unknown_attention_lists_the_options():
    res = run_cli("run.py", "attention=nope")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "Available options in 'attention'" in res.stderr
    assert "nalaformer" in res.stderr and "softmax" in res.stderr


def test_sweep_survives_a_failing_run(tmp_path):
    """text has no files and source=files: its jobs fail, the listops jobs still land their rows."""
    from lra.data import listops

    listops.write_splits(
        tmp_path / "data" / "listops-1000",
        listops.ListOpsConfig(num_train=64, num_val=16, num_test=16, max_depth=3, min_length=3, max_length=60),
    )
    res = run_cli(
        "run.py",
        "-m",
        "experiment=smoke",
        "task=listops,text",
        "task.source=files",
        "attention=softmax,nalaformer",
        f"data_dir={tmp_path / 'data'}",
        f"results_dir={tmp_path / 'r'}",
        f"checkpoint_dir={tmp_path / 'c'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        timeout=600,
    )
    rows = read_rows(tmp_path / "r")
    assert res.returncode == 0, res.stderr[-2000:]
    status = {(r["task"], r["attention"]): r["status"] for r in rows}
    assert len(rows) == 4
    assert status == {
        ("listops", "softmax"): "ok",
        ("listops", "nalaformer"): "ok",
        ("text", "softmax"): "failed",
        ("text", "nalaformer"): "failed",
    }


def crash_at_step(cfg, monkeypatch, step: int) -> None:
    """Run ``cfg`` until training reaches ``step``, then fail as a killed job would (no row written)."""
    original = ThroughputMonitor.on_train_batch_start

    def crash(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == step:
            raise RuntimeError("simulated crash")
        original(self, trainer, pl_module, batch, batch_idx)

    monkeypatch.setattr(ThroughputMonitor, "on_train_batch_start", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run.train(cfg)
    monkeypatch.setattr(ThroughputMonitor, "on_train_batch_start", original)


def test_resume_continues_from_last_checkpoint(cfg_factory, monkeypatch):
    cfg = cfg_factory("experiment=smoke", "trainer.val_check_interval=5")
    start = time.perf_counter()
    crash_at_step(cfg, monkeypatch, 12)
    crashed_seconds = time.perf_counter() - start
    assert read_rows(cfg.results_dir) == []
    row = run.train(cfg)
    assert row["resumed_from_step"] == 10 and row["steps"] == 20
    # the rate counts the 10 steps this process ran, not the 10 the crashed one did before
    assert row["steps_per_sec"] * row["train_seconds"] == pytest.approx(10, rel=0.01)
    # what the whole run cost: this process plus the crashed one's time up to its checkpoint at step 10
    earlier = row["run_wall_seconds"] - row["wall_seconds"]
    assert 0 < earlier < crashed_seconds
    assert row["run_val_seconds"] > row["val_seconds"] > 0  # both processes validated (steps 5, 10 and 15, 20)
    again = run.train(cfg)  # finished runs leave no last.ckpt: the same command starts afresh
    assert again["resumed_from_step"] is None
    assert again["run_wall_seconds"] == pytest.approx(again["wall_seconds"], abs=0.01)


def test_skip_finished_trains_only_what_is_left(cfg_factory, monkeypatch):
    """``skip_finished=true`` (a sweep started again after a crash): a run cut short still resumes; a finished one
    is not trained again (its kept row comes back, nothing is appended); an unreadable kept row is trained again;
    without the flag the same command trains afresh. The flag is not part of the run id."""
    cfg = cfg_factory("experiment=smoke", "trainer.val_check_interval=5", "skip_finished=true")
    crash_at_step(cfg, monkeypatch, 12)
    assert run.train(cfg)["resumed_from_step"] == 10
    first = read_rows(cfg.results_dir)
    trainer = run.L.Trainer
    monkeypatch.setattr(run.L, "Trainer", lambda *a, **k: pytest.fail("a finished run was trained again"))
    assert run.train(cfg) == first[0] and read_rows(cfg.results_dir) == first
    monkeypatch.setattr(run.L, "Trainer", trainer)
    fresh = run.train(cfg_factory("experiment=smoke", "trainer.val_check_interval=5"))
    assert fresh["run_id"] == first[0]["run_id"] and fresh["resumed_from_step"] is None
    kept = Path(cfg.checkpoint_dir) / fresh["run_id"] / run.FINISHED
    assert json.loads(kept.read_text())["wall_seconds"] == fresh["wall_seconds"]  # the latest finish is kept
    kept.write_text("{not json")
    run.train(cfg)
    assert len(read_rows(cfg.results_dir)) == 3


def test_a_run_cut_under_its_old_id_resumes_under_the_new_one(cfg_factory, monkeypatch, tmp_path):
    # Run ids once included the protocol table; a run cut short then must still continue, not start again.
    cfg = cfg_factory("experiment=smoke", "trainer.val_check_interval=5")
    crash_at_step(cfg, monkeypatch, 12)
    config = OmegaConf.to_container(cfg, resolve=True)
    new_dir, old_dir = (tmp_path / "ckpt" / run.run_id(config, legacy=legacy) for legacy in (False, True))
    assert new_dir != old_dir
    new_dir.rename(old_dir)  # as the old code left it
    row = run.train(cfg)
    assert row["resumed_from_step"] == 10 and row["run_id"] == new_dir.name
    assert not old_dir.exists()


def test_train_seconds_exclude_validation_but_not_the_sanity_check(monkeypatch):
    """The sanity check validates before training starts, outside the timed span: subtracting it as well made
    train_seconds negative once a compiled model's first validation (compilation) took longer than the training."""
    from types import SimpleNamespace

    now = [0.0]
    monkeypatch.setattr("lra.callbacks.time.perf_counter", lambda: now[0])
    timer = ThroughputMonitor()
    trainer = SimpleNamespace(training=False, sanity_checking=True, state=SimpleNamespace(fn="fit"), global_step=0)
    for t, hook in [(0.0, timer.on_validation_start), (50.0, timer.on_validation_end), (100.0, timer.on_train_start)]:
        now[0] = t  # sanity check 0-50 s, training from 100 s
        hook(trainer, None)
    trainer.sanity_checking, trainer.training = False, True
    for t, hook in [(110.0, timer.on_validation_start), (130.0, timer.on_validation_end), (200.0, timer.on_train_end)]:
        now[0] = t  # one validation 110-130 s, end at 200 s
        hook(trainer, None)
    assert timer.train_seconds == 200.0 - 100.0 - 20.0
    assert timer.val_seconds == 20.0


def test_speed_knobs_keep_the_run_id_so_a_cut_run_resumes_with_other_values(cfg_factory):
    """A run cut short on one machine may resume with another evaluation batch or padding (neither changes the
    result); anything that changes the result starts a new run."""
    config = OmegaConf.to_container(cfg_factory("experiment=smoke"), resolve=True)
    same = OmegaConf.to_container(
        cfg_factory("experiment=smoke", "task.eval_batch_size=256", "task.pad_multiple=256"), resolve=True
    )
    other = OmegaConf.to_container(cfg_factory("experiment=smoke", "task.batch_size=8"), resolve=True)
    run_id = run.base_row(config, [])["run_id"]
    assert run.base_row(same, [])["run_id"] == run_id != run.base_row(other, [])["run_id"]
    # the LePE layout of nalaformer too (the same convolution); its other options change the run
    nala = [
        run.base_row(
            OmegaConf.to_container(cfg_factory("experiment=smoke", "attention=nalaformer", *o), resolve=True), []
        )
        for o in ([], ["attention.lepe_impl=conv1d"], ["attention.lepe_kernel=3"])
    ]
    assert nala[0]["run_id"] == nala[1]["run_id"] != nala[2]["run_id"]
    # and nystromformer's skip conv (session 20: nystromformer s0, cut with conv2d, may resume with triton)
    nys = [
        run.base_row(
            OmegaConf.to_container(cfg_factory("experiment=smoke", "attention=nystromformer", *o), resolve=True), []
        )
        for o in ([], ["attention.conv_impl=triton"], ["attention.conv_kernel=5"])
    ]
    assert nys[0]["run_id"] == nys[1]["run_id"] != nys[2]["run_id"]
    # the key is new: the s0 run cut before it came keeps its id
    older = OmegaConf.to_container(cfg_factory("experiment=smoke", "attention=nystromformer"), resolve=True)
    del older["attention"]["conv_impl"]
    assert run.run_id(older) == nys[0]["run_id"]


def test_a_preset_added_to_the_table_or_a_key_added_at_its_old_default_keeps_run_ids(cfg_factory):
    """Runs cut short before a change must still find their checkpoints: the protocol table (task.protocols) is
    not part of a run's identity, nor is a key added later while it holds the default that behaves as before."""
    config = OmegaConf.to_container(cfg_factory("experiment=lra_lite"), resolve=True)
    run_id = run.base_row(config, [])["run_id"]
    grown = copy.deepcopy(config)
    grown["task"]["protocols"]["lra_new"] = {"batch_size": 7}
    older = copy.deepcopy(config)
    del older["trainer"]["select_best_after"]  # a row written before the key existed
    assert run.base_row(grown, [])["run_id"] == run.base_row(older, [])["run_id"] == run_id
    changed = copy.deepcopy(config)
    changed["trainer"]["select_best_after"] = 0.2
    assert run.base_row(changed, [])["run_id"] != run_id


@pytest.mark.parametrize(
    "over, group, key, default, other",
    [
        ("attention=linear", "attention", "feature_map", "elu", "relu"),
        ("attention=performer", "attention", "kernel", "exp", "relu"),
        ("attention=linear", "attention", "shift", 0.0, 1.0),
        ("attention=nalaformer", "attention", "shift", 0.0, 1.0),
        ("attention=nalaformer", "attention", "key_power", 3, 1),
        ("attention=nalaformer", "attention", "unit_queries", True, False),
        ("attention=nalaformer", "attention", "out_norm", True, False),
        ("attention=polaformer", "attention", "shift", 0.0, 1.0),
        ("attention=softmax", "model", "mask_attention", True, False),
    ],
)
def test_a_key_added_at_its_default_keeps_the_run_ids(cfg_factory, over, group, key, default, other):
    """Keys that came after runs were cut and resumed across calls (session 16): at the shipped default a run keeps
    the id it had without the key; the other value (a diagnostic) is another run."""
    config = OmegaConf.to_container(cfg_factory("experiment=lra_lite", over), resolve=True)
    assert config[group][key] == default
    older = copy.deepcopy(config)
    del older[group][key]
    changed = copy.deepcopy(config)
    changed[group][key] = other
    assert run.run_id(config) == run.run_id(older) != run.run_id(changed)


def test_best_checkpoint_ignores_validations_before_its_start_step(monkeypatch):
    seen = []
    monkeypatch.setattr(
        ModelCheckpoint, "on_validation_end", lambda self, trainer, module: seen.append(trainer.global_step)
    )
    best = BestCheckpoint(monitor="val/acc", mode="max", start_step=4)
    for step in (2, 3, 4, 6):
        best.on_validation_end(SimpleNamespace(global_step=step), None)
    assert seen == [4, 6]
    # a run cut before this class existed resumes with its best score: the state is filed under the same key
    kwargs = dict(dirpath="ckpt", filename="best", monitor="val/acc", mode="max")
    assert BestCheckpoint(**kwargs, start_step=4).state_key == ModelCheckpoint(**kwargs).state_key


def test_select_best_after_keeps_no_best_checkpoint_before_its_step(cfg_factory, tmp_path):
    # 8 steps, validation every 2: from 50% on, the tested checkpoint is one of steps 4, 6, 8 whatever the scores
    cfg = cfg_factory(
        "experiment=smoke", "trainer.max_steps=8", "trainer.val_check_interval=2", "trainer.select_best_after=0.5"
    )
    run.train(cfg)
    ckpt = torch.load(next((tmp_path / "ckpt").glob("*/best.ckpt")), map_location="cpu", weights_only=False)
    assert ckpt["global_step"] >= 4
    with pytest.raises(LRAError, match=r"trainer.select_best_after=1.5: expected a fraction of max_steps in \[0, 1\)"):
        run.train(cfg_factory("experiment=smoke", "trainer.select_best_after=1.5"))


@pytest.mark.parametrize("attention", available())
def test_every_registered_attention_trains_through_run_py(cfg_factory, attention):
    cfg = cfg_factory(
        "experiment=smoke", f"attention={attention}", "trainer.max_steps=4", "trainer.val_check_interval=2"
    )
    row = run.train(cfg)
    assert row["status"] == "ok" and row["attention"] == attention and row["steps"] == 4


def test_resumed_run_reaches_the_same_result(cfg_factory, monkeypatch, tmp_path, recwarn):
    """Interrupted mid-epoch and resumed with the same command, a run ends exactly where an uninterrupted one
    does: same batches in the same order, same dropout masks, same optimiser and schedule state."""
    over = ("experiment=smoke", "trainer.val_check_interval=5", "model.dropout=0.1")
    straight = run.train(cfg_factory(*over, f"results_dir={tmp_path / 'a'}", f"checkpoint_dir={tmp_path / 'ca'}"))
    cfg = cfg_factory(*over, f"results_dir={tmp_path / 'b'}", f"checkpoint_dir={tmp_path / 'cb'}")
    crash_at_step(cfg, monkeypatch, 12)  # the last checkpoint is at step 10, inside the first epoch (16 batches)
    resumed = run.train(cfg)
    assert resumed["resumed_from_step"] == 10
    # and without Lightning's warning that the dataloader cannot resume mid-epoch (it does, through the datamodule)
    assert not [w for w in recwarn if "ended before the epoch ended" in str(w.message)]
    for key in ("final_train_loss", "best_val_acc", "test_acc"):
        assert resumed[key] == straight[key], key
    # the learning curve too: one row per validation, none repeated by the resumed process
    curves = [pd.read_csv(tmp_path / d / row["curve"]) for d, row in (("a", straight), ("b", resumed))]
    assert curves[0].step.tolist() == [5, 10, 15, 20]
    pd.testing.assert_frame_equal(curves[0], curves[1])


def test_compile_mode_reaches_torch_compile(cfg_factory, monkeypatch):
    """trainer.compile_mode=reduce-overhead (CUDA graphs) is what torch.compile is asked for."""
    calls = []

    def fake_compile(module, **kwargs):
        calls.append(kwargs)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    row = run.train(
        cfg_factory(
            "experiment=smoke", "trainer.max_steps=2", "trainer.compile=true", "trainer.compile_mode=reduce-overhead"
        )
    )
    assert row["status"] == "ok" and row["compile"] is True
    assert calls == [{"dynamic": True, "mode": "reduce-overhead"}]
    # trainer.compile_dynamic=false: one graph per shape (a workaround to try for the CUDA-graph crashes)
    run.train(
        cfg_factory("experiment=smoke", "trainer.max_steps=2", "trainer.compile=true", "trainer.compile_dynamic=false")
    )
    assert calls[1] == {"dynamic": False, "mode": None}


def test_a_run_cut_in_eager_mode_resumes_compiled(cfg_factory, monkeypatch, tmp_path):
    """trainer.compile is a speed knob: same run id, and a checkpoint written by the eager model loads into the
    compiled one (compiled in place, parameter names unchanged), so a long run can switch to CUDA graphs midway."""
    over = ("experiment=smoke", "trainer.val_check_interval=5", f"checkpoint_dir={tmp_path / 'c'}")
    eager, compiled = cfg_factory(*over), cfg_factory(*over, "trainer.compile=true")
    assert (
        run.base_row(OmegaConf.to_container(eager, resolve=True), [])["run_id"]
        == run.base_row(OmegaConf.to_container(compiled, resolve=True), [])["run_id"]
    )
    crash_at_step(eager, monkeypatch, 7)
    row = run.train(compiled)
    assert row["status"] == "ok" and row["compile"] is True and row["resumed_from_step"] == 5


def test_progress_lists_cut_runs_until_they_finish(cfg_factory, monkeypatch, capsys):
    """lra.progress shows a cut run at the step it will resume from; once the run finishes it is gone."""
    from lra import progress

    cfg = cfg_factory("experiment=smoke", "trainer.val_check_interval=5")
    crash_at_step(cfg, monkeypatch, 12)  # last.ckpt at step 10, written before that step's validation
    table = progress.in_progress(Path(cfg.checkpoint_dir))
    assert table.run_id.tolist() == [run.base_row(OmegaConf.to_container(cfg, resolve=True), [])["run_id"]]
    assert table.step.tolist() == [10] and table.total_steps.tolist() == [cfg.trainer.max_steps]
    assert table.done.iloc[0] == pytest.approx(100 * 10 / cfg.trainer.max_steps, abs=0.1)
    assert 0 <= table.best_val_acc.iloc[0] <= 100  # the validation at step 5
    run.train(cfg)
    assert progress.main([str(cfg.checkpoint_dir)]) == 0 and "no cut runs" in capsys.readouterr().out
    assert progress.main([str(Path(cfg.checkpoint_dir) / "missing")]) == 2


def test_an_unreadable_checkpoint_is_named_with_the_fix(cfg_factory, monkeypatch, capsys):
    """A last.ckpt cut short (a full disk, a killed copy): the run stops with one line naming the file and what to
    do, resume=false then starts afresh; lra.progress warns about it and still lists the other cut runs."""
    from lra import progress

    cfg = cfg_factory("experiment=smoke", "trainer.val_check_interval=5")
    crash_at_step(cfg, monkeypatch, 12)
    other = Path(cfg.checkpoint_dir) / "another-run"
    other.mkdir()
    last = next(p for p in Path(cfg.checkpoint_dir).glob("*/last.ckpt") if p.parent != other)
    (other / "last.ckpt").write_bytes(last.read_bytes())
    last.write_bytes(b"\x80\x02garbage")
    with pytest.raises(LRAError, match=r"last.ckpt: unreadable checkpoint .*delete it, or pass resume=false"):
        run.train(cfg)
    assert progress.in_progress(Path(cfg.checkpoint_dir)).run_id.tolist() == ["another-run"]
    assert "unreadable checkpoint" in capsys.readouterr().err
    cfg.resume = False
    assert run.train(cfg)["resumed_from_step"] is None


def test_no_per_step_host_sync_for_the_progress_bar_when_it_is_off(cfg_factory, monkeypatch):
    """With the bar off (GPU sessions), Lightning must not turn the training metrics into Python numbers every
    step: each ``.item()`` is a host-device sync on a GPU (two per step were seen in a Pathfinder profile)."""
    from lightning.pytorch.trainer.connectors.logger_connector import result

    counts = {"scalars": 0}
    original = result.convert_tensors_to_scalars

    def counting(data):
        counts["scalars"] += 1  # one metric value per call
        return original(data)

    monkeypatch.setattr(result, "convert_tensors_to_scalars", counting)
    over = ("experiment=smoke", "trainer.max_steps=40", "trainer.val_check_interval=40", "trainer.log_every_n_steps=1")
    row = run.train(cfg_factory(*over, "trainer.enable_progress_bar=false"))
    assert row["status"] == "ok" and counts["scalars"] <= 10  # validation's (sanity check too) and test's only
    counts["scalars"] = 0
    run.train(cfg_factory(*over, "trainer.enable_progress_bar=true", "resume=false", "seed=1"))
    assert counts["scalars"] >= 2 * 40  # with a bar, loss and accuracy are shown, and converted, every step


def test_evaluation_metrics_do_not_check_inputs_each_batch():
    """torchmetrics' input checks (torch.unique, .any()) sync the GPU on every evaluation batch; they are off, and
    the metrics still compute the accuracy and the mean loss."""
    from lra.module import LRAClassifier

    module = LRAClassifier(
        dict(
            vocab_size=8,
            max_len=4,
            dual=False,
            dim=8,
            depth=1,
            num_heads=2,
            mlp_dim=8,
            head_dim=8,
            dropout=0.0,
            attention={"name": "softmax"},
        ),
        {"lr": 1e-3},
        num_classes=3,
        total_steps=1,
    )
    assert not module.val_acc.validate_args and not module.test_acc.validate_args
    module.val_acc.update(torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), torch.tensor([1, 2]))
    module.val_loss.update(torch.tensor([2.0, 2.0, 2.0]))  # per-example losses of two batches
    module.val_loss.update(torch.tensor([4.0]))
    assert module.val_acc.compute() == pytest.approx(0.5) and module.val_loss.compute() == pytest.approx(2.5)


def test_compiled_evaluation_has_its_own_graph_and_the_eager_logits(cfg_factory):
    """trainer.compile_eval: evaluation batches of other sizes and lengths go through a compile of their own (at
    most one recompile, for dynamic shapes), with the eager model's logits; the module stays uncompiled."""
    from lra.module import LRAClassifier

    torch._dynamo.reset()
    config = OmegaConf.to_container(cfg_factory("experiment=smoke"), resolve=True)
    module = LRAClassifier.from_config(config, total_steps=10).eval()
    batches = [torch.randint(1, 10, (4, 32)), torch.randint(1, 10, (3, 20)), torch.randint(1, 10, (5, 27))]
    with torch.inference_mode():
        eager = [module.evaluate(ids) for ids in batches]
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    module.compile_evaluation(backend=counting_backend)
    with torch.inference_mode():
        compiled = [module.evaluate(ids) for ids in batches]
    assert 1 <= len(graphs) <= 2
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b)
    assert module.model._compiled_call_impl is None  # training's path untouched


def test_compile_eval_is_wired_and_keeps_the_run_id(cfg_factory, tmp_path, monkeypatch):
    from lra.module import LRAClassifier

    torch._dynamo.reset()
    graphs = []
    compile_evaluation = LRAClassifier.compile_evaluation

    def counting(self):
        compile_evaluation(self, backend=lambda gm, _: graphs.append(gm) or gm.forward)

    monkeypatch.setattr(LRAClassifier, "compile_evaluation", counting)
    over = ("experiment=smoke", f"results_dir={tmp_path}", f"checkpoint_dir={tmp_path / 'ck'}")
    row = run.train(cfg_factory(*over, "trainer.compile_eval=true"))
    assert graphs and row["compile_eval"] is True and row["status"] == "ok"
    plain = OmegaConf.to_container(cfg_factory(*over), resolve=True)
    assert row["run_id"] == run.run_id(plain)  # the same model evaluated: the same run


def test_evaluation_runs_the_model_uncompiled(cfg_factory):
    """Under trainer.compile only training goes through the compiled model: evaluation batches of other sizes
    would record CUDA graphs of their own beside training's (a resumed nalaformer run died of that on the H200)."""
    from lra.module import LRAClassifier

    config = OmegaConf.to_container(cfg_factory("experiment=smoke"), resolve=True)
    module = LRAClassifier.from_config(config, total_steps=10)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    module.model.compile(backend=counting_backend, dynamic=True)
    ids, labels = torch.randint(1, 10, (4, 32)), torch.randint(0, config["task"]["num_classes"], (4,))
    module.eval()
    module.validation_step((ids, labels), 0)
    module.test_step((ids, labels), 0)
    assert graphs == []
    module.train()
    module.training_step((ids, labels), 0)
    assert len(graphs) == 1


def test_gradient_clipping_works_with_a_fused_optimizer_under_mixed_precision():
    """Lightning refuses to clip for a fused optimizer under mixed precision; the GPU runs use a fused AdamW, so
    `experiment=lra_sky` (value clipping at 1.0) died at its first step on the H200. The module clips itself: the
    gradients the optimiser steps with are clipped, by value and by norm."""
    import lightning as L

    from lra.module import LRAClassifier

    net = dict(vocab_size=8, max_len=6, dual=False, dim=8, depth=1, num_heads=2, mlp_dim=8, head_dim=4, dropout=0.0)
    seen: list[torch.Tensor] = []

    class Fused(LRAClassifier):  # what configure_optimizers builds on a GPU, here on the CPU
        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.parameters(), lr=1e-3, fused=True)
            opt.register_step_post_hook(
                lambda o, *_: seen.append(torch.cat([p.grad.flatten() for p in self.parameters()]))
            )
            return opt

    ids, labels = torch.randint(1, 8, (16, 6)), torch.randint(0, 3, (16,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, labels), batch_size=8)
    for algorithm, clip in (("value", 1e-4), ("norm", 1e-3)):
        torch.manual_seed(0)
        module = Fused({**net, "attention": {"name": "softmax"}}, {"lr": 1e-3}, num_classes=3, total_steps=2)
        trainer = L.Trainer(
            accelerator="cpu",
            precision="bf16-mixed",
            max_steps=2,
            gradient_clip_val=clip,
            gradient_clip_algorithm=algorithm,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        seen.clear()
        trainer.fit(module, loader)
        assert len(seen) == 2
        for grad in seen:
            size = grad.abs().max() if algorithm == "value" else grad.norm()
            assert 0 < size <= clip * 1.0001, (algorithm, float(size))
