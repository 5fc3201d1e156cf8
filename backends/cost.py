"""Price models: what a job costs before it is sent, and what a whole training run will cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .circuit import Circuit
from .errors import CostPlanError, ShotsError

__all__ = [
    "FREE",
    "IONQ_ARIA",
    "IONQ_FORTE",
    "CostPlan",
    "PriceModel",
    "plan_training_cost",
]


@dataclass(frozen=True, slots=True)
class PriceModel:
    """Per-job price: ``minimum + one_qubit x (1q gates x shots) + two_qubit x (2q gates x shots)``.

    ``minimum_with_mitigation`` replaces ``minimum`` when error mitigation is on, which
    IonQ turns on by default from ``mitigation_default_min_shots`` shots.
    """

    per_one_qubit_gate_shot: float = 0.0
    per_two_qubit_gate_shot: float = 0.0
    minimum: float = 0.0
    minimum_with_mitigation: float = 0.0
    mitigation_default_min_shots: int | None = None
    currency: str = "USD"

    @property
    def is_free(self) -> bool:
        return not (
            self.per_one_qubit_gate_shot
            or self.per_two_qubit_gate_shot
            or self.minimum
            or self.minimum_with_mitigation
        )

    def mitigation_on(self, shots: int, error_mitigation: bool | None) -> bool:
        if error_mitigation is not None:
            return error_mitigation
        return (
            self.mitigation_default_min_shots is not None
            and shots >= self.mitigation_default_min_shots
        )

    def job_cost(
        self,
        one_qubit_gates: int,
        two_qubit_gates: int,
        shots: int,
        *,
        error_mitigation: bool | None = None,
    ) -> float:
        if shots <= 0:
            raise ShotsError(f"a priced job needs a positive shot count, got {shots}")
        if self.is_free:
            return 0.0
        minimum = (
            self.minimum_with_mitigation
            if self.mitigation_on(shots, error_mitigation)
            else self.minimum
        )
        return (
            minimum
            + self.per_one_qubit_gate_shot * one_qubit_gates * shots
            + self.per_two_qubit_gate_shot * two_qubit_gates * shots
        )

    def circuit_cost(
        self, circuit: Circuit, shots: int, *, error_mitigation: bool | None = None
    ) -> float:
        counts = circuit.count_gates()
        return self.job_cost(counts[1], counts[2], shots, error_mitigation=error_mitigation)


#: Simulators (built-in, Aer, IonQ's cloud simulator) cost nothing.
FREE = PriceModel()

# IonQ's published pricing as listed for IonQ on Azure Quantum (USD): $0.000220 per
# one-qubit gate-shot, $0.000975 per two-qubit gate-shot, and a per-job minimum of
# $12.4166 without error mitigation or $97.50 with it (on by default from 500 shots).
IONQ_ARIA = PriceModel(
    per_one_qubit_gate_shot=0.000220,
    per_two_qubit_gate_shot=0.000975,
    minimum=12.4166,
    minimum_with_mitigation=97.50,
    mitigation_default_min_shots=500,
)
IONQ_FORTE = IONQ_ARIA


@dataclass(frozen=True, slots=True)
class CostPlan:
    """What a whole training configuration submits and costs, before anything runs.

    Each epoch evaluates ``circuits_per_sample`` circuits for every training sample (the
    forward pass and the gradient's shifted circuits) and, with a validation set, one
    circuit per validation sample (the trainer's end-of-epoch pass). Every evaluation is
    one job of ``shots`` shots (``None``: exact, which only free backends offer). Early
    stopping can only make the real run cheaper.
    """

    epochs: int
    n_samples: int
    batch_size: int
    circuits_per_sample: int
    n_validation: int
    shots: int | None
    cost_per_job: float

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.n_samples / self.batch_size)

    @property
    def circuits_per_step(self) -> int:
        """Circuits of one full batch (the last batch of an epoch may be smaller)."""
        return self.circuits_per_sample * min(self.batch_size, self.n_samples)

    @property
    def training_jobs(self) -> int:
        return self.epochs * self.n_samples * self.circuits_per_sample

    @property
    def validation_jobs(self) -> int:
        return self.epochs * self.n_validation

    @property
    def jobs(self) -> int:
        return self.training_jobs + self.validation_jobs

    @property
    def total(self) -> float:
        return self.jobs * self.cost_per_job

    def describe_jobs(self) -> str:
        """How the job count comes about, e.g. ``20 epochs x 120 samples x 49 circuits``."""
        train = f"{self.n_samples} samples x {self.circuits_per_sample} circuits"
        if not self.n_validation:
            return f"{self.epochs} epochs x {train} = {self.jobs:,} jobs"
        return (
            f"{self.epochs} epochs x ({train} + {self.n_validation} validation samples x 1) "
            f"= {self.jobs:,} jobs"
        )

    def describe(self) -> str:
        shots = "exact" if self.shots is None else f"{self.shots} shots"
        return (
            f"{self.describe_jobs()} of {shots} at ${self.cost_per_job:,.4f} each: "
            f"${self.total:,.2f}"
        )


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CostPlanError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def plan_training_cost(
    price: PriceModel,
    circuit: Circuit,
    *,
    shots: int | None,
    epochs: int,
    n_samples: int,
    batch_size: int,
    n_validation: int = 0,
    gradient_evaluations: int | None = None,
    error_mitigation: bool | None = None,
) -> CostPlan:
    """The plan of training ``circuit`` with parameter-shift gradients for ``epochs`` epochs.

    Every training sample costs ``2 * weights + 1`` circuit evaluations per epoch (two
    shifted circuits per weight and the forward pass; ``gradient_evaluations`` overrides
    that count), every one of the ``n_validation`` validation samples one. ``shots=None``
    plans exact evaluations, which a priced backend refuses with :class:`ShotsError`.
    """
    epochs = _count("epochs", epochs, 1)
    n_samples = _count("n_samples", n_samples, 1)
    batch_size = _count("batch_size", batch_size, 1)
    n_validation = _count("n_validation", n_validation, 0)
    weights = len(circuit.parameters_of_kind("weight"))
    per_sample = (
        2 * weights + 1
        if gradient_evaluations is None
        else _count("gradient_evaluations", gradient_evaluations, 1)
    )
    if shots is None:
        if not price.is_free:
            raise ShotsError("a priced backend has no exact mode: plan with a shot count")
        per_job = 0.0
    else:
        per_job = price.circuit_cost(circuit, shots, error_mitigation=error_mitigation)
    return CostPlan(epochs, n_samples, batch_size, per_sample, n_validation, shots, per_job)
