"""One thread's share of a simulator run: which rows to simulate and how to read them out.

A run is split into chunks, one per worker thread. Without twins (see :mod:`.twins`) a
chunk is a strided slice of the bindings. With twins, each chunk takes a strided slice
of the directly simulated bindings and of the ``z`` rows, plus a copy of every ``y`` row
its ``z`` rows pair with (prefix sharing makes a copy of a row already in the chunk
free), so every twin is recovered inside one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..base import RunRequest
from ..circuit import Circuit
from .plan import SimulationPlan
from .statevector import PauliMeasurement, iter_final_states, marginal_probabilities
from .twins import TwinLayout

__all__ = ["ChunkResult", "ChunkSettings", "ChunkWork", "plan_chunks", "simulate_chunk"]

#: ``z`` rows measured against their ``y`` per step (bounds the temporaries' size).
_CROSS_BLOCK = 4

States = NDArray[np.complexfloating]
_NO_STATE: States = np.zeros((0,), dtype=np.complex128)


@dataclass(frozen=True, slots=True)
class ChunkWork:
    """Rows to simulate and, per binding answered by the chunk, where its state comes from.

    Binding ``direct[i]`` is row ``direct_row[i]`` of ``values``; binding ``twins[i]`` is
    ``cos[i] * row(y_row[i]) + sin[i] * row(z_row[i])``.
    """

    values: NDArray[np.float64]
    direct: NDArray[np.intp]
    direct_row: NDArray[np.intp]
    twins: NDArray[np.intp]
    y_row: NDArray[np.intp]
    z_row: NDArray[np.intp]
    cos: NDArray[np.float64]
    sin: NDArray[np.float64]

    @property
    def kept_rows(self) -> NDArray[np.intp]:
        """Rows whose final states must be kept until the twins are read out."""
        return np.unique(np.concatenate([self.y_row, self.z_row]))


def plan_chunks(
    values: NDArray[np.float64], layout: TwinLayout | None, n_chunks: int
) -> list[ChunkWork]:
    """Deal a batch out to ``n_chunks`` threads, with or without twins."""
    b = values.shape[0]
    if layout is None:
        out = []
        for k in range(n_chunks):
            bindings = np.arange(k, b, n_chunks, dtype=np.intp)
            none, zero = np.zeros(0, dtype=np.intp), np.zeros(0)
            rows = np.arange(bindings.shape[0])
            out.append(ChunkWork(values[bindings], bindings, rows, none, none, none, zero, zero))
        return out
    d = layout.direct.shape[0]
    z_rows = np.arange(d, layout.evolved.shape[0], dtype=np.intp)
    works = []
    for k in range(n_chunks):
        direct_rows = np.arange(k, d, n_chunks, dtype=np.intp)
        mine = np.isin(layout.z_row, z_rows[k::n_chunks])
        partners = np.setdiff1d(np.unique(layout.y_row[mine]), direct_rows)
        rows = np.concatenate([direct_rows, z_rows[k::n_chunks], partners])
        local = np.full(layout.evolved.shape[0], -1, dtype=np.intp)
        local[rows] = np.arange(rows.shape[0])
        works.append(
            ChunkWork(
                values=layout.evolved[rows],
                direct=layout.direct[direct_rows],
                direct_row=local[direct_rows],
                twins=layout.twins[mine],
                y_row=local[layout.y_row[mine]],
                z_row=local[layout.z_row[mine]],
                cos=layout.cos[mine],
                sin=layout.sin[mine],
            )
        )
    return works


@dataclass(frozen=True, slots=True)
class ChunkSettings:
    dtype: type[np.complexfloating]
    max_rows: int
    seed: int | None
    measurement: PauliMeasurement | None


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """Answers for ``bindings``: expectations ``[len, n_obs]`` or one counts dict each."""

    bindings: NDArray[np.intp]
    distinct_states: int
    expectations: NDArray[np.float64] | None = None
    counts: list[dict[str, int]] | None = None


def _binding_rng(seed: int, binding: int) -> np.random.Generator:
    # One stream per binding: results do not depend on how the batch was chunked.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(binding,))))


def simulate_chunk(
    plan: SimulationPlan,
    circuit: Circuit,
    request: RunRequest,
    work: ChunkWork,
    settings: ChunkSettings,
) -> ChunkResult:
    groups = iter_final_states(plan, work.values, settings.dtype, settings.max_rows)
    kept = work.kept_rows
    slot = np.full(work.values.shape[0], -1, dtype=np.intp)
    slot[kept] = np.arange(kept.shape[0])
    # Final states of y and z rows, as views: each branch's buffers are its own, so
    # keeping a row costs no copy (and no freshly faulted-in memory).
    stash: list[States] = [_NO_STATE] * kept.shape[0]
    bindings = np.concatenate([work.direct, work.twins])
    distinct = 0

    if settings.measurement is not None:
        measurement = settings.measurement
        terms = np.empty((work.values.shape[0], len(measurement.terms)))
        for states, owner, rows in groups:
            distinct += states.shape[0]
            terms[rows] = measurement.term_values(states)[owner]
            _keep(stash, slot, states, owner, rows)
        values = np.concatenate(
            [terms[work.direct_row], _twin_terms(work, terms, stash, slot, measurement)]
        )
        if request.shots is None:
            return ChunkResult(bindings, distinct, expectations=values @ measurement.weights)
        assert settings.seed is not None
        exact = np.clip(values, -1.0, 1.0)
        estimated = np.empty_like(exact)
        for i, binding in enumerate(bindings):
            rng = _binding_rng(settings.seed, int(binding))
            plus = rng.binomial(request.shots, (1.0 + exact[i]) / 2.0)
            estimated[i] = 2.0 * plus / request.shots - 1.0
        return ChunkResult(bindings, distinct, expectations=estimated @ measurement.weights)

    assert request.shots is not None
    assert settings.seed is not None
    n = circuit.num_qubits
    measured = [(m.qubit, m.clbit) for m in circuit.measurements] or [(q, q) for q in range(n)]
    width = 1 + max(c for _, c in measured)
    labels = _Labeler(sorted(c for _, c in measured), width)
    binding_of_row = np.full(work.values.shape[0], -1, dtype=np.intp)
    binding_of_row[work.direct_row] = work.direct
    counts: dict[int, dict[str, int]] = {}

    def draw(binding: int, probs: NDArray[np.float64]) -> None:
        assert settings.seed is not None
        assert request.shots is not None
        drawn = _binding_rng(settings.seed, binding).multinomial(request.shots, probs)
        counts[binding] = {labels(int(i)): int(drawn[i]) for i in np.flatnonzero(drawn)}

    for states, owner, rows in groups:
        distinct += states.shape[0]
        _keep(stash, slot, states, owner, rows)
        probs = _normalized(marginal_probabilities(states, n, measured))
        for row, r in zip(owner, rows, strict=True):
            if binding_of_row[r] >= 0:
                draw(int(binding_of_row[r]), probs[row])
    for i, binding in enumerate(work.twins):
        state = work.cos[i] * stash[slot[work.y_row[i]]] + work.sin[i] * stash[slot[work.z_row[i]]]
        draw(int(binding), _normalized(marginal_probabilities(state[None], n, measured))[0])
    return ChunkResult(bindings, distinct, counts=[counts[int(b)] for b in bindings])


def _keep(
    stash: list[States],
    slot: NDArray[np.intp],
    states: States,
    owner: NDArray[np.intp],
    rows: NDArray[np.intp],
) -> None:
    for i in np.flatnonzero(slot[rows] >= 0):
        stash[slot[rows[i]]] = states[owner[i]]


def _twin_terms(
    work: ChunkWork,
    terms: NDArray[np.float64],
    stash: list[States],
    slot: NDArray[np.intp],
    measurement: PauliMeasurement,
) -> NDArray[np.float64]:
    """``<x|P|x> = c² <y|P|y> + s² <z|P|z> + 2cs Re<y|P|z>`` for every twin ``x``."""
    if work.twins.shape[0] == 0:
        return np.zeros((0, terms.shape[1]))
    pairs, pair_of = np.unique(
        np.stack([work.y_row, work.z_row], axis=1), axis=0, return_inverse=True
    )
    cross = np.empty((pairs.shape[0], terms.shape[1]))
    # Pairs are sorted by y: take each y once, with its z rows a few at a time so the
    # temporaries stay small.
    starts = np.flatnonzero(np.r_[True, pairs[1:, 0] != pairs[:-1, 0]])
    for first, stop in zip(starts, np.r_[starts[1:], pairs.shape[0]], strict=True):
        y = stash[slot[pairs[first, 0]]][None]
        for lo in range(first, stop, _CROSS_BLOCK):
            hi = min(lo + _CROSS_BLOCK, stop)
            z = np.stack([stash[slot[r]] for r in pairs[lo:hi, 1]])
            cross[lo:hi] = measurement.cross_term_values(y, z)
    c, s = work.cos[:, None], work.sin[:, None]
    out: NDArray[np.float64] = (
        c * c * terms[work.y_row] + s * s * terms[work.z_row] + 2 * c * s * cross[pair_of.ravel()]
    )
    return out


def _normalized(probs: NDArray[np.float64]) -> NDArray[np.float64]:
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


class _Labeler:
    """Turn a compact outcome index (bit k = k-th smallest measured clbit) into a bit string."""

    def __init__(self, clbits: list[int], width: int) -> None:
        self._clbits = clbits
        self._width = width
        self._dense = clbits == list(range(width))

    def __call__(self, index: int) -> str:
        if self._dense:
            return format(index, f"0{self._width}b")
        value = 0
        for k, c in enumerate(self._clbits):
            value |= ((index >> k) & 1) << c
        return format(value, f"0{self._width}b")
