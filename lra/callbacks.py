"""Measurements for the result row: training time without validation, throughput and peak memory."""

from __future__ import annotations

import resource
import sys
import time

import lightning as L
import torch


class ThroughputMonitor(L.Callback):
    """Times the fit minus validation and counts the token positions the model processed (padding included,
    since that is what attention pays for)."""

    def __init__(self, warmup_steps: int = 20) -> None:
        self.train_seconds = 0.0
        self.tokens = 0
        self._fit_start = self._val_start = 0.0
        self._val_seconds = 0.0
        # Steady-state rate: from the end of step ``warmup_steps`` (compilation, cudnn autotuning and the first
        # allocations are over by then) to the end of training, validation excluded.
        self.warmup_steps = warmup_steps
        self._steady_start: float | None = None
        self._steady_from = 0
        self._steady_val = 0.0
        self.steady_steps = 0
        self.steady_seconds = 0.0

    def on_train_start(self, trainer, pl_module):
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
            self._steady_val = self._val_seconds

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        # The sanity check's validation runs before on_train_start: outside the timed span, so not subtracted
        # from it (it was, and a compiled model's first validation made train_seconds negative).
        if (trainer.training or trainer.state.fn == "fit") and not trainer.sanity_checking:
            self._val_seconds += time.perf_counter() - self._val_start

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.train_seconds = now - self._fit_start - self._val_seconds
        if self._steady_start is not None:
            self.steady_seconds = now - self._steady_start - (self._val_seconds - self._steady_val)
            self.steady_steps = trainer.global_step - self._steady_from


def peak_memory_mb() -> tuple[float, str]:
    """Peak CUDA memory allocated by tensors, or the process's peak resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"
