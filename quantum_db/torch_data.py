"""The torch side of :class:`~quantum_db.loader.MLDataLoader`: a DataLoader of tensors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from backends.errors import MissingDependencyError

from .errors import DataValidationError

if TYPE_CHECKING:
    import torch

    from .loader import MLDataLoader

__all__ = ["torch_loader"]


def torch_loader(loader: MLDataLoader) -> torch.utils.data.DataLoader[Any]:
    try:
        import torch
        from torch.utils.data import DataLoader, IterableDataset
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "PyTorch is needed for as_torch(): pip install 'quantum-db[torch]'"
        ) from exc

    if not loader.loaded:  # fail here with a clear message, not inside torch's iterator
        raise DataValidationError(
            "the loader has not read its dataset: iterate it once or await loader.load() "
            "inside `async with db.connect()` before as_torch()"
        )

    label_dtype = torch.int64 if loader.info.label_kind == "class" else torch.float32

    class _Batches(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
        """Each iteration is one epoch of the underlying loader (already batched)."""

        def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in loader.iter_epoch():
                yield (
                    torch.from_numpy(x).to(torch.float32),
                    torch.from_numpy(y).to(label_dtype),
                )

        def __len__(self) -> int:
            return len(loader)

    # batch_size=None: batches come ready-made, in the loader's seeded order.
    return DataLoader(_Batches(), batch_size=None)
