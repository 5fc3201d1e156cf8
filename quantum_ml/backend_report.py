"""What ``qdb backends`` and ``qdb estimate`` print: the backend catalogue and cost plans."""

from __future__ import annotations

from dataclasses import dataclass

from backends import Backend, PriceModel, SimulatorBackend, plan_training_cost
from backends.errors import QuantumDBError
from backends.templates import hardware_efficient_circuit

__all__ = ["CatalogueEntry", "catalogue", "describe_price", "estimate_lines"]


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    name: str
    max_qubits: int
    modes: str
    price: PriceModel
    status: str


def describe_price(price: PriceModel) -> str:
    if price.is_free:
        return "free"
    text = (
        f"${price.minimum:g}/job + ${price.per_one_qubit_gate_shot:g}/1q-gate-shot + "
        f"${price.per_two_qubit_gate_shot:g}/2q-gate-shot"
    )
    if price.mitigation_default_min_shots is not None:
        text += (
            f" (min ${price.minimum_with_mitigation:g}/job with error mitigation, on by "
            f"default from {price.mitigation_default_min_shots} shots)"
        )
    return text


def _modes(backend: Backend) -> str:
    caps = backend.capabilities
    return "+".join(
        m for m, on in (("exact", caps.supports_exact), ("shots", caps.supports_shots)) if on
    )


def catalogue(ionq_configured: bool) -> list[CatalogueEntry]:
    """Every backend quantum-db knows, whether or not it can run here right now."""
    from backends.cost import FREE

    entries = []
    sim = SimulatorBackend()
    entries.append(
        CatalogueEntry(
            "simulator", sim.capabilities.max_qubits, _modes(sim), FREE, "ready (built in)"
        )
    )
    try:
        from backends import QiskitBackend

        aer = QiskitBackend()
        entries.append(
            CatalogueEntry(
                "aer", aer.capabilities.max_qubits, _modes(aer), FREE, "ready (qiskit-aer)"
            )
        )
    except (ImportError, QuantumDBError) as exc:
        entries.append(CatalogueEntry("aer", 0, "-", FREE, f"unavailable: {exc}"))
    from backends.ionq.targets import TARGETS

    status = "ready (IONQ_API_KEY set)" if ionq_configured else "needs IONQ_API_KEY"
    for target in TARGETS.values():
        modes = "exact+shots" if target.is_simulator else "shots"
        entries.append(
            CatalogueEntry(f"ionq {target.name}", target.max_qubits, modes, target.price, status)
        )
    return entries


def estimate_lines(
    *,
    qubits: int,
    layers: int,
    shots: int,
    epochs: int,
    samples: int,
    batch_size: int,
    error_mitigation: bool | None = None,
) -> list[str]:
    """The cost plan of training the hardware-efficient model on each priced backend."""
    from backends.ionq.targets import TARGETS

    circuit = hardware_efficient_circuit(qubits, layers)
    counts = circuit.count_gates()
    lines = [
        f"model: {qubits} qubits, {layers} layers -> {circuit.num_parameters - qubits} weights; "
        f"circuit has {counts[1]} one-qubit and {counts[2]} two-qubit gates, "
        f"depth {circuit.depth()}",
        f"training: {epochs} epochs over {samples} samples in batches of {batch_size}, "
        f"parameter-shift gradients, {shots} shots per circuit",
        "",
    ]
    for target in TARGETS.values():
        plan = plan_training_cost(
            target.price,
            circuit,
            shots=shots,
            epochs=epochs,
            n_samples=samples,
            batch_size=batch_size,
            error_mitigation=error_mitigation,
        )
        lines.append(f"ionq {target.name:<12} {plan.describe()}")
    lines.append(f"{'simulator / aer':<17} free (exact or sampled, on this machine)")
    return lines
