"""Price models: what a job costs before it is sent, and what a whole training run will cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .circuit import Circuit
from .errors import ShotsError

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
    """The cost of a whole training configuration, before anything runs."""

    jobs: int
    cost_per_job: float
    total: float
    epochs: int
    batches_per_epoch: int
    circuits_per_step: int
    shots: int

    def describe(self) -> str:
        return (
            f"{self.epochs} epochs x {self.batches_per_epoch} batches x "
            f"{self.circuits_per_step} circuits per step = {self.jobs:,} jobs of {self.shots} "
            f"shots at ${self.cost_per_job:,.4f} each: ${self.total:,.2f}"
        )


def plan_training_cost(
    price: PriceModel,
    circuit: Circuit,
    *,
    shots: int,
    epochs: int,
    n_samples: int,
    batch_size: int,
    gradient_evaluations: int | None = None,
    error_mitigation: bool | None = None,
) -> CostPlan:
    """Cost of training with parameter shift: each step evaluates ``2P + 1`` circuits per sample.

    ``gradient_evaluations`` overrides the circuits per sample per step (default
    ``2 * weights + 1``, the parameter-shift count plus the forward pass).
    """
    if epochs < 1 or n_samples < 1 or batch_size < 1:
        raise ValueError("epochs, n_samples and batch_size must be positive")
    weights = len(circuit.parameters_of_kind("weight"))
    per_sample = gradient_evaluations if gradient_evaluations is not None else 2 * weights + 1
    batches = math.ceil(n_samples / batch_size)
    circuits_per_step = per_sample * min(batch_size, n_samples)
    jobs = epochs * per_sample * n_samples  # the last, smaller batch included exactly
    per_job = price.circuit_cost(circuit, shots, error_mitigation=error_mitigation)
    return CostPlan(jobs, per_job, jobs * per_job, epochs, batches, circuits_per_step, shots)
