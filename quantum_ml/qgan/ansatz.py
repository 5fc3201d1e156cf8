"""Ready generator circuits (weights only) and initial states.

:func:`ry_cz_ansatz` is Qiskit's ``TwoLocal(n, "ry", "cz", entanglement, reps)`` and
:func:`efficient_su2` is ``qiskit.circuit.library.efficient_su2(n, reps)``: the same
gates in the same order, and the same parameters ``θ[0], θ[1], ...`` in the same order,
so weights move between them unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy.stats import norm

from backends.circuit import Circuit
from backends.parameters import Parameter

from ..encoders import state_preparation_circuit
from ..errors import GeneratorError
from .grid import Grid

__all__ = ["compose", "efficient_su2", "hardware_efficient_ansatz", "initial_state", "ry_cz_ansatz"]

Entanglement = Literal["linear", "reverse_linear", "circular", "full"]


def _check(n_qubits: int, reps: int) -> None:
    for name, value in (("n_qubits", n_qubits), ("reps", reps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GeneratorError(f"{name} must be an integer >= 1, got {value!r}")


def _pairs(n: int, entanglement: str) -> list[tuple[int, int]]:
    """Qiskit's entangler pairs, in Qiskit's order (``n_local``)."""
    if entanglement == "linear":
        return [(q, q + 1) for q in range(n - 1)]
    if entanglement == "reverse_linear":
        return [(q, q + 1) for q in reversed(range(n - 1))]
    if entanglement == "circular":
        return ([(n - 1, 0)] if n > 2 else []) + [(q, q + 1) for q in range(n - 1)]
    if entanglement == "full":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    raise GeneratorError(
        "entanglement must be 'linear', 'reverse_linear', 'circular' or 'full', got "
        f"{entanglement!r}"
    )


def _weights(count: int) -> list[Parameter]:
    # Qiskit's ParameterVector "θ" sorts θ[0] < θ[1] < ... < θ[10] numerically, so
    # Circuit.from_qiskit of Qiskit's circuit has the same parameters in the same order.
    return [Parameter(f"θ[{k}]") for k in range(count)]


def ry_cz_ansatz(n_qubits: int, reps: int = 1, entanglement: Entanglement = "linear") -> Circuit:
    """An RY layer, then ``reps`` times (CZ entangler, RY layer): the generator of Zoufal
    et al., ``TwoLocal(n, "ry", "cz", entanglement, reps)``; ``n * (reps + 1)`` weights."""
    _check(n_qubits, reps)
    pairs = _pairs(n_qubits, entanglement)
    theta = iter(_weights(n_qubits * (reps + 1)))
    c = Circuit(n_qubits, name=f"ry-cz-{n_qubits}x{reps}")
    for layer in range(reps + 1):
        if layer:
            for a, b in pairs:
                c.cz(a, b)
        for q in range(n_qubits):
            c.ry(next(theta), q)
    return c


def efficient_su2(
    n_qubits: int, reps: int = 3, entanglement: Entanglement = "reverse_linear"
) -> Circuit:
    """An RY layer and an RZ layer, then ``reps`` times (CX entangler, RY layer, RZ layer):
    ``qiskit.circuit.library.efficient_su2(n, reps=reps)``; ``2n * (reps + 1)`` weights."""
    _check(n_qubits, reps)
    pairs = _pairs(n_qubits, entanglement)
    theta = iter(_weights(2 * n_qubits * (reps + 1)))
    c = Circuit(n_qubits, name=f"efficient-su2-{n_qubits}x{reps}")
    for layer in range(reps + 1):
        if layer:
            for a, b in pairs:
                c.cx(a, b)
        for q in range(n_qubits):
            c.ry(next(theta), q)
        for q in range(n_qubits):
            c.rz(next(theta), q)
    return c


def hardware_efficient_ansatz(n_qubits: int, reps: int = 1) -> Circuit:
    """``reps`` times (RY then RZ on each qubit, a CX chain ``(0,1), (1,2), ...``), then a
    last RY, RZ layer. Weights are ordered layer, qubit, then RY before RZ."""
    _check(n_qubits, reps)
    theta = iter(_weights(2 * n_qubits * (reps + 1)))
    c = Circuit(n_qubits, name=f"hea-{n_qubits}x{reps}")
    for layer in range(reps + 1):
        for q in range(n_qubits):
            c.ry(next(theta), q).rz(next(theta), q)
        if layer < reps:
            for q in range(n_qubits - 1):
                c.cx(q, q + 1)
    return c


def initial_state(
    kind: str | None,
    grid: Grid | None = None,
    mu: float | None = None,
    sigma: float | None = None,
    *,
    n_qubits: int | None = None,
) -> Circuit | None:
    """The parameter-free circuit before the ansatz, or ``None``.

    ``"uniform"``: H on every qubit (of ``grid``, or ``n_qubits``). ``"normal"``: the exact
    state whose probabilities are the normal density at the points of a 1-D ``grid``,
    normalized over them (the discretization of Qiskit's ``NormalDistribution``); ``mu``
    and ``sigma`` default to the grid's middle and a sixth of its width.
    """
    if kind is None:
        return None
    if grid is not None and not isinstance(grid, Grid):
        raise GeneratorError(f"grid must be a Grid, got {type(grid).__name__}")
    width = grid.n_qubits if grid is not None else n_qubits
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise GeneratorError("an initial state needs a grid or n_qubits >= 1")
    if kind == "uniform":
        c = Circuit(width, name="uniform")
        for q in range(width):
            c.h(q)
        return c
    if kind == "normal":
        if grid is None or grid.dim != 1:
            raise GeneratorError("the 'normal' initial state needs a 1-D grid")
        lo, hi = grid.bounds[0]
        centre = (lo + hi) / 2 if mu is None else float(mu)
        spread = (hi - lo) / 6 if sigma is None else float(sigma)
        if not (math.isfinite(centre) and math.isfinite(spread) and spread > 0):
            raise GeneratorError(f"mu must be finite and sigma > 0, got mu={mu!r}, sigma={sigma!r}")
        density = norm(centre, spread).pdf(grid.values(0))
        if not density.sum() > 0:
            raise GeneratorError(f"the normal ({centre:g}, {spread:g}) has no mass on the grid")
        return state_preparation_circuit(np.sqrt(density / density.sum()), width)
    raise GeneratorError(f"initial_state must be 'uniform', 'normal' or None, got {kind!r}")


def compose(prefix: Circuit | None, ansatz: Circuit) -> Circuit:
    """``prefix`` (parameter-free) followed by ``ansatz``'s gates, with ``ansatz``'s
    parameters in its order. Measurements are not carried over."""
    if not isinstance(ansatz, Circuit) or not isinstance(prefix, Circuit | None):
        raise GeneratorError("compose takes backends.Circuit objects (prefix may be None)")
    if prefix is not None and prefix.num_qubits != ansatz.num_qubits:
        raise GeneratorError(
            f"the initial state has {prefix.num_qubits} qubits, the ansatz {ansatz.num_qubits}"
        )
    if prefix is not None and prefix.num_parameters:
        raise GeneratorError(
            "an initial state must have no parameters, got "
            f"{', '.join(p.name for p in prefix.parameters)}"
        )
    phase = ansatz.global_phase + (prefix.global_phase if prefix is not None else 0.0)
    name = ansatz.name if prefix is None else f"{prefix.name}+{ansatz.name}"
    out = Circuit(ansatz.num_qubits, parameters=ansatz.parameters, global_phase=phase, name=name)
    before = prefix.instructions if prefix is not None else ()
    for inst in (*before, *ansatz.instructions):
        out.append(inst.name, inst.qubits, inst.angles)
    return out
