"""Seeded, prefetching mini-batch loaders over stored datasets, for asyncio and for torch."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .datasets import SPLIT_NAMES, Dataset, DatasetInfo
from .errors import DataValidationError, NotConnectedError
from .validation import check_int, check_seed

if TYPE_CHECKING:
    import torch

__all__ = ["MLDataLoader"]

Batch = tuple[NDArray[np.float64], NDArray[Any]]


class MLDataLoader:
    """Mini-batches ``(x, y)`` of one split of a stored dataset.

    Each ``async for`` over the loader is one epoch: every sample of the split exactly once,
    in an order drawn from ``(seed, epoch)``, so it differs from epoch to epoch and is the
    same whenever the same seed and epoch come round again (``set_epoch`` rewinds, which is
    how a resumed training run gets the very batches it would have seen). The dataset is
    read once, on first use; after that the loader needs no connection, so it keeps working
    after ``db.connect()`` has closed. While one batch is in use the next one is gathered
    in a worker thread.
    """

    def __init__(
        self,
        source: Callable[[], Awaitable[Dataset]],
        *,
        name: str,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        split: str | None = None,
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
        if split is not None and split not in SPLIT_NAMES:
            raise DataValidationError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
        self._source: Callable[[], Awaitable[Dataset]] | None = source
        self.name = name
        self.batch_size = batch_size
        self.shuffle = shuffle
        #: The seed in use (drawn from the OS when none was given, so a run can record it).
        self.seed = (
            int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
            if seed is None
            else check_seed(seed)
        )
        self.split = split
        self.drop_last = drop_last
        self.epoch = 0
        self._x: NDArray[np.float64] | None = None
        self._y: NDArray[Any] | None = None
        self._info: DatasetInfo | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ data
    @property
    def loaded(self) -> bool:
        return self._x is not None

    async def load(self) -> MLDataLoader:
        """Read the split from the database (once); returns the loader."""
        async with self._lock:
            if self._x is None:
                if self._source is None:
                    raise NotConnectedError("the loader's database connection is closed")
                dataset = await self._source()
                x, y = dataset.subset(self.split)
                if x.shape[0] == 0:
                    raise DataValidationError(
                        f"split {self.split!r} of dataset {self.name!r} holds no samples"
                    )
                self._x, self._y, self._info = x, y, dataset.info
        return self

    def detach(self) -> None:
        """Called when the database closes: an unloaded loader can no longer load."""
        self._source = None

    @property
    def info(self) -> DatasetInfo:
        if self._info is None:
            raise DataValidationError("the loader has not read its dataset yet: await load()")
        return self._info

    @property
    def num_samples(self) -> int:
        if self._x is None:
            raise DataValidationError("the loader has not read its dataset yet: await load()")
        return int(self._x.shape[0])

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    # ------------------------------------------------------------------ order
    def set_epoch(self, epoch: int) -> None:
        """The next ``async for`` yields epoch ``epoch``'s order."""
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def order(self, epoch: int) -> NDArray[np.int64]:
        n = self.num_samples
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(n).astype(np.int64)

    def _batches(self, epoch: int) -> list[NDArray[np.int64]]:
        order = self.order(epoch)
        cuts = list(range(0, order.size, self.batch_size))
        batches = [order[c : c + self.batch_size] for c in cuts]
        if self.drop_last and batches and batches[-1].size < self.batch_size:
            batches.pop()
        return batches

    def _gather(self, rows: NDArray[np.int64]) -> Batch:
        assert self._x is not None
        assert self._y is not None
        return self._x[rows], self._y[rows]

    # ------------------------------------------------------------------ iteration
    def __aiter__(self) -> AsyncIterator[Batch]:
        return self._epoch()

    async def _epoch(self) -> AsyncIterator[Batch]:
        await self.load()
        epoch = self.epoch
        self.epoch += 1
        batches = self._batches(epoch)
        if not batches:
            return
        pending = asyncio.ensure_future(asyncio.to_thread(self._gather, batches[0]))
        try:
            for k in range(len(batches)):
                batch = await pending
                if k + 1 < len(batches):
                    pending = asyncio.ensure_future(asyncio.to_thread(self._gather, batches[k + 1]))
                yield batch
        finally:
            if not pending.done():
                pending.cancel()

    def iter_epoch(self, epoch: int | None = None) -> Iterator[Batch]:
        """Synchronous iteration over one epoch of a loaded loader (used by ``as_torch``)."""
        if self._x is None:
            raise DataValidationError(
                "the loader has not read its dataset: iterate it once or await loader.load() "
                "inside `async with db.connect()` first"
            )
        if epoch is None:
            epoch = self.epoch
            self.epoch += 1
        for rows in self._batches(epoch):
            yield self._gather(rows)

    def as_torch(self) -> torch.utils.data.DataLoader[Any]:
        """A torch ``DataLoader`` over the same batches, as float32 / int64 (or float32) tensors."""
        from .torch_data import torch_loader

        return torch_loader(self)

    def __repr__(self) -> str:
        return (
            f"MLDataLoader(name={self.name!r}, split={self.split!r}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})"
        )
