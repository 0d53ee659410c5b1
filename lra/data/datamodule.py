"""One LightningDataModule for every task: the task loader supplies arrays, this serves batches.

Batches are drawn by length: each training batch comes from a shuffled pool of ``50 x batch_size`` examples
sorted by length, and trailing columns that are padding in every row of a batch are cut off. The attention
contract (appending padding never changes valid outputs) makes this exact, and it saves the attention cost of
padding on ListOps, Text and Retrieval, whose lengths vary widely.

Evaluation batches go in length order, so a protocol that evaluates on part of the validation split (NYS: 62
batches of 32 on ListOps) must not simply take the first batches: those would be the shortest examples. The
part is chosen here instead, as the first ``val_examples`` examples in file order, and then batched by length
(``eval_batch_size`` rows a batch: evaluation keeps no activations for a backward pass, so larger batches are
fine, and the result does not depend on them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lra import LRAError
from lra.data.tasks import Split, Splits, load_splits


def valid_lengths(ids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Index after the last non-padding token of each example (max over documents for pairs)."""
    out = np.empty(len(ids), dtype=np.int64)
    for start in range(0, len(ids), chunk):
        nz = np.asarray(ids[start : start + chunk]) != 0
        nz = nz.reshape(len(nz), -1, nz.shape[-1]).any(axis=1)
        out[start : start + chunk] = np.where(nz.any(-1), nz.shape[-1] - np.argmax(nz[:, ::-1], axis=-1), 1)
    return out


