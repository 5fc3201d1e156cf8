"""Export of the circuit model as an OpenQASM 3 program."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from ..errors import UnknownGateError

if TYPE_CHECKING:
    from ..circuit import Circuit, Instruction
    from ..parameters import Angle

__all__ = ["circuit_to_qasm3", "parameter_identifiers"]

# Gates of stdgates.inc whose definitions there equal our matrices exactly, global phase
# included, in every revision of the standard library (``rz`` carries its ``gphase(-λ/2)``).
_STDGATE_LIST = "h x y z s sdg t tdg sx rx ry rz p cx cy cz swap crx cry crz"
_STDGATES = frozenset(_STDGATE_LIST.split())

# stdgates.inc has no two-qubit Pauli rotations; each body below is exactly
# exp(-iθ/2 P⊗P): the CX-RZ-CX ladder is exp(-iθ/2 Z⊗Z), and H (X -> Z) or RX(π/2)
# (Y -> Z, since RX(π/2) Y RX(-π/2) = Z) turns P⊗P into Z⊗Z around it. The local names
# are reserved for them, so no name is ever declared twice, shadowing rules aside.
_GATE_LOCALS = ("_theta", "_q0", "_q1")
_PAIR_ROTATION_DEFINITIONS: dict[str, str] = {
    "rxx": (
        "gate rxx(_theta) _q0, _q1 { h _q0; h _q1; cx _q0, _q1; rz(_theta) _q1; cx _q0, _q1; "
        "h _q0; h _q1; }"
    ),
    "ryy": (
        "gate ryy(_theta) _q0, _q1 { rx(pi/2) _q0; rx(pi/2) _q1; cx _q0, _q1; "
        "rz(_theta) _q1; cx _q0, _q1; rx(-pi/2) _q0; rx(-pi/2) _q1; }"
    ),
    "rzz": "gate rzz(_theta) _q0, _q1 { cx _q0, _q1; rz(_theta) _q1; cx _q0, _q1; }",
}

_QUBITS = "q"
_CLBITS = "c"

# Names a parameter may not take: keywords and built-ins of OpenQASM 3, the gates in scope,
# the two registers and the local names of the gate definitions above.
_RESERVED_WORDS = """
    OPENQASM include defcalgrammar def cal defcal gate extern box let break continue if else
    end return for while in switch case default nop pragma input output const readonly
    mutable qreg qubit creg bool bit int uint float angle complex array void duration
    stretch gphase inv pow ctrl negctrl dim durationof delay reset measure barrier true
    false im pi π tau τ euler ℇ U sizeof arcsin arccos arctan ceiling cos exp floor log mod
    popcount rotl rotr sin sqrt tan real imag port frame waveform
    p x y z h s sdg t tdg sx rx ry rz cx cy cz cp crx cry crz ch swap ccx cswap cu CX phase
    cphase id u1 u2 u3 rxx ryy rzz
