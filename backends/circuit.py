"""The backend-independent circuit model shared by every backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import CircuitError, QubitIndexError
from .gates import gate_spec
from .parameters import Angle, AngleLike, Parameter, ParameterKind, as_angle

if TYPE_CHECKING:
    import cirq
    from qiskit import QuantumCircuit

__all__ = ["Circuit", "Instruction", "Measurement"]


@dataclass(frozen=True, slots=True)
class Instruction:
    """One gate: its name in :data:`backends.gates.GATES`, qubits and angles."""

    name: str
    qubits: tuple[int, ...]
    angles: tuple[Angle, ...] = ()

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        return tuple(a.parameter for a in self.angles if a.parameter is not None)

    @property
    def is_parameterized(self) -> bool:
        return any(not a.is_constant for a in self.angles)


@dataclass(frozen=True, slots=True)
class Measurement:
    """A terminal measurement of ``qubit`` into classical bit ``clbit``."""

    qubit: int
    clbit: int


class Circuit:
    """A quantum circuit over ``num_qubits`` qubits with symbolic, affine gate angles.

    Gates are appended with the builder methods (``h``, ``rx``, ``cx``, ...), which return
    the circuit so calls chain. Parameters are ordered by first use unless declared up
    front with ``parameters=``; a run binds values in :attr:`parameters` order. Qubit 0 is
    the least significant bit of every bit string (Qiskit's convention).
    """

    def __init__(
        self,
        num_qubits: int,
        *,
        parameters: Iterable[Parameter] = (),
        global_phase: float = 0.0,
        name: str = "circuit",
    ) -> None:
        if isinstance(num_qubits, bool) or not isinstance(num_qubits, int) or num_qubits < 1:
            raise CircuitError(
                f"a circuit needs a positive integer qubit count, got {num_qubits!r}"
            )
        self.num_qubits = num_qubits
        self.name = name
        self._hash: str | None = None
        self._global_phase = as_angle(global_phase).value()
        self._instructions: list[Instruction] = []
        self._measurements: list[Measurement] = []
        self._parameters: dict[str, Parameter] = {}
        for p in parameters:
            self._register(p)

    # ----------------------------------------------------------------- introspection
    @property
    def global_phase(self) -> float:
        return self._global_phase

    @global_phase.setter
    def global_phase(self, value: float) -> None:
        self._global_phase = as_angle(value).value()
        self._hash = None

    @property
    def instructions(self) -> tuple[Instruction, ...]:
        return tuple(self._instructions)

    @property
    def measurements(self) -> tuple[Measurement, ...]:
        return tuple(self._measurements)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """All parameters in binding order."""
        return tuple(self._parameters.values())

    @property
    def num_parameters(self) -> int:
        return len(self._parameters)

    @property
    def num_clbits(self) -> int:
        return 1 + max((m.clbit for m in self._measurements), default=-1)

    def parameter_index(self, parameter: Parameter | str) -> int:
        name = parameter.name if isinstance(parameter, Parameter) else parameter
        for i, key in enumerate(self._parameters):
            if key == name:
                return i
        raise CircuitError(f"parameter {name!r} is not in this circuit")

    def parameters_of_kind(self, kind: ParameterKind) -> tuple[Parameter, ...]:
        return tuple(p for p in self._parameters.values() if p.kind == kind)

    def depth(self) -> int:
        """Number of gate layers (measurements are not counted)."""
        level = [0] * self.num_qubits
        for inst in self._instructions:
            top = 1 + max(level[q] for q in inst.qubits)
            for q in inst.qubits:
                level[q] = top
        return max(level, default=0)

    def count_gates(self) -> dict[int, int]:
        """Gate counts by width: ``{1: one-qubit gates, 2: two-qubit gates}``."""
        counts = {1: 0, 2: 0}
        for inst in self._instructions:
            counts[len(inst.qubits)] += 1
        return counts

    @property
    def num_one_qubit_gates(self) -> int:
        return self.count_gates()[1]

    @property
    def num_two_qubit_gates(self) -> int:
        return self.count_gates()[2]

    def content_hash(self) -> str:
        """A SHA-256 of the circuit's content, stable across processes and versions.

        Cached until the circuit changes: backends look plans and transpilations up by it
        on every run.
        """
        if self._hash is None:
            payload = json.dumps(self._canonical(), sort_keys=True, separators=(",", ":"))
            self._hash = hashlib.sha256(payload.encode()).hexdigest()
        return self._hash

    def _canonical(self) -> dict[str, Any]:
        def angle(a: Angle) -> list[Any]:
            name = a.parameter.name if a.parameter is not None else None
            return [float(a.coeff).hex(), name, float(a.offset).hex()]

        return {
            "format": 1,
            "num_qubits": self.num_qubits,
            "global_phase": float(self.global_phase).hex(),
            "parameters": [[p.name, p.kind] for p in self._parameters.values()],
            "instructions": [
                [i.name, list(i.qubits), [angle(a) for a in i.angles]] for i in self._instructions
            ],
            "measurements": [[m.qubit, m.clbit] for m in self._measurements],
        }

    def __len__(self) -> int:
        return len(self._instructions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Circuit) and self._canonical() == other._canonical()

    def __hash__(self) -> int:
        return hash(self.content_hash())

    def __repr__(self) -> str:
        return (
            f"Circuit(num_qubits={self.num_qubits}, gates={len(self._instructions)}, "
            f"parameters={self.num_parameters}, depth={self.depth()})"
        )

    def copy(self) -> Circuit:
        other = Circuit(
            self.num_qubits,
            parameters=self.parameters,
            global_phase=self.global_phase,
            name=self.name,
        )
        other._instructions = list(self._instructions)
        other._measurements = list(self._measurements)
        return other

    # ----------------------------------------------------------------- building
    def _register(self, p: Parameter) -> None:
        known = self._parameters.get(p.name)
        if known is None:
            self._parameters[p.name] = p
            self._hash = None
        elif known.kind != p.kind:
            raise CircuitError(
                f"parameter {p.name!r} is already used as a {known.kind!r} parameter"
            )

    def _check_qubits(self, qubits: Sequence[int]) -> tuple[int, ...]:
        out: list[int] = []
        for q in qubits:
            if isinstance(q, bool) or not isinstance(q, int):
                raise QubitIndexError(f"qubit indices must be integers, got {q!r}")
            if not 0 <= q < self.num_qubits:
                raise QubitIndexError(
                    f"qubit {q} is out of range for a {self.num_qubits}-qubit circuit "
                    f"(valid: 0..{self.num_qubits - 1})"
                )
            out.append(q)
        if len(set(out)) != len(out):
            raise QubitIndexError(f"a gate cannot act twice on the same qubit: {tuple(out)}")
        return tuple(out)

    def append(self, name: str, qubits: Sequence[int], angles: Sequence[AngleLike] = ()) -> Circuit:
        """Append gate ``name`` on ``qubits`` with ``angles``; the generic builder."""
        if self._measurements:
            raise CircuitError(
                "gates after a measurement are not supported: measurements are terminal"
            )
        spec = gate_spec(name)
        if len(qubits) != spec.num_qubits:
            raise QubitIndexError(
                f"gate {name!r} acts on {spec.num_qubits} qubit(s), got {len(qubits)}"
            )
        if len(angles) != spec.num_params:
            raise CircuitError(f"gate {name!r} takes {spec.num_params} angle(s), got {len(angles)}")
        checked = self._check_qubits(qubits)
        normalized = tuple(as_angle(a) for a in angles)
        for a in normalized:
            if a.parameter is not None:
                self._register(a.parameter)
        self._instructions.append(Instruction(name, checked, normalized))
        self._hash = None
        return self

    def measure(self, qubit: int, clbit: int) -> Circuit:
        (q,) = self._check_qubits([qubit])
        if isinstance(clbit, bool) or not isinstance(clbit, int) or clbit < 0:
            raise QubitIndexError(
                f"classical bit index must be a non-negative integer, got {clbit!r}"
            )
        if any(m.clbit == clbit for m in self._measurements):
            raise QubitIndexError(f"classical bit {clbit} is already written by a measurement")
        if any(m.qubit == q for m in self._measurements):
            raise CircuitError(f"qubit {q} is already measured; measurements are terminal")
        self._measurements.append(Measurement(q, clbit))
        self._hash = None
        return self

    def measure_all(self) -> Circuit:
        for q in range(self.num_qubits):
            self.measure(q, q)
        return self

    # One builder per gate, so that circuits read like Qiskit's.
    def h(self, q: int) -> Circuit:
        return self.append("h", [q])

    def x(self, q: int) -> Circuit:
        return self.append("x", [q])

    def y(self, q: int) -> Circuit:
        return self.append("y", [q])

    def z(self, q: int) -> Circuit:
        return self.append("z", [q])

    def s(self, q: int) -> Circuit:
        return self.append("s", [q])

    def sdg(self, q: int) -> Circuit:
        return self.append("sdg", [q])

    def t(self, q: int) -> Circuit:
        return self.append("t", [q])

    def tdg(self, q: int) -> Circuit:
        return self.append("tdg", [q])

    def sx(self, q: int) -> Circuit:
        return self.append("sx", [q])

    def rx(self, theta: AngleLike, q: int) -> Circuit:
        return self.append("rx", [q], [theta])

    def ry(self, theta: AngleLike, q: int) -> Circuit:
        return self.append("ry", [q], [theta])

    def rz(self, theta: AngleLike, q: int) -> Circuit:
        return self.append("rz", [q], [theta])

    def p(self, lam: AngleLike, q: int) -> Circuit:
        return self.append("p", [q], [lam])

    def u(self, theta: AngleLike, phi: AngleLike, lam: AngleLike, q: int) -> Circuit:
        return self.append("u", [q], [theta, phi, lam])

    def cx(self, control: int, target: int) -> Circuit:
        return self.append("cx", [control, target])

    def cy(self, control: int, target: int) -> Circuit:
        return self.append("cy", [control, target])

    def cz(self, control: int, target: int) -> Circuit:
        return self.append("cz", [control, target])

    def swap(self, a: int, b: int) -> Circuit:
        return self.append("swap", [a, b])

    def crx(self, theta: AngleLike, control: int, target: int) -> Circuit:
        return self.append("crx", [control, target], [theta])

    def cry(self, theta: AngleLike, control: int, target: int) -> Circuit:
        return self.append("cry", [control, target], [theta])

    def crz(self, theta: AngleLike, control: int, target: int) -> Circuit:
        return self.append("crz", [control, target], [theta])

    def rxx(self, theta: AngleLike, a: int, b: int) -> Circuit:
        return self.append("rxx", [a, b], [theta])

    def ryy(self, theta: AngleLike, a: int, b: int) -> Circuit:
        return self.append("ryy", [a, b], [theta])

    def rzz(self, theta: AngleLike, a: int, b: int) -> Circuit:
        return self.append("rzz", [a, b], [theta])

    # ----------------------------------------------------------------- conversion
    @classmethod
    def from_qiskit(cls, qc: QuantumCircuit, *, input_parameters: Iterable[str] = ()) -> Circuit:
        """Convert a Qiskit ``QuantumCircuit``; parameters keep ``qc.parameters`` order."""
        from .interop.qiskit import circuit_from_qiskit

        return circuit_from_qiskit(qc, input_parameters=input_parameters)

    def to_qiskit(self) -> QuantumCircuit:
        from .interop.qiskit import circuit_to_qiskit

        return circuit_to_qiskit(self)

    def to_cirq(self) -> cirq.Circuit:
        from .interop.cirq import circuit_to_cirq

        return circuit_to_cirq(self)

    def to_qasm3(self) -> str:
        from .interop.qasm3 import circuit_to_qasm3

        return circuit_to_qasm3(self)
