"""Independent references for sampled counts: Born-rule distributions and a chi-square test."""

from __future__ import annotations

from collections.abc import Sequence

from qiskit.quantum_info import Statevector
from scipy import stats

from backends import Circuit

from .randomcircuits import to_qiskit_reference

__all__ = ["assert_chi_square", "expected_distribution"]


def expected_distribution(circuit: Circuit, values: Sequence[float]) -> dict[str, float]:
    """Born-rule probabilities of the classical bit strings, from Qiskit's ``Statevector``."""
    measured = circuit.measurements or circuit.copy().measure_all().measurements
    pairs = sorted((m.clbit, m.qubit) for m in measured)
    width = 1 + pairs[-1][0]
    state = Statevector(to_qiskit_reference(circuit, list(values), measurements=False))
    out: dict[str, float] = {}
    for index, p in enumerate(state.probabilities(qargs=[q for _, q in pairs])):
        bits = ["0"] * width
        for k, (clbit, _) in enumerate(pairs):
            bits[width - 1 - clbit] = str((index >> k) & 1)
        key = "".join(bits)
        out[key] = out.get(key, 0.0) + float(p)
    return out


def assert_chi_square(counts: dict[str, int], expected: dict[str, float], shots: int) -> None:
    """Chi-square of ``counts`` against ``expected``, outcomes expected under 5 times pooled."""
    assert sum(counts.values()) == shots
    assert set(counts) <= {k for k, p in expected.items() if p > 1e-12}
    big = sorted(k for k, p in expected.items() if p * shots >= 5)
    observed = [counts.get(k, 0) for k in big]
    wanted = [expected[k] * shots for k in big]
    rest_obs, rest_exp = shots - sum(observed), shots - sum(wanted)
    if rest_exp >= 5:
        observed.append(rest_obs)
        wanted.append(rest_exp)
    else:
        wanted[-1] += rest_exp
        observed[-1] += rest_obs
    if len(wanted) > 1:
        assert stats.chisquare(observed, wanted).pvalue > 1e-4
