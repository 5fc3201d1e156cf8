"""Conversion between the circuit model and Qiskit ``QuantumCircuit``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..circuit import Circuit
from ..errors import (
    MissingDependencyError,
    ParameterExpressionError,
    UnsupportedInstructionError,
)
from ..gates import GATES
from ..parameters import Angle, Parameter

if TYPE_CHECKING:
    from qiskit import QuantumCircuit

__all__ = ["circuit_from_qiskit", "circuit_to_qiskit"]

#: Qiskit instructions that change nothing in an ideal simulation.
_NO_OPS = frozenset({"barrier", "id", "delay"})


def _qiskit() -> Any:
    try:
        import qiskit
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "Qiskit is needed for this conversion: pip install 'quantum-db[qiskit]'"
        ) from exc
    return qiskit


def _angle(value: Any, parameters: dict[str, Parameter], where: str) -> Angle:
    """Read a Qiskit gate argument as ``coeff * parameter + offset``."""
    from qiskit.circuit import ParameterExpression

    if not isinstance(value, ParameterExpression):
        return Angle(0.0, None, float(value))
    symbols = list(value.parameters)
    if not symbols:
        return Angle(0.0, None, float(value.numeric()))
    if len(symbols) > 1:
        names = ", ".join(sorted(s.name for s in symbols))
        raise ParameterExpressionError(
            f"{where}: angle {value} depends on several parameters ({names}); the circuit model "
            "allows a*θ+b in one parameter per angle"
        )
    (symbol,) = symbols
    slope = value.gradient(symbol)
    if isinstance(slope, ParameterExpression):
        raise ParameterExpressionError(
            f"{where}: angle {value} is not affine in {symbol.name}; only a*θ+b is supported"
        )
    offset = value.bind({symbol: 0.0}).numeric()
    if complex(slope).imag or complex(offset).imag:
        raise ParameterExpressionError(f"{where}: angle {value} is complex")
    return Angle(float(complex(slope).real), parameters[symbol.name], float(complex(offset).real))


def circuit_from_qiskit(qc: QuantumCircuit, *, input_parameters: Iterable[str] = ()) -> Circuit:
    """Convert ``qc``; the circuit's parameters keep Qiskit's order ``qc.parameters``.

    ``input_parameters`` names the parameters that carry data rather than trainable weights.
    Barriers and identities are dropped; any other instruction outside the gate set raises
    :class:`UnsupportedInstructionError` naming it.
    """
    _qiskit()
    from qiskit.circuit import ParameterExpression

    inputs = set(input_parameters)
    parameters = {
        p.name: Parameter(p.name, "input" if p.name in inputs else "weight") for p in qc.parameters
    }
    unknown_inputs = inputs - set(parameters)
    if unknown_inputs:
        raise ParameterExpressionError(
            f"input_parameters {sorted(unknown_inputs)} are not parameters of the circuit"
        )
    if isinstance(qc.global_phase, ParameterExpression) and qc.global_phase.parameters:
        raise ParameterExpressionError("a parameterized global phase is not supported")
    circuit = Circuit(
        qc.num_qubits,
        parameters=parameters.values(),
        global_phase=float(qc.global_phase),
        name=qc.name,
    )
    for position, item in enumerate(qc.data):
        op = item.operation
        name = op.name
        qubits = [qc.find_bit(q).index for q in item.qubits]
        where = f"instruction {position} ({name!r} on qubits {qubits})"
        if name in _NO_OPS:
            continue
        if name == "measure":
            circuit.measure(qubits[0], qc.find_bit(item.clbits[0]).index)
            continue
        if name not in GATES or getattr(op, "condition", None) is not None:
            raise UnsupportedInstructionError(
                f"{where} has no equivalent in the circuit model; supported gates: "
                f"{', '.join(sorted(GATES))}. Transpile first, e.g. "
                "qiskit.transpile(qc, basis_gates=['u', 'cx'])"
            )
        angles = [_angle(v, parameters, where) for v in op.params]
        circuit.append(name, qubits, angles)
    return circuit


def circuit_to_qiskit(circuit: Circuit) -> QuantumCircuit:
    """The equivalent Qiskit circuit, with one ``qiskit.circuit.Parameter`` per parameter."""
    qiskit = _qiskit()
    from qiskit.circuit import Parameter as QiskitParameter

    symbols = {p.name: QiskitParameter(p.name) for p in circuit.parameters}
    qc = qiskit.QuantumCircuit(
        circuit.num_qubits, circuit.num_clbits, global_phase=circuit.global_phase
    )
    qc.name = circuit.name

    def value(a: Angle) -> Any:
        if a.parameter is None:
            return a.offset
        expr = a.coeff * symbols[a.parameter.name]
        return expr + a.offset if a.offset else expr

    for inst in circuit.instructions:
        getattr(qc, inst.name)(*(value(a) for a in inst.angles), *inst.qubits)
    for m in circuit.measurements:
        qc.measure(m.qubit, m.clbit)
    return qc
