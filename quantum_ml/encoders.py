"""Classical data to quantum states: angle encoding and exact real amplitude encoding."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backends.circuit import Circuit
from backends.parameters import Parameter

from .errors import EncodingError

__all__ = [
    "EncoderKind",
    "EncodingError",
    "QuantumDataEncoder",
    "ScalingKind",
    "amplitude_state",
    "state_preparation_circuit",
]

EncoderKind = Literal["angle", "amplitude"]
ScalingKind = Literal["minmax", "standard", "none"]
_ENCODERS = ("angle", "amplitude")
_SCALINGS = ("minmax", "standard", "none")
_STATS = ("feature_min", "feature_max", "feature_mean", "feature_std")


def _as_matrix(X: ArrayLike, what: str = "X") -> NDArray[np.float64]:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EncodingError(f"{what} is not a numeric array: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EncodingError(
            f"{what} must be a non-empty 2-D array [samples, features], got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise EncodingError(f"{what} holds NaN or infinity")
    return arr


def _qubits_for(n_amplitudes: int) -> int:
    return max(1, math.ceil(math.log2(n_amplitudes)))


def amplitude_state(x: ArrayLike, n_qubits: int) -> NDArray[np.float64]:
    """``x`` padded with zeros to ``2**n_qubits`` entries and normalized to unit length."""
    vec = np.asarray(x, dtype=np.float64)
    if vec.ndim != 1 or vec.size == 0:
        raise EncodingError(f"an amplitude vector must be 1-D and non-empty, got {vec.shape}")
    if not np.all(np.isfinite(vec)):
        raise EncodingError("an amplitude vector holds NaN or infinity")
    dim = 2**n_qubits
    if vec.size > dim:
        raise EncodingError(
            f"{vec.size} features do not fit in {n_qubits} qubits ({dim} amplitudes)"
        )
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise EncodingError("an all-zero vector has no amplitude encoding (its norm is 0)")
    out = np.zeros(dim)
    out[: vec.size] = vec / norm
    return out


def _uniformly_controlled_ry(
    circuit: Circuit, angles: NDArray[np.float64], controls: Sequence[int], target: int
) -> None:
    """Append RY(angles[h]) on ``target`` for control pattern ``h`` (bit i = ``controls[i]``).

    Decomposed recursively into plain RY and CX: splitting on the last control ``c``,
    ``UCRY(θ) = CX(c,t) · UCRY(β) · CX(c,t) · UCRY(α)`` with ``α = (θ0+θ1)/2`` and
    ``β = (θ0-θ1)/2`` over the remaining controls, because ``X RY(β) X = RY(-β)``.
    """
    if not controls:
        if angles[0] != 0.0:
            circuit.ry(float(angles[0]), target)
        return
    if not np.any(angles):
        return
    half = angles.size // 2
    theta0, theta1 = angles[:half], angles[half:]
    rest = controls[:-1]
    _uniformly_controlled_ry(circuit, (theta0 + theta1) / 2, rest, target)
    circuit.cx(controls[-1], target)
    _uniformly_controlled_ry(circuit, (theta0 - theta1) / 2, rest, target)
    circuit.cx(controls[-1], target)


def state_preparation_circuit(amplitudes: ArrayLike, n_qubits: int | None = None) -> Circuit:
    """A circuit of RY and CX gates taking ``|0…0⟩`` exactly to the real state ``amplitudes``.

    The vector is padded and normalized (:func:`amplitude_state`). Qubits are prepared from
    the most significant down (Möttönen et al.): the RY angles of each level split the norm
    of a block between its halves; the last level (qubit 0) uses signed ``atan2`` of the two
    amplitudes, which gives every real sign pattern exactly. Qubit 0 is the least significant
    bit of a basis index, as everywhere in the project.
    """
    vec = np.asarray(amplitudes, dtype=np.float64)
    n = _qubits_for(vec.size) if n_qubits is None else n_qubits
    state = amplitude_state(vec, n)
    circuit = Circuit(n, name=f"amplitude-{n}")
    for k in range(n - 1, -1, -1):
        blocks = state.reshape(-1, 2 ** (k + 1))  # one row per value of qubits k+1..n-1
        low, high = blocks[:, : 2**k], blocks[:, 2**k :]
        if k == 0:
            angles = 2.0 * np.arctan2(high[:, 0], low[:, 0])
        else:
            angles = 2.0 * np.arctan2(np.linalg.norm(high, axis=1), np.linalg.norm(low, axis=1))
        _uniformly_controlled_ry(circuit, angles, list(range(k + 1, n)), k)
    return circuit


class QuantumDataEncoder:
    """Feature scaling plus angle or amplitude encoding, stored as a dataset's encoding contract.

    Scaling (statistics from :meth:`fit`, or from a dataset's contract):

    * ``minmax``: ``(x - min) / (max - min)`` into ``[0, 1]`` (constant features map to 0);
      values outside the fitted range are clipped, so angles stay in ``[0, π]``.
    * ``standard``: the z-score ``(x - mean) / std`` (``std == 0`` counts as 1).
    * ``none``: the features as given.

    Angle encoding (one feature per qubit, ``n_qubits == n_features``): :meth:`transform`
    returns the angles that the encoding circuit feeds to ``RY(x_i)``: ``π·minmax`` in
    ``[0, π]``, ``π/2 + arctan(z)`` in ``(0, π)`` for ``standard``, the raw value for
    ``none``. Amplitude encoding (``2**n_qubits >= n_features``): the scaled features are
    padded with zeros and normalized; :meth:`amplitude_circuit` prepares that state exactly.
    """

    def __init__(
        self,
        encoder: EncoderKind = "angle",
        scaling: ScalingKind = "minmax",
        n_qubits: int | None = None,
    ) -> None:
        if encoder not in _ENCODERS:
            raise EncodingError(f"encoder must be 'angle' or 'amplitude', got {encoder!r}")
        if scaling not in _SCALINGS:
            raise EncodingError(f"scaling must be 'minmax', 'standard' or 'none', got {scaling!r}")
        if n_qubits is not None and (
            isinstance(n_qubits, bool) or not isinstance(n_qubits, int) or n_qubits < 1
        ):
            raise EncodingError(f"n_qubits must be a positive integer, got {n_qubits!r}")
        self.encoder: EncoderKind = encoder
        self.scaling: ScalingKind = scaling
        self.n_qubits = n_qubits
        self.n_features: int | None = None
        self._stats: dict[str, NDArray[np.float64]] | None = None

    # ------------------------------------------------------------------ fitting
    @property
    def is_fitted(self) -> bool:
        return self._stats is not None

    def _set_width(self, n_features: int) -> None:
        if self.encoder == "angle":
            if self.n_qubits is None:
                self.n_qubits = n_features
            elif self.n_qubits != n_features:
                raise EncodingError(
                    f"angle encoding puts one feature on each qubit: {n_features} features "
                    f"need {n_features} qubits, not {self.n_qubits}"
                )
        else:
            if self.n_qubits is None:
                self.n_qubits = _qubits_for(n_features)
            elif 2**self.n_qubits < n_features:
                raise EncodingError(
                    f"{n_features} features do not fit in {self.n_qubits} qubits "
                    f"({2**self.n_qubits} amplitudes)"
                )
        self.n_features = n_features

    def fit(self, X: ArrayLike) -> QuantumDataEncoder:
        """Record the scaling statistics of ``X`` (the keys of a dataset's contract)."""
        data = _as_matrix(X)
        self._set_width(data.shape[1])
        self._stats = {
            "feature_min": data.min(axis=0),
            "feature_max": data.max(axis=0),
            "feature_mean": data.mean(axis=0),
            "feature_std": data.std(axis=0),
        }
        return self

    def to_contract(self) -> dict[str, Any]:
        """The encoding contract: encoder, scaling, n_qubits and the feature statistics."""
        if self._stats is None or self.n_qubits is None:
            raise EncodingError("the encoder is not fitted: call fit(X) or from_contract() first")
        return {
            "encoder": self.encoder,
            "scaling": self.scaling,
            "n_qubits": self.n_qubits,
            **{key: self._stats[key].tolist() for key in _STATS},
        }

    @classmethod
    def from_contract(cls, contract: Mapping[str, Any]) -> QuantumDataEncoder:
        """Rebuild a fitted encoder from a contract (a dataset's ``encoding`` or to_contract())."""
        if not isinstance(contract, Mapping):
            raise EncodingError(f"an encoding contract must be a mapping, got {contract!r}")
        missing = [k for k in ("encoder", "scaling", *_STATS) if k not in contract]
        if missing:
            raise EncodingError(f"the encoding contract lacks {missing}")
        encoder = cls(
            cast(EncoderKind, contract["encoder"]),
            cast(ScalingKind, contract["scaling"]),
            contract.get("n_qubits"),
        )
        stats: dict[str, NDArray[np.float64]] = {}
        for key in _STATS:
            try:
                values = np.asarray(contract[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise EncodingError(f"contract[{key!r}] is not a list of numbers") from None
            if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
                raise EncodingError(f"contract[{key!r}] must be a non-empty list of finite numbers")
            stats[key] = values
        widths = {v.size for v in stats.values()}
        if len(widths) != 1:
            raise EncodingError("the contract's feature statistics have different lengths")
        encoder._set_width(widths.pop())
        encoder._stats = stats
        return encoder

    # ------------------------------------------------------------------ transforming
    def _checked(self, X: ArrayLike) -> NDArray[np.float64]:
        data = _as_matrix(X)
        if self.n_features is not None and data.shape[1] != self.n_features:
            raise EncodingError(
                f"X has {data.shape[1]} features; the encoder was fitted on {self.n_features}"
            )
        if self._stats is None:
            if self.scaling != "none":
                raise EncodingError(f"scaling {self.scaling!r} needs fit(X) or a contract first")
            if self.encoder == "angle" and self.n_qubits not in (None, data.shape[1]):
                raise EncodingError(
                    f"X has {data.shape[1]} features but the encoder has {self.n_qubits} qubits"
                )
            if (
                self.encoder == "amplitude"
                and self.n_qubits is not None
                and data.shape[1] > 2**self.n_qubits
            ):
                raise EncodingError(
                    f"{data.shape[1]} features do not fit in {self.n_qubits} qubits"
                )
        return data

    def scale(self, X: ArrayLike) -> NDArray[np.float64]:
        """The features after scaling (``minmax`` into ``[0, 1]``, ``standard`` z-scores)."""
        data = self._checked(X)
        if self.scaling == "none" or self._stats is None:
            return data
        if self.scaling == "minmax":
            low, high = self._stats["feature_min"], self._stats["feature_max"]
            span = high - low
            safe = np.where(span > 0, span, 1.0)
            return np.clip(np.where(span > 0, (data - low) / safe, 0.0), 0.0, 1.0)
        std = self._stats["feature_std"]
        return (data - self._stats["feature_mean"]) / np.where(std > 0, std, 1.0)

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """Angles ``[B, n_qubits]`` (angle encoding) or unit amplitude vectors ``[B, 2**n]``."""
        scaled = self.scale(X)
        if self.encoder == "angle":
            if self.scaling == "minmax":
                return math.pi * scaled
            if self.scaling == "standard":
                return math.pi / 2 + np.arctan(scaled)
            return scaled
        n = self.n_qubits if self.n_qubits is not None else _qubits_for(scaled.shape[1])
        return np.stack([amplitude_state(row, n) for row in scaled])

    # ------------------------------------------------------------------ circuits
    def circuit(self, n_qubits: int | None = None) -> Circuit:
        """The angle-encoding prefix: ``RY(x_i)`` on qubit ``i`` for input parameters ``x0..``.

        Its inputs are the angles from :meth:`transform` (the scaling happens there).
        """
        if self.encoder != "angle":
            raise EncodingError(
                "amplitude encoding is a data-dependent fixed circuit: use amplitude_circuit(x)"
            )
        n = n_qubits if n_qubits is not None else self.n_qubits
        if n is None:
            raise EncodingError("give n_qubits or fit the encoder first")
        if self.n_qubits is not None and n != self.n_qubits:
            raise EncodingError(f"the encoder has {self.n_qubits} qubits, not {n}")
        inputs = [Parameter(f"x{i}", "input") for i in range(n)]
        circuit = Circuit(n, parameters=inputs, name=f"angle-encoding-{n}")
        for q, x in enumerate(inputs):
            circuit.ry(1.0 * x, q)
        return circuit

    def amplitude_circuit(self, x: ArrayLike) -> Circuit:
        """A constant-angle circuit preparing the scaled, padded, normalized sample ``x``."""
        if self.encoder != "amplitude":
            raise EncodingError("amplitude_circuit needs encoder='amplitude'")
        row = np.asarray(x, dtype=np.float64)
        if row.ndim != 1:
            raise EncodingError(f"amplitude_circuit takes one sample (1-D), got {row.shape}")
        (state,) = self.transform(row[None, :])
        return state_preparation_circuit(state, _qubits_for(state.size))
