"""The grid a Born machine's basis states stand for: per-dimension bounds and bits."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import DataOutOfBoundsError, GridError

__all__ = ["Grid"]

Policy = Literal["refuse", "clip"]


class Grid:
    """``d`` dimensions; dimension ``j`` has the ``2**bits[j]`` values
    ``np.linspace(lo_j, hi_j, 2**bits[j])`` (both ends included, as Qiskit's QGAN does).

    Dimension 0 takes the lowest ``bits[0]`` qubits of a basis index, dimension 1 the next
    ``bits[1]``, and so on (qubit 0 is the least significant bit): with 2 dimensions of 3
    bits, index ``k`` is the point ``(v[k % 8], v[k // 8])``.
    """

    def __init__(self, bounds: Sequence[tuple[float, float]], bits: Sequence[int]) -> None:
        try:
            pairs = [(float(lo), float(hi)) for lo, hi in bounds]
        except (TypeError, ValueError):
            raise GridError(f"bounds must be (low, high) pairs, got {bounds!r}") from None
        if not pairs:
            raise GridError("a grid needs at least one dimension: bounds is empty")
        for j, (lo, hi) in enumerate(pairs):
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise GridError(f"the bounds of dimension {j} must be finite, got ({lo}, {hi})")
            if lo >= hi:
                raise GridError(
                    f"the bounds of dimension {j} are empty or reversed: ({lo}, {hi}); give "
                    "(low, high) with low < high"
                )
        try:
            bits_list = list(bits)
        except TypeError:
            raise GridError(f"bits must be a sequence of integers, got {bits!r}") from None
        if len(bits_list) != len(pairs):
            raise GridError(
                f"bits gives {len(bits_list)} dimension(s), bounds {len(pairs)}: one each"
            )
        for b in bits_list:
            if isinstance(b, bool) or not isinstance(b, int | np.integer) or b < 1:
                raise GridError(f"bits per dimension must be integers >= 1, got {bits!r}")
        self.bounds: tuple[tuple[float, float], ...] = tuple(pairs)
        self.bits: tuple[int, ...] = tuple(int(b) for b in bits_list)
        if self.n_qubits > 24:
            raise GridError(f"a grid of {self.n_qubits} qubits is too large to enumerate")
        self._points: NDArray[np.float64] | None = None

    @property
    def dim(self) -> int:
        return len(self.bits)

    @property
    def n_qubits(self) -> int:
        return sum(self.bits)

    @property
    def size(self) -> int:
        return 1 << self.n_qubits

    def values(self, j: int) -> NDArray[np.float64]:
        """The ``2**bits[j]`` values of dimension ``j``."""
        lo, hi = self.bounds[j]
        return np.linspace(lo, hi, 2 ** self.bits[j])

    def points(self) -> NDArray[np.float64]:
        """The point of every basis index: ``[size, dim]``."""
        if self._points is None:
            k = np.arange(self.size)
            cols, shift = [], 0
            for j, b in enumerate(self.bits):
                cols.append(self.values(j)[(k >> shift) & (2**b - 1)])
                shift += b
            self._points = np.stack(cols, axis=1)
        return self._points

    def _samples(self, samples: ArrayLike) -> NDArray[np.float64]:
        try:
            arr = np.asarray(samples, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise GridError(f"samples must be numbers: {exc}") from None
        if arr.ndim == 1 and self.dim == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise GridError(f"samples must have shape [N, {self.dim}], got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise GridError("samples hold NaN or infinite values")
        return arr

    def to_index(self, samples: ArrayLike, policy: Policy = "refuse") -> NDArray[np.int64]:
        """The basis index of the grid point nearest each sample (per dimension).

        Samples outside the bounds raise :class:`DataOutOfBoundsError` (``policy="refuse"``,
        the default) or go to the nearest end (``"clip"``).
        """
        if policy not in ("refuse", "clip"):
            raise GridError(f"policy must be 'refuse' or 'clip', got {policy!r}")
        arr = self._samples(samples)
        index = np.zeros(len(arr), dtype=np.int64)
        shift = 0
        for j, b in enumerate(self.bits):
            lo, hi = self.bounds[j]
            col = arr[:, j]
            outside = (col < lo) | (col > hi)
            if policy == "refuse" and outside.any():
                bad = col[outside]
                raise DataOutOfBoundsError(
                    f"{int(outside.sum())} sample(s) of dimension {j} lie outside its bounds "
                    f"({lo:g}, {hi:g}), e.g. {bad[0]:g}; widen the bounds, or pass "
                    "data_policy='clip' to move them onto the nearest end"
                )
            steps = 2**b - 1
            position = np.rint((np.clip(col, lo, hi) - lo) / (hi - lo) * steps).astype(np.int64)
            index |= position << shift
            shift += b
        return index

    def histogram(self, samples: ArrayLike, policy: Policy = "refuse") -> NDArray[np.float64]:
        """The empirical distribution of ``samples`` on the grid: ``[size]``, sums to 1."""
        index = self.to_index(samples, policy)
        if index.size == 0:
            raise GridError("no samples to make a histogram of")
        return np.bincount(index, minlength=self.size).astype(np.float64) / index.size

    def to_dict(self) -> dict[str, Any]:
        """The encoding contract of the grid (stored with a generator)."""
        return {"kind": "grid", "bounds": [list(b) for b in self.bounds], "bits": list(self.bits)}

    @classmethod
    def from_dict(cls, contract: Mapping[str, Any]) -> Grid:
        """The grid of a contract made by :meth:`to_dict` (other keys are ignored)."""
        if not isinstance(contract, Mapping) or contract.get("kind") != "grid":
            raise GridError(f"not a grid contract: {contract!r}")
        try:
            return cls([tuple(b) for b in contract["bounds"]], list(contract["bits"]))
        except (KeyError, TypeError) as exc:
            raise GridError(f"a grid contract needs 'bounds' and 'bits' lists: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and (self.bounds, self.bits) == (other.bounds, other.bits)

    def __hash__(self) -> int:
        return hash((self.bounds, self.bits))

    def __repr__(self) -> str:
        return f"Grid(bounds={[list(b) for b in self.bounds]}, bits={list(self.bits)})"
