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

    def __init__(self) -> None:
        self.train_seconds = 0.0
        self.tokens = 0
        self._fit_start = self._val_start = 0.0
        self._val_seconds = 0.0

    def on_train_start(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.tokens += batch[0].numel()

    def on_validation_start(self, trainer, pl_module):
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if trainer.training or trainer.state.fn == "fit":
            self._val_seconds += time.perf_counter() - self._val_start

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.train_seconds = time.perf_counter() - self._fit_start - self._val_seconds


def peak_memory_mb() -> tuple[float, str]:
    """Peak CUDA memory allocated by tensors, or the process's peak resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_max_rss"