"""
_RESERVED: frozenset[str] = frozenset([*_RESERVED_WORDS.split(), *_GATE_LOCALS, _QUBITS, _CLBITS])

# Letters OpenQASM 3 accepts in identifiers besides ASCII letters and "_" (its lexer's
# ValidUnicode fragment); digits are ASCII only and may not come first.
_UNICODE_LETTER_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl"})


def _is_identifier_char(ch: str, *, first: bool) -> bool:
    if ch == "_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z"):
        return True
    if "0" <= ch <= "9":
        return not first
    return ord(ch) > 127 and unicodedata.category(ch) in _UNICODE_LETTER_CATEGORIES


def _is_valid_identifier(name: str) -> bool:
    return (
        bool(name)
        and name not in _RESERVED
        and all(_is_identifier_char(ch, first=i == 0) for i, ch in enumerate(name))
    )


def _sanitized(name: str) -> str:
    out = "".join(ch if _is_identifier_char(ch, first=False) else "_" for ch in name)
    if not _is_identifier_char(out[0], first=True):
        out = "_" + out
    if out in _RESERVED:
        out += "_"
    return out


def parameter_identifiers(circuit: Circuit) -> dict[str, str]:
    """The OpenQASM 3 ``input`` name of each parameter, keyed by parameter name.

    A name that is already a valid identifier (not a keyword, built-in, gate name of
    stdgates.inc, ``rxx``/``ryy``/``rzz``, the registers ``q``/``c`` or the local names
    ``_theta``/``_q0``/``_q1`` of the gate definitions) is kept. Any other
    name has each character an identifier cannot hold replaced by ``_``, gets a leading
    ``_`` if it starts with a digit and a trailing ``_`` if it is reserved; if that is
    taken (by a kept name or an earlier sanitized one, in :attr:`Circuit.parameters`
    order) the first free ``<name>_1``, ``<name>_2``, ... is used. So ``θ[0]`` becomes
    ``θ_0_``, ``pi`` becomes ``pi_``, and ``a[0]`` next to a parameter named ``a_0_``
    becomes ``a_0__1``. The mapping depends only on the circuit's parameter names.
    """
    names = [p.name for p in circuit.parameters]
    mapping = {name: name for name in names if _is_valid_identifier(name)}
    used = set(mapping.values())
    for name in names:
        if name in mapping:
            continue
        base = candidate = _sanitized(name)
        suffix = 0
        while candidate in used:
            suffix += 1
            candidate = f"{base}_{suffix}"
        mapping[name] = candidate
        used.add(candidate)
    return {name: mapping[name] for name in names}


def _format_angle(angle: Angle, identifiers: dict[str, str]) -> str:
    """``coeff*name + offset`` with every float at full (``repr``) precision."""
    if angle.is_constant or angle.parameter is None:
        return repr(float(angle.offset))
    ident = identifiers[angle.parameter.name]
    if angle.coeff == 1.0:
        text = ident
    elif angle.coeff == -1.0:
        text = f"-{ident}"
    else:
        text = f"{float(angle.coeff)!r}*{ident}"
    if angle.offset > 0.0:
        text += f" + {float(angle.offset)!r}"
    elif angle.offset < 0.0:
        text += f" - {float(-angle.offset)!r}"
    return text


def _statements(inst: Instruction, identifiers: dict[str, str]) -> list[str]:
    angles = [_format_angle(a, identifiers) for a in inst.angles]
    qubits = ", ".join(f"{_QUBITS}[{q}]" for q in inst.qubits)
    if inst.name == "u":
        # U(θ, φ, λ) = P(φ)·RY(θ)·P(λ). Not the built-in ``U``: OpenQASM 3 revised its
        # matrix by a phase e^{iθ/2} (and ``u3`` differs by e^{-i(φ+λ)/2}), while ``p`` and
        # ``ry`` mean the same in every revision, so this reads back exactly everywhere.
        theta, phi, lam = angles
        return [f"p({lam}) {qubits};", f"ry({theta}) {qubits};", f"p({phi}) {qubits};"]
    if inst.name not in _STDGATES and inst.name not in _PAIR_ROTATION_DEFINITIONS:
        raise UnknownGateError(f"gate {inst.name!r} has no OpenQASM 3 equivalent")
    if angles:
        return [f"{inst.name}({', '.join(angles)}) {qubits};"]
    return [f"{inst.name} {qubits};"]


def circuit_to_qasm3(circuit: Circuit) -> str:
    """Write ``circuit`` as an OpenQASM 3 program.

    Each parameter is an ``input float[64]`` in :attr:`Circuit.parameters` order, named as
    :func:`parameter_identifiers` says. Qubit ``i`` is ``q[i]``; measurements write
    ``c[k] = measure q[j];`` into a ``bit[m] c`` register sized to the highest clbit.
    Gates come from stdgates.inc (``u`` as ``p``, ``ry``, ``p``) plus exact definitions of
    ``rxx``/``ryy``/``rzz`` for those used; a nonzero global phase is a ``gphase``. The
    program's unitary equals the circuit's exactly, global phase included.
    """
    identifiers = parameter_identifiers(circuit)
    lines = ["OPENQASM 3.0;", 'include "stdgates.inc";']
    lines.extend(f"input float[64] {identifiers[p.name]};" for p in circuit.parameters)
    used = {inst.name for inst in circuit.instructions}
    lines.extend(text for name, text in _PAIR_ROTATION_DEFINITIONS.items() if name in used)
    lines.append(f"qubit[{circuit.num_qubits}] {_QUBITS};")
    if circuit.measurements:
        lines.append(f"bit[{circuit.num_clbits}] {_CLBITS};")
    if circuit.global_phase != 0.0:
        lines.append(f"gphase({float(circuit.global_phase)!r});")
    for inst in circuit.instructions:
        lines.extend(_statements(inst, identifiers))
    lines.extend(
        f"{_CLBITS}[{m.clbit}] = measure {_QUBITS}[{m.qubit}];" for m in circuit.measurements
    )
    return "\n".join(lines) + "\n"
