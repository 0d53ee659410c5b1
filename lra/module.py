"""The LightningModule: cross-entropy training, torchmetrics accuracy, AdamW with warm-up and decay."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lra.model import LRAModel, compiled_forward

DECAYS = ("linear", "cosine", "constant", "rsqrt")


def warmup_decay(step: int, warmup: int, total: int, decay: str) -> float:
    """LR multiplier: linear warm-up to 1, then ``linear`` or ``cosine`` decay to 0 at ``total``, or
    ``constant``. ``linear`` is the OneCycle linear anneal of the Nystromformer/Skyformer code. ``rsqrt`` is the
    LRA JAX schedule ``min(1, t/w) / sqrt(max(t, w))``, whose peak is ``1/sqrt(w)`` (the base lr is a multiplier)."""
    if decay == "rsqrt":
        t = step + 1
        return min(1.0, t / max(1, warmup)) / math.sqrt(max(t, warmup, 1))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"model.optim.decay={decay!r} is not one of {', '.join(DECAYS)}")


class LRAClassifier(L.LightningModule):
    def __init__(self, net: dict[str, Any], optim: dict[str, Any], num_classes: int, total_steps: int):
        super().__init__()
        self.save_hyperparameters()
        self.model = LRAModel(num_classes=num_classes, **net)
        self.optim_cfg, self.total_steps = optim, total_steps
        self._compiled_evaluate: Callable[[torch.Tensor], torch.Tensor] | None = None  # compile_evaluation()
        # Without input checks: they call torch.unique / .any() on every evaluation batch, each a host-device
        # sync on a GPU (labels out of range still fail, in the loss). A NaN loss then shows as a NaN mean.
        # The validation loss is fed per example, so the mean needs no weights.
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
        try:
            self.val_loss = MeanMetric(nan_strategy="disable")
        except ValueError:  # torchmetrics before "disable": the checking mean
            self.val_loss = MeanMetric()

    @classmethod
    def from_config(cls, config: dict[str, Any], total_steps: int) -> LRAClassifier:
        """Build from a resolved run config: the model group plus what the task fixes (vocabulary, length,
        classes, one or two documents) and the attention group."""
        task, model = config["task"], config["model"]
        net = {k: v for k, v in model.items() if k != "optim"}
        net.update(
            vocab_size=task["vocab_size"], max_len=task["max_len"], dual=task["dual"], attention=config["attention"]
        )
        return cls(net, model["optim"], task["num_classes"], total_steps=total_steps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)

    def evaluate(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits from the model as written, bypassing ``trainer.compile`` (``nn.Module.compile`` wraps only
        ``__call__``), or from ``compile_evaluation``'s own compile when ``trainer.compile_eval`` is on. Under CUDA
        graphs every evaluation batch size (and the last, smaller batch) would record graphs of its own, in the
        memory pool that training's graphs use. (Not the cure for the CUDA-graph error of resumed nalaformer runs,
        session 9: that one persisted; docs/training-throughput.md.)"""
        if self._compiled_evaluate is not None:
            return self._compiled_evaluate(ids)
        return self.model.forward(ids)

    def compile_evaluation(self, **options: Any) -> None:
        """Evaluation through a compile of its own (``trainer.compile_eval``): fused kernels but no CUDA graphs,
        so that its batch sizes record nothing in training's graph pool. Validation was 15-40% of a lite run's
        work (docs/training-throughput.md), run eagerly; ``options`` go to ``torch.compile`` (tests: a backend)."""
        self._compiled_evaluate = compiled_forward(self.model, **options)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        """An attention with state that changes between steps (performer's feature redraws) defines
        ``before_training_step()`` and updates it here, outside the (possibly compiled) forward."""
        for module in self.model.modules():
            if hasattr(module, "before_training_step"):
                module.before_training_step()

    def training_step(self, batch, batch_idx):
        ids, labels = batch
        torch.compiler.cudagraph_mark_step_begin()  # each step a new CUDA-graph generation (no-op when eager)
        logits = self(ids)
        loss = F.cross_entropy(logits.float(), labels)
        # Logging two metrics through Lightning every step cost ~2 ms of host time, a quarter of a lite model's
        # host-bound step (docs/training-throughput.md): log every trainer.log_every_n_steps and on the last step.
        trainer = self._trainer
        step = self.global_step
        if trainer is None or step % trainer.log_every_n_steps == 0 or step + 1 >= trainer.max_steps:
            acc = (logits.argmax(-1) == labels).float().mean()
            # Progress-bar metrics are turned into Python numbers at every step (``.item()``: on a GPU a sync
            # that stops the host from queueing the next step ahead); only worth it when a bar shows them.
            bar = trainer is not None and trainer.progress_bar_callback is not None
            self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=bar, on_step=True, on_epoch=False)
        return loss

    # Evaluation batches only update the metrics; they are logged (computed, synced across ranks, reset) once per
    # evaluation: a self.log per batch is host time that a small model's evaluation is mostly made of.
    def validation_step(self, batch, batch_idx):
        ids, labels = batch
        logits = self.evaluate(ids)
        self.val_acc.update(logits, labels)
        # One value per example (not a batch mean with a weight: torchmetrics 1.9 drops weights under "disable").
        self.val_loss.update(F.cross_entropy(logits.float(), labels, reduction="none"))

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val/acc": self.val_acc, "val/loss": self.val_loss}, prog_bar=True)

    def test_step(self, batch, batch_idx):
        ids, labels = batch
        self.test_acc.update(self.evaluate(ids), labels)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Random states go into the checkpoint so that a resumed run draws the same dropout masks."""
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_states"] = {  # tensors and plain numbers only: checkpoints load with weights_only=True
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": pos,
                "has_gauss": has_gauss,
                "gauss": gauss,
            },
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        n = states["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(states["python"])
        if states["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip here rather than through Lightning, which refuses any fused optimizer (it might unscale gradients
        itself); that only happens under fp16's GradScaler, where configure_optimizers turns fusing off. Without
        this, `experiment=lra_sky` and `lra_original` (both clip) failed at their first step on a GPU (session 15)."""
        if not gradient_clip_val:
            return
        params = [p for p in self.parameters() if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def configure_optimizers(self):
        o = self.optim_cfg
        fused = torch.cuda.is_available() and o.get("fused", True)  # one kernel for all parameters
        trainer = self._trainer
        if trainer is not None and trainer.gradient_clip_val and trainer.precision.startswith("16"):
            fused = False  # fp16's GradScaler hands a fused AdamW scaled gradients: they must be unscaled to be clipped
        opt = torch.optim.AdamW(
            self.parameters(),
            lr=o["lr"],
            betas=tuple(o["betas"]),
            eps=o["eps"],
            weight_decay=o["weight_decay"],
            fused=fused or None,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_decay(step, o["warmup_steps"], self.total_steps, o["decay"])
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
