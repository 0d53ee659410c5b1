"""Measurements for the result row (training time without validation, throughput, peak memory, the learning
curve) and the checkpoint the test uses."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lra.results import append_csv_row, write_csv


class ThroughputMonitor(L.Callback):
    """Times the fit minus validation and counts the token positions the model processed (padding included,
    since that is what attention pays for)."""

    def __init__(self, warmup_steps: int = 20) -> None:
        self.train_seconds = 0.0
        self.tokens = 0
        self._fit_start = self._val_start = 0.0
        self.val_seconds = 0.0  # validation inside the fit (this process): evaluation is a large share of a run
        # Steady-state rate: from the end of step ``warmup_steps`` (compilation, cudnn autotuning and the first
        # allocations are over by then) to the end of training, validation excluded.
        self.warmup_steps = warmup_steps
        self._steady_start: float | None = None
        self._steady_from = 0
        self._steady_val = 0.0
        self.steady_steps = 0
        self.steady_seconds = 0.0
        # A run cut short and resumed is one run that cost several processes: the checkpoint carries what the
        # earlier ones spent up to it (fit wall time and validation), so the row can say what the whole run cost.
        self._process_start: float | None = None
        self.earlier_fit_seconds = 0.0
        self.earlier_val_seconds = 0.0
        self._loaded: dict[str, float] | None = None

    def setup(self, trainer, pl_module, stage):
        if stage == "fit":
            self._process_start = time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        spent = time.perf_counter() - self._process_start if self._process_start is not None else 0.0
        return {
            "fit_seconds": self.earlier_fit_seconds + spent,
            "val_seconds": self.earlier_val_seconds + self.val_seconds,
        }

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        # Taken up when training starts: testing from the best checkpoint loads callback state as well, and that
        # is not an earlier process's time.
        self._loaded = state_dict

    def on_train_start(self, trainer, pl_module):
        loaded = self._loaded or {}
        self.earlier_fit_seconds = float(loaded.get("fit_seconds", 0.0))
        self.earlier_val_seconds = float(loaded.get("val_seconds", 0.0))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.tokens += batch[0].numel()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._steady_start is None and trainer.global_step >= self.warmup_steps:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._steady_start, self._steady_from = time.perf_counter(), trainer.global_step
            self._steady_val = self.val_seconds

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        # The sanity check's validation runs before on_train_start: outside the timed span, so not subtracted
        # from it (it was, and a compiled model's first validation made train_seconds negative).
        if (trainer.training or trainer.state.fn == "fit") and not trainer.sanity_checking:
            self.val_seconds += time.perf_counter() - self._val_start

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.train_seconds = now - self._fit_start - self.val_seconds
        if self._steady_start is not None:
            self.steady_seconds = now - self._steady_start - (self.val_seconds - self._steady_val)
            self.steady_steps = trainer.global_step - self._steady_from


class LearningCurve(L.Callback):
    """One CSV row per validation: step, validation accuracy and loss, the latest logged training loss and
    accuracy. The file lives beside the run's checkpoints, so a run cut and resumed on another machine keeps
    its whole history; a resumed run first drops the rows past its checkpoint (those steps are trained again).
    Why: a final accuracy alone cannot tell a run that never left chance from one that peaked and declined."""

    KEYS = ("val/acc", "val/loss", "train/loss", "train/acc")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero and self.path.exists():
            import pandas as pd

            table = pd.read_csv(self.path)
            kept = table[table.step <= trainer.global_step]
            if len(kept) < len(table):
                write_csv(self.path, kept)

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        metrics = trainer.callback_metrics
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        row.update({key: float(metrics[key]) for key in self.KEYS if key in metrics})
        append_csv_row(self.path, row)


def peak_memory_mb() -> tuple[float, str]:
    """Peak CUDA memory allocated by tensors, or the process's peak resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"


class BestCheckpoint(ModelCheckpoint):
    """The best-validation checkpoint that the test uses, kept only from step ``start_step`` on: Skyformer's
    protocol saves its best-dev checkpoint only after 20% of the steps (shared/specs/lra.md 4b), so an early peak
    on a noisy validation subset is never the one tested."""

    def __init__(self, *args, start_step: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start_step = start_step

    def on_validation_end(self, trainer, pl_module):
        if trainer.global_step >= self.start_step:
            super().on_validation_end(trainer, pl_module)

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key: checkpoints written before this class keep their best score when resumed."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)