class SplitDataset(Dataset):
    """Indexed by a list of example indices (one batch at a time), so memory-mapped arrays are read in one
    gather instead of ``batch_size`` small reads. Batches are cut after their longest row, rounded up to a
    multiple of ``multiple`` (few distinct shapes for compiled graphs, tensor-core friendly sizes).

    With ``device`` set, the split is copied there once and batches are gathered there: no page-locking and no
    host-to-device copy per step. On the H200 those cost ~10 ms of a 33 ms Pathfinder step, which the GPU
    computes in 13 ms (docs/training-throughput.md). The batches are the same either way (tested)."""

    def __init__(self, split: Split, multiple: int = 64, lengths: np.ndarray | None = None, device=None):
        self.ids, self.labels, self.multiple = split.ids, split.labels, multiple
        self.lengths = valid_lengths(split.ids) if lengths is None else lengths
        self.device = torch.device(device) if device is not None else None
        self._resident: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _keep(self, index: np.ndarray) -> int:
        width = self.ids.shape[-1]
        return min(width, -(-int(self.lengths[index].max()) // self.multiple) * self.multiple)

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.sort(np.asarray(index))
        keep = self._keep(index)
        if self.device is None:
            ids = np.asarray(self.ids[index][..., :keep])
            return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(np.asarray(self.labels[index]))
        if self._resident is None:  # token ids fit int16 for every LRA vocabulary (at most 65,536 kept as int32)
            ids = np.asarray(self.ids)
            ids = ids.astype(np.int16 if ids.size == 0 or ids.max() < 2**15 else np.int32)
            labels = np.array(self.labels, dtype=np.int64)  # a copy: a read-only memmap made torch warn
            self._resident = torch.from_numpy(ids).to(self.device), torch.from_numpy(labels).to(self.device)
        ids, labels = self._resident
        rows = torch.from_numpy(index).to(self.device, non_blocking=True)  # pageable, async: no sync
        return ids[rows, ..., :keep].long(), labels[rows]


class LengthGroupedBatches(Sampler[list[int]]):
    """Shuffled batches of similar length (train) or batches in length order (eval).

    Under DDP every rank builds the same batch list (same seed and epoch) and keeps batches ``rank``,
    ``rank + world_size``, ...: the ranks see disjoint data. Training keeps the same number of batches on every
    rank (the few left over are dropped for that epoch); evaluation keeps every batch.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        pool: int = 50,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.lengths, self.batch_size, self.shuffle, self.seed, self.pool = lengths, batch_size, shuffle, seed, pool
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.skip = 0  # batches of this epoch already trained on before a resume (see LRADataModule.state_dict)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        total = -(-len(self.lengths) // self.batch_size)
        if self.shuffle:
            return total // self.world_size
        return len(range(self.rank, total, self.world_size))

    def _batches(self) -> list[np.ndarray]:
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order, size = rng.permutation(len(self.lengths)), self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            group = order[start : start + size]
            group = group[np.argsort(self.lengths[group], kind="stable")]
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        batches = [batches[b] for b in rng.permutation(len(batches))]
        return batches[: len(batches) // self.world_size * self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        log_dir = os.environ.get("LRA_BATCH_LOG_DIR")  # tests: which examples each rank trained on
        skip, self.skip = self.skip, 0
        for batch in self._batches()[self.rank :: self.world_size][skip:]:
            if log_dir and self.shuffle:
                with open(os.path.join(log_dir, f"rank{self.rank}.txt"), "a") as f:
                    f.write(" ".join(map(str, batch.tolist())) + "\n")
            yield batch.tolist()


class LRADataModule(L.LightningDataModule):
    def __init__(
        self,
        task: dict[str, Any],
        data_dir: str | Path,
        batch_size: int,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | Path | None = None,
        eval_batch_size: int | None = None,
        val_examples: int | None = None,
        data_on_device: bool | str = "auto",
    ):
        super().__init__()
        self.task, self.data_dir, self.seed, self.cache_dir = task, data_dir, seed, cache_dir
        self.batch_size, self.num_workers = batch_size, num_workers
        self.eval_batch_size, self.val_examples = eval_batch_size or batch_size, val_examples
        if data_on_device not in (True, False, "auto"):
            raise LRAError(f"data_on_device={data_on_device!r}: expected auto, true or false")
        self.data_on_device = data_on_device
        self.splits: Splits | None = None
        self._resume: dict[str, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: where training stands inside its epoch, so that a resumed run continues
        with the next batch of the same shuffled order instead of restarting the epoch."""
        if self.trainer is None:
            return {}
        loop = self.trainer.fit_loop
        return {
            "epoch": loop.epoch_progress.current.processed,
            "batches_done": loop.epoch_loop.batch_progress.current.processed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = state or None

    def prepare(self) -> Splits:
        """Load once; called from ``setup`` and by ``run.py`` before training to record the data source."""
        if self.splits is None:
            self.splits = load_splits(self.task, self.data_dir, self.seed, self.cache_dir)
        return self.splits

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        s = self.prepare()[split]
        full_lengths = valid_lengths(s.ids)  # where each example's padding starts: batches are cut there
        bucket = self.task.get("bucket_by_length", True)  # without: a stable sort keeps the file order
        lengths = full_lengths if bucket else np.zeros(len(s.labels), dtype=np.int64)
        if split == "val" and self.val_examples:
            lengths = lengths[: self.val_examples]  # a prefix: the sampler's indices stay the dataset's
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        size = self.batch_size if shuffle else self.eval_batch_size
        sampler = LengthGroupedBatches(lengths, size, shuffle, self.seed, rank=rank, world_size=world)
        if shuffle and self._resume:
            sampler.set_epoch(self._resume["epoch"])
            sampler.skip = self._resume["batches_done"]
            self._resume = None
        # Its own generator: creating an iterator would otherwise draw from the global RNG, so a resumed run
        # (which creates iterators at different moments) would get different dropout masks.
        device = self.resident_device(s)
        dataset = SplitDataset(s, self.task.get("pad_multiple") or 64, full_lengths, device)
        workers = self.num_workers if device is None else 0
        return DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,
            num_workers=workers,
            pin_memory=torch.cuda.is_available() and device is None,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def resident_device(self, split: Split) -> torch.device | None:
        """Where batches are gathered: the training device when ``data_on_device`` says so (``auto``: a CUDA
        device with room for the split in a quarter of its free memory), else None (host arrays, copied per
        batch). Resident batches need no loader processes: ``num_workers`` is then ignored."""
        if self.data_on_device is False:
            return None
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.data_on_device is True:
            return device
        if device.type != "cuda":
            return None
        free, _ = torch.cuda.mem_get_info(device)
        return device if split.ids.size * 2 < free / 4 else None

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def majority_accuracy(self) -> float:
        """Test accuracy of always predicting the most frequent training label: the floor to beat."""
        s = self.prepare()
        majority = np.bincount(np.asarray(s.train.labels)).argmax()
        return float((np.asarray(s.test.labels) == majority).mean())
