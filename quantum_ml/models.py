"""Variational quantum models: encoding, entangling layers, readout and a classical head."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backends.circuit import Circuit
from backends.parameters import Parameter

from .encoders import EncoderKind, QuantumDataEncoder, amplitude_state, state_preparation_circuit
from .errors import ModelError

if TYPE_CHECKING:
    from backends.base import Backend
    from quantum_db.models import ModelVersion

__all__ = ["ModelError", "QuantumModel", "entangling_pairs"]

Entanglement = Literal["linear", "circular", "full"]
Readout = Literal["expectation", "probabilities"]
Task = Literal["classification", "regression"]
_ROTATIONS = ("rx", "ry", "rz")
_KIND = "quantum_ml.QuantumModel"
#: Probabilities readout measures all 2**n diagonal Z strings; keep that small.
MAX_PROBABILITY_QUBITS = 10


def entangling_pairs(n_qubits: int, entanglement: Entanglement) -> list[tuple[int, int]]:
    """CX (control, target) pairs of one layer.

    ``linear``: ``(0,1), (1,2), …``; ``circular``: linear plus ``(n-1, 0)`` when ``n > 2``;
    ``full``: every pair ``i < j``.
    """
    if entanglement == "linear":
        return [(q, q + 1) for q in range(n_qubits - 1)]
    if entanglement == "circular":
        pairs = [(q, q + 1) for q in range(n_qubits - 1)]
        return [*pairs, (n_qubits - 1, 0)] if n_qubits > 2 else pairs
    if entanglement == "full":
        return [(i, j) for i in range(n_qubits) for j in range(i + 1, n_qubits)]
    raise ModelError(f"entanglement must be 'linear', 'circular' or 'full', got {entanglement!r}")


def _z_string(mask: int, n_qubits: int) -> str:
    return "".join("Z" if mask >> q & 1 else "I" for q in reversed(range(n_qubits)))


class QuantumModel:
    """A layered variational circuit with a readout and an optional classical linear head.

    The circuit is the encoding (angle: ``RY(x_i)`` on input parameters ``x0..x{n-1}``, fed
    the angles of :meth:`QuantumDataEncoder.transform`), then ``layers`` of the ``rotations``
    on every qubit followed by the ``entanglement`` CX pattern. Weights ``w0..`` are ordered
    layer, then qubit, then rotation. Amplitude encoding has no input parameters: each sample
    gets its own exact state-preparation prefix in :meth:`forward`.

    Readout ``expectation`` gives ``<Z_i>`` per qubit; ``probabilities`` gives the exact
    probabilities of all ``2**n`` basis states (index bit ``q`` = qubit ``q``), computed
    from the expectations of every diagonal Z string. With a ``task`` a linear head maps
    the readout to ``n_outputs`` (logits for classification, values for regression).

    :meth:`freeze` marks circuit weights as fixed for transfer learning;
    :attr:`trainable_mask` is what a trainer should update. The head is always trainable.
    """

    def __init__(
        self,
        n_qubits: int,
        layers: int,
        *,
        encoding: EncoderKind = "angle",
        entanglement: Entanglement = "linear",
        rotations: Sequence[str] = _ROTATIONS,
        readout: Readout = "expectation",
        n_outputs: int | None = None,
        task: Task | None = None,
        seed: int = 0,
        encoder: QuantumDataEncoder | None = None,
    ) -> None:
        for value, what, low in ((n_qubits, "n_qubits", 1), (layers, "layers", 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ModelError(f"{what} must be an integer >= {low}, got {value!r}")
        if encoding not in ("angle", "amplitude"):
            raise ModelError(f"encoding must be 'angle' or 'amplitude', got {encoding!r}")
        rots = tuple(rotations)
        if not rots or any(r not in _ROTATIONS for r in rots):
            raise ModelError(f"rotations must be a non-empty sequence of {_ROTATIONS}, got {rots}")
        if readout not in ("expectation", "probabilities"):
            raise ModelError(f"readout must be 'expectation' or 'probabilities', got {readout!r}")
        if readout == "probabilities" and n_qubits > MAX_PROBABILITY_QUBITS:
            raise ModelError(f"probabilities readout is limited to {MAX_PROBABILITY_QUBITS} qubits")
        if task not in (None, "classification", "regression"):
            raise ModelError(f"task must be 'classification', 'regression' or None, got {task!r}")
        if task is None and n_outputs is not None:
            raise ModelError("n_outputs needs a task (the head is built only for a task)")
        if task is not None:
            n_outputs = (
                n_outputs if n_outputs is not None else (2 if task == "classification" else 1)
            )
            if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
                raise ModelError(f"n_outputs must be a positive integer, got {n_outputs!r}")
        if encoder is not None and (
            encoder.encoder != encoding or encoder.n_qubits not in (None, n_qubits)
        ):
            raise ModelError("the encoder's kind or qubit count does not match the model")
        self.n_qubits = n_qubits
        self.layers = layers
        self.encoding: EncoderKind = encoding
        self.entanglement: Entanglement = entanglement
        self.rotations = rots
        self.readout: Readout = readout
        self.task: Task | None = task
        self.n_outputs = n_outputs
        self.seed = seed
        self.encoder = encoder
        self.pairs = entangling_pairs(n_qubits, entanglement)

        self.weight_parameters = [Parameter(f"w{k}") for k in range(self.num_weights)]
        self.circuit = self._build(self.encoding == "angle")
        self.observables = (
            [_z_string(1 << q, n_qubits) for q in range(n_qubits)]
            if readout == "expectation"
            else [_z_string(mask, n_qubits) for mask in range(2**n_qubits)]
        )
        rng = np.random.default_rng(seed)
        self.weights: NDArray[np.float64] = rng.uniform(0.0, 2 * math.pi, self.num_weights)
        self.head_weight: NDArray[np.float64] | None = None
        self.head_bias: NDArray[np.float64] | None = None
        if n_outputs is not None:
            bound = math.sqrt(6.0 / (self.readout_dim + n_outputs))  # Glorot uniform
            self.head_weight = rng.uniform(-bound, bound, (n_outputs, self.readout_dim))
            self.head_bias = np.zeros(n_outputs)
        self._frozen = np.zeros(self.num_weights, dtype=bool)

    # ------------------------------------------------------------------ structure
    @property
    def num_weights(self) -> int:
        return self.layers * self.n_qubits * len(self.rotations)

    @property
    def readout_dim(self) -> int:
        return self.n_qubits if self.readout == "expectation" else 2**self.n_qubits

    def _build(self, with_inputs: bool, prefix: Circuit | None = None) -> Circuit:
        inputs = [Parameter(f"x{i}", "input") for i in range(self.n_qubits)] if with_inputs else []
        circuit = Circuit(
            self.n_qubits,
            parameters=[*inputs, *self.weight_parameters],
            name=f"qmodel-{self.n_qubits}x{self.layers}",
        )
        for q, x in enumerate(inputs):
            circuit.ry(1.0 * x, q)
        if prefix is not None:
            for inst in prefix.instructions:
                circuit.append(inst.name, inst.qubits, inst.angles)
        w = iter(self.weight_parameters)
        for _ in range(self.layers):
            for q in range(self.n_qubits):
                for rot in self.rotations:
                    circuit.append(rot, [q], [next(w)])
            for control, target in self.pairs:
                circuit.cx(control, target)
        return circuit

    def weighted_circuit(self, prefix: Circuit) -> Circuit:
        """The circuit after ``prefix`` (e.g. a sample's state preparation), with no inputs:
        what amplitude encoding runs per sample, its parameters the weights alone."""
        return self._build(False, prefix)

    def layer_indices(self, layer: int) -> range:
        """Indices into :attr:`weights` of one layer."""
        if not 0 <= layer < self.layers:
            raise ModelError(f"layer {layer} is out of range (0..{self.layers - 1})")
        size = self.n_qubits * len(self.rotations)
        return range(layer * size, (layer + 1) * size)

    # ------------------------------------------------------------------ freezing
    @property
    def trainable_mask(self) -> NDArray[np.bool_]:
        """``True`` for every weight a trainer may update (a copy)."""
        return ~self._frozen

    def freeze(self, which: str | int | Iterable[int] = "all") -> QuantumModel:
        """Freeze weights: ``"all"``, ``"layers:0"`` / ``"layers:0,2"``, an index or indices."""
        self._frozen[self._resolve(which)] = True
        return self

    def unfreeze(self, which: str | int | Iterable[int] = "all") -> QuantumModel:
        """Make weights trainable again (all of them by default)."""
        self._frozen[self._resolve(which)] = False
        return self

    def _resolve(self, which: str | int | Iterable[int]) -> list[int]:
        if isinstance(which, str):
            if which == "all":
                return list(range(self.num_weights))
            head, _, rest = which.partition(":")
            if head != "layers" or not rest:
                raise ModelError(f"expected 'all' or 'layers:i[,j…]', got {which!r}")
            try:
                layer_ids = [int(part) for part in rest.split(",")]
            except ValueError:
                raise ModelError(f"bad layer list in {which!r}") from None
            return [i for layer in layer_ids for i in self.layer_indices(layer)]
        items = [which] if isinstance(which, int | np.integer) else list(which)
        out: list[int] = []
        for i in items:
            if isinstance(i, bool) or not isinstance(i, int | np.integer):
                raise ModelError(f"weight indices must be integers, got {i!r}")
            if not 0 <= i < self.num_weights:
                raise ModelError(f"weight index {i} is out of range (0..{self.num_weights - 1})")
            out.append(int(i))
        return out

    # ------------------------------------------------------------------ running
    async def forward(
        self,
        backend: Backend,
        X: ArrayLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
    ) -> NDArray[np.float64]:
        """Readout (then the head, if any) for a batch ``X`` of samples, ``[B, out]``.

        ``shots`` (with ``seed``) estimates the expectations from samples, as a backend
        without an exact mode (an IonQ QPU) needs.

        With an :attr:`encoder`, ``X`` holds raw features and is transformed first; without
        one, ``X`` holds the angles (angle encoding) or the amplitudes to pad and normalize.
        """
        data = np.asarray(X, dtype=np.float64)
        if data.ndim != 2:
            raise ModelError(f"X must be 2-D [samples, features], got shape {data.shape}")
        if self.encoding == "angle":
            angles = self.encoder.transform(data) if self.encoder is not None else data
            if angles.shape[1] != self.n_qubits or not np.all(np.isfinite(angles)):
                raise ModelError(
                    f"angle encoding needs {self.n_qubits} finite features, got {angles.shape[1]}"
                )
            values = np.hstack(
                [angles, np.broadcast_to(self.weights, (len(angles), self.num_weights))]
            )
            result = await backend.run(
                self.circuit, values, self.observables, shots=shots, seed=seed
            )
            assert result.expectations is not None
            readout = np.asarray(result.expectations, dtype=np.float64)
        else:
            states = (
                self.encoder.transform(data)
                if self.encoder is not None
                else np.stack([amplitude_state(row, self.n_qubits) for row in data])
            )
            rows = []
            for state in states:
                prep = state_preparation_circuit(state, self.n_qubits)
                result = await backend.run(
                    self._build(False, prep),
                    self.weights[None, :],
                    self.observables,
                    shots=shots,
                    seed=seed,
                )
                assert result.expectations is not None
                rows.append(np.asarray(result.expectations, dtype=np.float64)[0])
            readout = np.stack(rows)
        if self.readout == "probabilities":
            masks = np.arange(2**self.n_qubits)
            parity = np.array([[bin(k & s).count("1") & 1 for s in masks] for k in masks])
            readout = readout @ (1.0 - 2.0 * parity).T / 2**self.n_qubits
        if self.head_weight is not None and self.head_bias is not None:
            return readout @ self.head_weight.T + self.head_bias
        return readout

    # ------------------------------------------------------------------ registry
    def architecture(self) -> dict[str, Any]:
        return {
            "kind": _KIND,
            "n_qubits": self.n_qubits,
            "layers": self.layers,
            "encoding": self.encoding,
            "entanglement": self.entanglement,
            "rotations": list(self.rotations),
            "readout": self.readout,
            "task": self.task,
            "n_outputs": self.n_outputs,
            "seed": self.seed,
            "frozen": np.flatnonzero(self._frozen).tolist(),
        }

    def registry_payload(self) -> dict[str, Any]:
        """Parameters, architecture and encoding contract, as ``db.models.register`` reads them."""
        parameters: dict[str, NDArray[np.float64]] = {"weights": self.weights.copy()}
        if self.head_weight is not None and self.head_bias is not None:
            parameters["head_weight"] = self.head_weight.copy()
            parameters["head_bias"] = self.head_bias.copy()
        encoding = (
            self.encoder.to_contract()
            if self.encoder is not None and self.encoder.is_fitted
            else None
        )
        return {"parameters": parameters, "architecture": self.architecture(), "encoding": encoding}

    @classmethod
    def from_registry(cls, version: ModelVersion) -> QuantumModel:
        """Rebuild a model, exactly, from a stored :class:`quantum_db.ModelVersion`."""
        return cls.from_payload(version.parameters, version.architecture, version.encoding)

    @classmethod
    def from_payload(
        cls,
        parameters: Mapping[str, ArrayLike],
        architecture: Mapping[str, Any],
        encoding: Mapping[str, Any] | None = None,
    ) -> QuantumModel:
        if architecture.get("kind") != _KIND:
            raise ModelError(f"architecture kind {architecture.get('kind')!r} is not {_KIND!r}")
        try:
            model = cls(
                architecture["n_qubits"],
                architecture["layers"],
                encoding=architecture["encoding"],
                entanglement=architecture["entanglement"],
                rotations=architecture["rotations"],
                readout=architecture["readout"],
                n_outputs=architecture["n_outputs"],
                task=architecture["task"],
                seed=architecture["seed"],
                encoder=QuantumDataEncoder.from_contract(encoding) if encoding else None,
            )
        except KeyError as exc:
            raise ModelError(f"the architecture lacks {exc.args[0]!r}") from None
        model.weights = model._checked(parameters, "weights", model.weights.shape)
        if model.head_weight is not None and model.head_bias is not None:
            model.head_weight = model._checked(parameters, "head_weight", model.head_weight.shape)
            model.head_bias = model._checked(parameters, "head_bias", model.head_bias.shape)
        model.freeze(architecture.get("frozen", []))
        return model

    @staticmethod
    def _checked(
        parameters: Mapping[str, ArrayLike], key: str, shape: tuple[int, ...]
    ) -> NDArray[np.float64]:
        if key not in parameters:
            raise ModelError(f"the stored parameters lack {key!r}")
        array = np.array(parameters[key], dtype=np.float64)
        if array.shape != shape:
            raise ModelError(f"stored {key!r} has shape {array.shape}, expected {shape}")
        return array

    def __repr__(self) -> str:
        return (
            f"QuantumModel(n_qubits={self.n_qubits}, layers={self.layers}, "
            f"entanglement={self.entanglement!r}, readout={self.readout!r}, task={self.task!r})"
        )
