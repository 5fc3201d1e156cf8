"""Turn IonQ's probability results into counts and expectation values in Qiskit's bit order.

IonQ keys a result by the decimal value of the outcome with qubit ``q`` in bit ``q``
(qubit 0 least significant), which is exactly this package's (and Qiskit's) order, so a
key is an outcome index as it stands; nothing is reversed here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from ..errors import JobFailedError

__all__ = [
    "Distribution",
    "binding_rng",
    "histogram_counts",
    "label_counts",
    "parity_expectations",
    "parse_distribution",
    "sample_counts",
]

#: Outcome indices and their probabilities (or frequencies), indices ascending.
Distribution = tuple[NDArray[np.int64], NDArray[np.float64]]


def parse_distribution(data: object, num_qubits: int, job_id: str) -> Distribution:
    """IonQ's ``{"<decimal outcome>": probability}`` as arrays, normalized to sum 1."""
    if not isinstance(data, Mapping) or not data:
        raise JobFailedError(f"IonQ job {job_id} returned no probabilities: {data!r:.200}")
    outcomes = np.empty(len(data), dtype=np.int64)
    probs = np.empty(len(data))
    for k, (key, value) in enumerate(data.items()):
        try:
            outcomes[k] = int(key)
            probs[k] = float(value)
        except (TypeError, ValueError):
            raise JobFailedError(
                f"IonQ job {job_id} returned a malformed probability {key!r}: {value!r}"
            ) from None
    bad = (outcomes < 0) | (outcomes >= 1 << num_qubits) | ~np.isfinite(probs) | (probs < 0)
    if bad.any() or not math.isclose(probs.sum(), 1.0, rel_tol=0, abs_tol=1e-6):
        raise JobFailedError(
            f"IonQ job {job_id} returned probabilities that are not a distribution over "
            f"{num_qubits} qubits (sum {probs.sum():.6g})"
        )
    order = np.argsort(outcomes)
    return outcomes[order], probs[order] / probs.sum()


def binding_rng(seed: int, *key: int) -> np.random.Generator:
    """One stream per (binding, job) so that results do not depend on completion order."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def sample_counts(
    probs: NDArray[np.float64], shots: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """``shots`` samples of an exact distribution, as counts per outcome."""
    counts: NDArray[np.int64] = rng.multinomial(shots, probs).astype(np.int64)
    return counts


def histogram_counts(freqs: NDArray[np.float64], shots: int) -> NDArray[np.int64]:
    """Counts that sum to ``shots`` from measured frequencies (largest remainders round up)."""
    scaled = freqs * shots
    counts = np.floor(scaled).astype(np.int64)
    short = shots - int(counts.sum())
    if short > 0:
        counts[np.argsort(counts - scaled, kind="stable")[:short]] += 1
    return counts


def label_counts(
    outcomes: NDArray[np.int64],
    counts: NDArray[np.int64],
    measured: Sequence[tuple[int, int]],
    width: int,
) -> dict[str, int]:
    """Counts keyed by classical bit strings (clbit 0 rightmost) of the measured qubits."""
    values = np.zeros_like(outcomes)
    for qubit, clbit in measured:
        values |= ((outcomes >> qubit) & 1) << clbit
    keys, inverse = np.unique(values, return_inverse=True)
    totals = np.bincount(inverse, weights=counts, minlength=keys.size)
    return {
        format(int(key), f"0{width}b"): int(total)
        for key, total in zip(keys, totals, strict=True)
        if total > 0
    }


def parity_expectations(
    outcomes: NDArray[np.int64], weights: NDArray[np.float64], masks: Sequence[int]
) -> NDArray[np.float64]:
    """``sum_k w_k (-1)^{|outcome_k & mask|}`` for each mask: Pauli eigenvalues as parities."""
    out = np.empty(len(masks))
    for t, mask in enumerate(masks):
        parity = np.bitwise_count(outcomes & mask) & 1
        out[t] = float(np.dot(weights, 1.0 - 2.0 * parity))
    return out
