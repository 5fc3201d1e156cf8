"""What ``qdb backends`` and ``qdb estimate`` print: the backend catalogue and cost plans.

The catalogue lists every backend a :class:`~quantum_db.QuantumDatabase` connection can
register, under the name it registers it by (``db.backend_manager.names()``), which is
the name ``BackendManager.run(backend=...)`` takes. The estimate checks each of them
against the job first and says why one cannot run it instead of pricing it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from backends import (
    FREE,
    GATES,
    Capabilities,
    Circuit,
    PriceModel,
    SimulatorBackend,
    plan_training_cost,
)
from backends.errors import QuantumDBError
from backends.templates import hardware_efficient_circuit

__all__ = [
    "RUN_HINT",
    "CatalogueEntry",
    "blockers",
    "catalogue",
    "catalogue_lines",
    "describe_price",
    "estimate_lines",
]

#: The line both commands end with: which name to pass where.
RUN_HINT = (
    "pass a name from the first column to BackendManager.run(backend=NAME) "
    "(db.backend_manager of a QuantumDatabase connection)"
)


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    """One backend a connection can offer, under the name ``run(backend=...)`` takes.

    ``capabilities`` is ``None`` when the backend cannot be built here (an SDK is
    missing); ``gates`` are the circuit-model gates it runs, natively or rewritten.
    """

    name: str
    capabilities: Capabilities | None
    gates: frozenset[str]
    price: PriceModel
    status: str
    #: What the name stands for (``IonQ's qpu.aria-1``, ``built-in statevector``).
    description: str = ""

    @property
    def max_qubits(self) -> int:
        return 0 if self.capabilities is None else self.capabilities.max_qubits

    @property
    def modes(self) -> str:
        caps = self.capabilities
        if caps is None:
            return "-"
        return "+".join(
            m for m, on in (("exact", caps.supports_exact), ("shots", caps.supports_shots)) if on
        )


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


def _ionq_entries(ionq_configured: bool) -> list[CatalogueEntry]:
    from backends.ionq.targets import BACKEND_NAMES, TARGETS
    from backends.ionq.translate import NATIVE_GATES

    # A connection builds IonQ backends with the qiskit-ionq driver (the default).
    if importlib.util.find_spec("qiskit_ionq") is None:
        status = "needs pip install 'quantum-db[ionq]'"
    elif ionq_configured:
        status = "ready (IONQ_API_KEY set)"
    else:
        status = "needs IONQ_API_KEY"
    entries = []
    for target in TARGETS.values():
        caps = Capabilities(
            max_qubits=target.max_qubits,
            native_gates=NATIVE_GATES,
            supports_exact=target.is_simulator,
            supports_shots=True,
            max_shots=target.max_shots,
        )
        entries.append(
            CatalogueEntry(
                BACKEND_NAMES[target.name],
                caps,
                # ``p`` and ``u`` are rewritten into native gates before a job is sent.
                NATIVE_GATES | {"p", "u"},
                target.price,
                status,
                f"IonQ's {target.name}",
            )
        )
    return entries


def catalogue(ionq_configured: bool) -> list[CatalogueEntry]:
    """Every backend a connection can register, whether or not it can run here right now."""
    sim = SimulatorBackend()
    entries = [
        CatalogueEntry(
            "simulator",
            sim.capabilities,
            sim.capabilities.native_gates,
            FREE,
            "ready (built in)",
            "built-in statevector",
        )
    ]
    try:
        from backends import QiskitBackend

        aer = QiskitBackend()
        # Every gate of the circuit model converts to Qiskit, and Aer transpiles the rest.
        entries.append(
            CatalogueEntry(
                "aer", aer.capabilities, frozenset(GATES), FREE, "ready (qiskit-aer)", "Qiskit Aer"
            )
        )
    except (ImportError, QuantumDBError) as exc:
        entries.append(
            CatalogueEntry("aer", None, frozenset(), FREE, f"unavailable: {exc}", "Qiskit Aer")
        )
    return entries + _ionq_entries(ionq_configured)


def catalogue_lines(entries: list[CatalogueEntry]) -> list[str]:
    """The table ``qdb backends`` prints."""
    width = max(len(e.name) for e in entries)
    lines = [f"{'name':<{width}} {'qubits':>6}  {'modes':<12} {'status':<36} price"]
    for e in entries:
        lines.append(
            f"{e.name:<{width}} {e.max_qubits:>6}  {e.modes:<12} {e.status:<36} "
            f"{describe_price(e.price)}"
        )
    lines += ["", RUN_HINT]
    ionq = [f"{e.name} is {e.description}" for e in entries if e.description.startswith("IonQ's")]
    if ionq:
        lines.append("; ".join(ionq))
    return lines


def blockers(entry: CatalogueEntry, circuit: Circuit, shots: int | None) -> list[str]:
    """Why ``entry`` cannot run ``circuit`` with ``shots`` (``None``: exact); empty if it can."""
    caps = entry.capabilities
    if caps is None:
        return [entry.status]
    reasons = []
    if circuit.num_qubits > caps.max_qubits:
        reasons.append(f"needs {circuit.num_qubits} qubits, offers {caps.max_qubits}")
    unknown = sorted({inst.name for inst in circuit.instructions} - entry.gates)
    if unknown:
        reasons.append(f"cannot run gates {', '.join(unknown)}")
    if shots is None and not caps.supports_exact:
        reasons.append("no exact mode (give --shots)")
    if shots is not None and not caps.supports_shots:
        reasons.append("does not sample shots (use --exact)")
    if shots is not None and caps.max_shots is not None and shots > caps.max_shots:
        reasons.append(f"at most {caps.max_shots:,} shots per job, {shots:,} asked")
    return reasons


def estimate_lines(
    *,
    qubits: int,
    layers: int,
    shots: int | None,
    epochs: int,
    samples: int,
    batch_size: int,
    validation_samples: int = 0,
    error_mitigation: bool | None = None,
    ionq_configured: bool = False,
) -> list[str]:
    """The cost plan of training the hardware-efficient model on every catalogued backend.

    A backend that cannot run the job (too few qubits, a gate it cannot run, more shots
    than it allows, exact evaluation without an exact mode) is marked with the reasons
    and not priced.
    """
    circuit = hardware_efficient_circuit(qubits, layers)
    counts = circuit.count_gates()
    weights = len(circuit.parameters_of_kind("weight"))
    shot_text = "exact expectations" if shots is None else f"{shots} shots per circuit"
    validation = (
        f", and {validation_samples} validation samples evaluated once per epoch"
        if validation_samples
        else ", no validation set (--validation-samples)"
    )
    lines = [
        f"model: {qubits} qubits, {layers} layers -> {weights} weights; "
        f"circuit has {counts[1]} one-qubit and {counts[2]} two-qubit gates, "
        f"depth {circuit.depth()}",
        f"training: {epochs} epochs over {samples} samples in batches of {batch_size}, "
        f"parameter-shift gradients (2 x {weights} shifted circuits + 1 forward per sample), "
        f"{shot_text}{validation}",
        "",
    ]
    entries = catalogue(ionq_configured)
    width = max(len(e.name) for e in entries)
    for entry in entries:
        reasons = blockers(entry, circuit, shots)
        if reasons:
            lines.append(f"{entry.name:<{width}} cannot run this job: {'; '.join(reasons)}")
            continue
        plan = plan_training_cost(
            entry.price,
            circuit,
            shots=shots,
            epochs=epochs,
            n_samples=samples,
            batch_size=batch_size,
            n_validation=validation_samples,
            error_mitigation=error_mitigation,
        )
        text = plan.describe() if not entry.price.is_free else f"free: {plan.describe_jobs()}"
        lines.append(f"{entry.name:<{width}} {text}")
    if all("cannot run this job" in line for line in lines[-len(entries) :]):
        lines.append("no backend here can run this job")
    lines += ["", RUN_HINT]
    return lines


def qgan_estimate_lines(
    *,
    qubits: int,
    reps: int,
    shots: int,
    epochs: int,
    steps_per_epoch: int,
    g_steps: int = 1,
    error_mitigation: bool | None = None,
    ionq_configured: bool = False,
) -> list[str]:
    """The cost plan of a Born-machine QGAN (H, then the RY/CZ ansatz with ``reps``) on
    every catalogued backend: per step, ``g_steps`` times one measured distribution and
    ``2 x weights`` shifted ones (parameter shift), each one job of ``shots`` shots; every
    shot is one generated sample, so the cost per generated sample is the job's price
    over its shots."""
    from .qgan.ansatz import compose, initial_state, ry_cz_ansatz

    circuit = compose(initial_state("uniform", n_qubits=qubits), ry_cz_ansatz(qubits, reps=reps))
    counts = circuit.count_gates()
    weights = len(circuit.parameters_of_kind("weight"))
    per_step = g_steps * (2 * weights + 1)
    lines = [
        f"generator: Born machine, {qubits} qubits, RY/CZ x {reps} -> {weights} weights; "
        f"circuit has {counts[1]} one-qubit and {counts[2]} two-qubit gates, "
        f"depth {circuit.depth()}",
        f"training: {epochs} epochs x {steps_per_epoch} steps, {per_step} distributions of "
        f"{shots} shots per step ({g_steps} x (1 + 2 x {weights} shifted)), "
        f"{epochs * steps_per_epoch * per_step * shots:,} generated samples in all",
        "",
    ]
    entries = catalogue(ionq_configured)
    width = max(len(e.name) for e in entries)
    for entry in entries:
        reasons = blockers(entry, circuit, shots)
        if reasons:
            lines.append(f"{entry.name:<{width}} cannot run this job: {'; '.join(reasons)}")
            continue
        plan = plan_training_cost(
            entry.price,
            circuit,
            shots=shots,
            epochs=epochs,
            n_samples=steps_per_epoch,
            batch_size=1,
            gradient_evaluations=per_step,
            error_mitigation=error_mitigation,
        )
        if entry.price.is_free:
            lines.append(f"{entry.name:<{width}} free: {plan.describe_jobs()}")
            continue
        per_sample = plan.total / (plan.jobs * shots)
        lines.append(
            f"{entry.name:<{width}} {plan.describe()}; ${per_sample:.6f} per generated sample"
        )
    lines += ["", RUN_HINT]
    return lines
