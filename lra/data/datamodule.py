"""One LightningDataModule for every task: the task loader supplies arrays, this serves batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from lra.data.tasks import Splits, load_splits


class LRADataModule(L.LightningDataModule):
    def __init__(self, task: dict[str, Any], data_dir: str | Path, batch_size: int, seed: int = 0,
                 num_workers: int = 0):
        super().__init__()
        self.task, self.data_dir, self.seed = task, data_dir, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.splits: Splits | None = None

    def prepare(self) -> Splits:
        """Load once; called from ``setup`` and by ``run.py`` before training to record the data source."""
        if self.splits is None:
            self.splits = load_splits(self.task, self.data_dir, self.seed)
        return self.splits

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        s = self.prepare()[split]
        data = TensorDataset(torch.from_numpy(s.ids), torch.from_numpy(s.labels))
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, generator=gen,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def majority_accuracy(self) -> float:
        """Test accuracy of always predicting the most frequent training label: the floor to beat."""
        s = self.prepare()
        majority = np.bincount(s.train.labels).argmax()
        return float((s.test.labels == majority).mean())
