"""Train, validate and test one LRA model, then append one row to ``${results_dir}/runs.jsonl``.

    python run.py task=listops attention=nalaformer experiment=smoke
    python run.py -m task=listops,pathfinder attention=softmax,nalaformer seed=0,1,2

Read top to bottom: config -> data -> model -> trainer -> result row. In a sweep (``-m``) a failing run records
a ``failed`` row and the sweep goes on; a single run exits non-zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from attention_zoo import SAME_RESULT_KEYS
from lra import LRAError, load_checkpoint
from lra.callbacks import BestCheckpoint, LearningCurve, ThroughputMonitor, peak_memory_mb
from lra.data.datamodule import LRADataModule
from lra.model import compile_model
from lra.module import DECAYS, LRAClassifier
from lra.results import append_row, git_commit, row_json, write_csv, write_text

log = logging.getLogger("lra")
ROOT = Path(__file__).resolve().parent
FINISHED = "finished.json"  # in a run's checkpoint folder: its result row, written when it finished


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """One run; returns the row it appended."""
    config = OmegaConf.to_container(cfg, resolve=True)
    task = config["task"]
    row = base_row(config, overrides or [])
    check_config(config)
    ckpt_dir = Path(cfg.checkpoint_dir) / row["run_id"]
    log.info("run %s (checkpoints in %s)", row["run_id"], ckpt_dir)
    finished = ckpt_dir / FINISHED
    if cfg.get("skip_finished") and finished.exists():  # a sweep started again after a crash trains what is left
        try:
            done = json.loads(finished.read_text())
            log.info(
                "run %s finished already (test_acc=%.4f, %s): skipped (skip_finished=true)",
                row["run_id"],
                done["test_acc"],
                done["time"],
            )
            return done
        except (ValueError, KeyError, TypeError) as err:
            log.warning("%s unreadable (%s): the run is trained again", finished, err)
    L.seed_everything(cfg.seed, workers=True)

    # data
    # A protocol that validates on part of the split (trainer.limit_val_batches batches of the training batch size)
    # gets the first examples of the file; the datamodule picks them, since its batches go in length order.
    t = dict(config["trainer"])
    val_batches = t.pop("limit_val_batches")
    data = LRADataModule(
        task,
        cfg.data_dir,
        task["batch_size"],
        seed=cfg.seed,
        num_workers=cfg.num_workers,
        cache_dir=cfg.cache_dir,
        eval_batch_size=task.get("eval_batch_size"),
        val_examples=int(val_batches * task["batch_size"]) if val_batches else None,
        data_on_device=cfg.data_on_device,
    )
    splits = data.prepare()
    row["data_source"] = splits.source
    row["data_generator"] = splits.generator
    row["data"] = "synthetic" if splits.source == "synthetic" else "real"
    row["majority_acc"] = data.majority_accuracy()

    # model
    try:
        model = LRAClassifier.from_config(config, total_steps=cfg.trainer.max_steps)
    except (ValueError, KeyError) as err:  # a bad model/attention option: say which, no traceback
        raise LRAError(f"cannot build the model: {err.args[0] if err.args else err}") from None
    row["params"] = sum(p.numel() for p in model.parameters())

    # trainer
    legacy = Path(cfg.checkpoint_dir) / run_id(config, legacy=True)
    if legacy != ckpt_dir and legacy.exists() and not ckpt_dir.exists():  # a run cut short under the old ids
        with contextlib.suppress(OSError):  # another rank of the same run renamed it first
            legacy.rename(ckpt_dir)
        log.info("checkpoints of %s moved to %s (run ids no longer include the protocol table)", legacy, ckpt_dir)
    resume = ckpt_dir / "last.ckpt"
    start = math.ceil(t.pop("select_best_after") * t["max_steps"])
    best = BestCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/acc", mode="max", start_step=start)
    # A second checkpoint, overwritten at every validation, is what an interrupted run resumes from.
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        every_n_train_steps=cfg.trainer.val_check_interval,
        enable_version_counter=False,
    )
    timer = ThroughputMonitor()
    curve = LearningCurve(ckpt_dir / "curve.csv")
    callbacks: list[L.Callback] = [best, last, timer, curve]
    compile_mode, compile_dynamic = t.pop("compile_mode"), t.pop("compile_dynamic")
    # Fuses the element-wise work of the whole model; graphs are reused across steps.
    if t.pop("compile"):
        compile_model(model.model, mode=compile_mode, dynamic=compile_dynamic)
    if t.pop("compile_eval"):
        model.compile_evaluation()
    if t.pop("enable_progress_bar"):
        callbacks.append(RichProgressBar(refresh_rate=t.pop("progress_refresh")))
    else:
        t.pop("progress_refresh")
        t["enable_progress_bar"] = False
    if t["precision"] == "auto":
        t["precision"] = "bf16-mixed" if torch.cuda.is_available() else "32-true"
    try:
        trainer = L.Trainer(
            **t,
            max_epochs=-1,
            check_val_every_n_epoch=None,
            callbacks=callbacks,
            default_root_dir=str(ckpt_dir),
            logger=False,
            deterministic=False,
            use_distributed_sampler=False,
        )  # LRADataModule shards its length-grouped batches itself
    except (TypeError, ValueError, MisconfigurationException) as err:  # trainer.precision=bf17, +trainer.max_step=10
        raise LRAError(f"a trainer.* setting was refused: {err}") from None
    ckpt_path = str(resume) if cfg.resume and resume.exists() else None
    resumed_from = _resumed_step(ckpt_path)
    if ckpt_path:
        log.info("resuming from %s (step %d)", ckpt_path, resumed_from)
    fit_start = time.perf_counter()
    with warnings.catch_warnings():
        # Lightning warns that a run resumed mid-epoch has a dataloader that cannot resume: ours does, through the
        # datamodule's state (epoch, batches done; the sampler skips those), tested to end where an uninterrupted
        # run ends.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    train_loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    test = trainer.test(model, datamodule=data, ckpt_path=best.best_model_path or None, verbose=False)
    wall = time.perf_counter() - fit_start

    # result row
    steps = trainer.global_step
    best_val = best.best_model_score
    row.update(
        status="ok" if math.isfinite(train_loss) else "diverged",
        test_acc=float(test[0]["test/acc"]),
        best_val_acc=float(best_val) if best_val is not None else None,
        steps=steps,
        train_seconds=round(timer.train_seconds, 3),
        # what the run cost on the machine (issue 7's time target), validation and test included; this process only
        val_seconds=round(timer.val_seconds, 3),
        wall_seconds=round(wall, 3),
        # the same over every process of a resumed run, each counted up to the checkpoint the next one resumed from
        run_wall_seconds=round(timer.earlier_fit_seconds + wall, 3),
        run_val_seconds=round(timer.earlier_val_seconds + timer.val_seconds, 3),
        # this process's steps only: a resumed run's earlier steps were timed by the process that ran them
        steps_per_sec=(steps - (resumed_from or 0)) / timer.train_seconds if timer.train_seconds else None,
        tokens_per_sec=timer.tokens / timer.train_seconds if timer.train_seconds else None,
        final_train_loss=train_loss if math.isfinite(train_loss) else None,
        resumed_from_step=resumed_from,
        steady_steps_per_sec=timer.steady_steps / timer.steady_seconds if timer.steady_seconds > 0 else None,
        compile=bool(cfg.trainer.compile),
        compile_eval=bool(cfg.trainer.get("compile_eval", False)),
    )
    row["peak_mem_mb"], row["peak_mem_kind"] = peak_memory_mb()
    row["world_size"] = trainer.world_size
    if not trainer.is_global_zero:  # under DDP, rank 0 alone records the run
        return row
    if curve.path.exists():  # the learning curve goes beside the result rows (results/curves/<run_id>.csv)
        import pandas as pd  # here, not at start-up: nothing else in a run needs it

        row["curve"] = f"curves/{row['run_id']}.csv"
        write_csv(Path(cfg.results_dir) / row["curve"], pd.read_csv(curve.path))
    append_row(cfg.results_dir, row)
    # finished: the same command later starts a fresh run (a seed run again, e.g. on fixed code), unless
    # skip_finished=true, which reads the row kept here instead
    write_text(finished, row_json(row))
    resume.unlink(missing_ok=True)
    log.info(
        "test_acc=%.4f (majority class %.4f) -> %s/runs.jsonl", row["test_acc"], row["majority_acc"], cfg.results_dir
    )
    return row


POSITIVE_INTS = {
    "task": ("max_len", "batch_size", "vocab_size", "num_classes"),
    "model": ("dim", "depth", "num_heads", "mlp_dim", "head_dim"),
    "trainer": ("max_steps", "val_check_interval"),
}
OPTIONAL_POSITIVE_INTS = {"task": ("eval_batch_size", "pad_multiple"), "trainer": ("limit_val_batches",)}  # or null
RESULT_NEUTRAL_TASK_KEYS = ("eval_batch_size", "pad_multiple")
RESULT_NEUTRAL_TRAINER_KEYS = (
    "compile",
    "compile_mode",
    "compile_dynamic",
    "compile_eval",
    "enable_progress_bar",
    "progress_refresh",
)
ADDED_KEYS = {
    ("trainer", "select_best_after"): 0.0,
    ("attention", "rope_pairing"): "across_signs",
    ("attention", "feature_map"): "elu",
    ("model", "mask_attention"): True,
    ("attention", "kernel"): "exp",
    ("attention", "shift"): 0.0,
    ("attention", "key_power"): 3,
    ("attention", "unit_queries"): True,
    ("attention", "out_norm"): True,
}  # (group, key): the default that behaves as before the key


def check_config(config: dict[str, Any]) -> None:
    """Catch the common command-line slips (``task.max_len=4k``) with a message naming the field."""
    for optional, table in ((False, POSITIVE_INTS), (True, OPTIONAL_POSITIVE_INTS)):
        for group, keys in table.items():
            for key in keys:
                value = config[group].get(key)
                if optional and value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise LRAError(f"{group}.{key}={value!r}: expected a positive integer" + " or null" * optional)
    lr = config["model"]["optim"].get("lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0:
        raise LRAError(f"model.optim.lr={lr!r}: expected a positive number")
    after = config["trainer"].get("select_best_after")
    if isinstance(after, bool) or not isinstance(after, int | float) or not 0 <= after < 1:
        raise LRAError(f"trainer.select_best_after={after!r}: expected a fraction of max_steps in [0, 1)")
    seed = config.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise LRAError(f"seed={seed!r}: expected a non-negative integer")
    for key in ("resume", "skip_finished"):  # a string such as "no" would read as true
        if not isinstance(config.get(key, False), bool):
            raise LRAError(f"{key}={config[key]!r}: expected true or false")
    decay = config["model"]["optim"].get("decay", "linear")
    if decay not in DECAYS:  # else it fails at the first step, after the data has loaded
        raise LRAError(f"model.optim.decay={decay!r}: expected one of {', '.join(DECAYS)}")


def run_id(config: dict[str, Any], legacy: bool = False) -> str:
    """The same config always gives the same run_id (its checkpoint folder). ``legacy``: the id it had before
    the lra_sky preset came (session 14), when the protocol table (then without it) was part of it: a run cut
    short under that id still resumes."""
    identity = {
        k: v
        for k, v in config.items()
        if k
        not in {
            "results_dir",
            "checkpoint_dir",
            "resume",
            "skip_finished",
            "num_workers",
            "data_on_device",
            "data_dir",
            "cache_dir",
        }
    }
    # Batch shapes for evaluation and padding change the speed, never the result (tested): a run cut short may
    # resume with other values. The protocol presets (task.protocols) are a table the config reads from: the values
    # a run uses are in it already, and a preset added to the table must not rename every run (orphaning the
    # checkpoints of runs cut short).
    identity["task"] = {
        k: v for k, v in config["task"].items() if k not in RESULT_NEUTRAL_TASK_KEYS and k != "protocols"
    }
    if legacy and "protocols" in config["task"]:
        identity["task"]["protocols"] = {k: v for k, v in config["task"]["protocols"].items() if k != "lra_sky"}
    # Nor do compilation (the same model, fused; rounding differs as it does between GPU runs) and the progress bar.
    identity["trainer"] = {k: v for k, v in config["trainer"].items() if k not in RESULT_NEUTRAL_TRAINER_KEYS}
    identity["attention"] = {k: v for k, v in config["attention"].items() if k not in SAME_RESULT_KEYS}
    # A key added after runs began, left at the default that gives the old behaviour, keeps their run ids, so runs
    # cut short before it came still resume.
    for (group, key), default in ADDED_KEYS.items():
        if identity.get(group, {}).get(key, default) == default:
            identity[group].pop(key, None)
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    task, attention = config["task"]["name"], config["attention"].get("_target_") or config["attention"]["name"]
    return f"{task}-{attention}-s{config['seed']}-{digest}"


def base_row(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Everything known before training."""
    task, attention = config["task"]["name"], config["attention"].get("_target_") or config["attention"]["name"]
    return {
        "run_id": run_id(config),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "failed",
        "task": task,
        "attention": attention,
        "seed": config["seed"],
        "protocol": config["protocol"],
        "data": None,
        "data_source": None,
        "data_generator": None,
        "test_acc": None,
        "best_val_acc": None,
        "majority_acc": None,
        "steps": 0,
        "train_seconds": None,
        "steps_per_sec": None,
        "tokens_per_sec": None,
        "peak_mem_mb": None,
        "peak_mem_kind": None,
        "params": None,
        "world_size": None,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "command": " ".join(["python", *sys.argv]),
        "overrides": overrides,
        "config": config,
    }


def _resumed_step(ckpt_path: str | None) -> int | None:
    if not ckpt_path:
        return None
    return int(load_checkpoint(ckpt_path).get("global_step", 0))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    sweeping = hc.mode == RunMode.MULTIRUN
    try:
        train(cfg, overrides)
    except Exception as err:  # one failing run must not lose the sweep
        if rank_zero_only.rank != 0:
            raise
        config = OmegaConf.to_container(cfg, resolve=True)
        row = base_row(config, overrides)
        row["error"] = f"{type(err).__name__}: {err}"
        append_row(cfg.results_dir, row)
        if isinstance(err, LRAError):
            log.error("%s", err)
        else:
            log.error("run failed:\n%s", traceback.format_exc())
        if not sweeping:
            sys.exit(2 if isinstance(err, LRAError) else 1)
        log.error("sweep continues; the failure is recorded in %s/runs.jsonl", cfg.results_dir)


if __name__ == "__main__":
    main()
