"""Bindings one Pauli-rotation angle apart are linear combinations of two simulations.

A rotation ``U(a) = exp(-i a G / 2)`` with ``G² = I`` satisfies
``U(a + δ) = cos(δ/2) U(a) + sin(δ/2) U(a + π)``. Every other gate acts linearly, so when
binding ``x`` equals binding ``y`` except for the angle of one such gate, shifted by ``δ``,
their final states satisfy::

    |x> = cos(δ/2) |y> + sin(δ/2) |z>

where ``z`` is ``y`` with that angle shifted by ``π``. All bindings ``y + δ_i e_c`` share
the same ``z``, so a parameter-shift batch (``±π/2`` on each angle) or a central
difference (``±h``) needs one extra simulation per angle instead of two. Expectations of
``x`` follow exactly from ``y``, ``z`` and their cross term::

    <x|P|x> = cos² <y|P|y> + sin² <z|P|z> + 2 cos sin Re <y|P|z>

This module only finds such groups and lays out what to simulate; the simulator measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..circuit import Circuit

__all__ = ["TwinLayout", "find_twins", "rotation_columns"]

#: Gates ``exp(-i a G / 2)`` with ``G² = I``: the identity above holds for their angle.
_ROTATIONS = frozenset(("rx", "ry", "rz", "rxx", "ryy", "rzz"))
#: A group is only worth a ``z`` when it replaces at least this many bindings.
_MIN_REPLACED = 2


def rotation_columns(circuit: Circuit) -> dict[int, float]:
    """Parameters that feed exactly one angle, of a Pauli rotation: ``{index: coefficient}``.

    Only for those is a shift of the parameter a shift of one rotation angle (by
    ``coefficient`` times the parameter shift).
    """
    position = {p.name: i for i, p in enumerate(circuit.parameters)}
    uses: dict[int, list[tuple[str, float]]] = {}
    for inst in circuit.instructions:
        for a in inst.angles:
            if a.parameter is not None and a.coeff != 0.0:
                index = position[a.parameter.name]
                uses.setdefault(index, []).append((inst.name, a.coeff))
    return {p: u[0][1] for p, u in uses.items() if len(u) == 1 and u[0][0] in _ROTATIONS}


@dataclass(frozen=True, slots=True)
class TwinLayout:
    """What to simulate for a batch, and how to recover every binding from it.

    ``evolved`` rows are simulated: first the bindings kept as themselves, then one ``z``
    per group. Binding ``direct[i]`` is row ``direct_row[i]``; binding ``twins[i]`` is
    ``cos[i] * row(y_row[i]) + sin[i] * row(z_row[i])``.
    """

    evolved: NDArray[np.float64]
    direct: NDArray[np.intp]
    direct_row: NDArray[np.intp]
    twins: NDArray[np.intp]
    y_row: NDArray[np.intp]
    z_row: NDArray[np.intp]
    cos: NDArray[np.float64]
    sin: NDArray[np.float64]


def find_twins(values: NDArray[np.float64], columns: dict[int, float]) -> TwinLayout | None:
    """Group the bindings of ``values`` ``[B, P]`` that differ only in one of ``columns``.

    Returns None when no group would save a simulation. Detection is exact: candidate
    rows are found by a hash of their bit patterns with one column left out (integer
    arithmetic modulo 2**64, so equal rows hash equal), then compared value by value.
    """
    b, p = values.shape
    if b < 1 + _MIN_REPLACED or not columns:
        return None
    clean = np.ascontiguousarray(values + 0.0)  # -0.0 and 0.0 compare equal: same bits
    bits = clean.view(np.uint64)
    weights = np.random.default_rng(0x7E1A).integers(1, 2**63, p, dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = bits * weights
        total = mixed.sum(axis=1, dtype=np.uint64)
    role = np.zeros(b, dtype=np.int8)  # 0: plain, 1: some group's y, 2: recovered twin
    rows = np.arange(b, dtype=np.intp)
    groups: list[tuple[NDArray[np.intp], int, NDArray[np.intp], NDArray[np.intp]]] = []
    for c in sorted(columns):
        with np.errstate(over="ignore"):
            rest = total - mixed[:, c]
        order = np.lexsort((rows, rest))  # by hash, then by row: members in row order
        ordered = rest[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sizes = np.diff(np.r_[starts, b])
        big = sizes > _MIN_REPLACED
        if not big.any():
            continue
        gid = np.repeat(np.cumsum(big) - 1, sizes)[np.repeat(big, sizes)]
        members = order[np.repeat(big, sizes)]
        first = members[np.r_[0, np.flatnonzero(np.diff(gid)) + 1]]
        # Exact check against the group's first row: equal everywhere except column c.
        differs = clean[members] != clean[first[gid]]
        differs[:, c] = False
        fits = ~differs.any(axis=1) & (role[members] != 2)
        members, gid = members[fits], gid[fits]
        if members.shape[0] == 0:
            continue
        n_groups = int(gid.max()) + 1
        # y: the group's existing anchor (a y of an earlier column) if any, else its
        # first plain row; the rows that can become twins are the other plain ones.
        none = np.iinfo(np.intp).max
        anchor = np.full(n_groups, none)
        np.minimum.at(anchor, gid, np.where(role[members] == 1, members, none))
        plain = np.full(n_groups, none)
        np.minimum.at(plain, gid, np.where(role[members] == 0, members, none))
        y = np.where(anchor != none, anchor, plain)
        candidate = (role[members] == 0) & (members != y[gid]) & (y[gid] != none)
        candidate &= clean[members, c] != clean[np.minimum(y[gid], b - 1), c]
        counts = np.bincount(gid[candidate], minlength=n_groups)
        worth = counts >= _MIN_REPLACED
        candidate &= worth[gid]
        if not candidate.any():
            continue
        role[y[worth]] = 1
        role[members[candidate]] = 2
        groups.append((y[worth], c, members[candidate], gid[candidate]))
    if not groups:
        return None
    direct = np.flatnonzero(role != 2)
    row_of = np.full(b, -1, dtype=np.intp)
    row_of[direct] = np.arange(direct.shape[0])
    z_parts, twins, y_rows, z_rows, cos, sin = [], [], [], [], [], []
    z_count = 0
    for ys, c, xs, x_gid in groups:
        coeff = columns[c]
        # Group ids of this column, renumbered to the groups that were kept.
        kept = np.unique(x_gid)
        local = np.searchsorted(kept, x_gid)
        z = clean[ys].copy()
        z[:, c] += math.pi / coeff
        z_parts.append(z)
        y_of_x = ys[local]
        delta = coeff * (clean[xs, c] - clean[y_of_x, c])
        twins.append(xs)
        y_rows.append(row_of[y_of_x])
        z_rows.append(direct.shape[0] + z_count + local)
        cos.append(np.cos(delta / 2))
        sin.append(np.sin(delta / 2))
        z_count += ys.shape[0]
    return TwinLayout(
        evolved=np.concatenate([clean[direct], *z_parts]),
        direct=direct,
        direct_row=row_of[direct],
        twins=np.concatenate(twins),
        y_row=np.concatenate(y_rows).astype(np.intp),
        z_row=np.concatenate(z_rows).astype(np.intp),
        cos=np.concatenate(cos),
        sin=np.concatenate(sin),
    )
