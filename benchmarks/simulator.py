"""Benchmark: one parameter-shift gradient of a hardware-efficient circuit, per simulator.

What it measures
----------------
The circuit has ``n`` qubits: angle encoding ``RY(pi * x_i)`` on every qubit, then ``L``
layers of ``RX(w) RY(w) RZ(w)`` on every qubit (``P = 3 n L`` separate weights) followed by
the CNOT chain ``cx(0, 1), ..., cx(n-2, n-1)``. The observables are ``<Z_i>`` on every qubit.

One parameter-shift gradient for one input ``x`` needs ``2P + 1`` bindings: the unshifted
weights, then for each weight ``k`` the weights with ``+pi/2`` and with ``-pi/2`` on weight
``k``. For a batch of ``B`` inputs that is ``B (2P + 1)`` bindings, ordered input-major.
Each contender evaluates the expectations of exactly those bindings:

* quantum-db's built-in ``SimulatorBackend`` (double and single precision), one ``run``
  over all ``B (2P + 1)`` bindings;
* PennyLane ``default.qubit`` and ``lightning.qubit`` with ``diff_method="parameter-shift"``:
  ``qml.jacobian`` (autograd) of the QNode with respect to the weights, once per input, as
  PennyLane users compute it (each call executes the ``2P + 1`` circuits);
* Qiskit ``StatevectorEstimator``: one PUB holding the circuit, the ``n`` observables and
  the ``B (2P + 1) x (n + P)`` array of values.

quantum-db's expectations are checked against Qiskit's, and the gradient they give against
PennyLane's Jacobians, to 1e-8 (double precision). Every timing is the best of ``k``
repeats after one warm-up (fewer repeats for cases slower than ``--slow-seconds``).

How to run
----------
From the repository root::

    python benchmarks/simulator.py            # full run, several minutes on 2 cores
    python benchmarks/simulator.py --quick    # extrapolate the slowest PennyLane case
    python benchmarks/simulator.py --profile  # also profile quantum-db at n=12, L=4, B=1

The Markdown table is printed and written to ``benchmarks/results/simulator.md`` together
with the machine (CPU count and model) and library versions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import math
import os
import platform
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends import Circuit, Parameter, SimulatorBackend  # noqa: E402

SEED = 1234
SIZES: tuple[tuple[int, int], ...] = ((8, 3), (12, 4))
BATCHES: tuple[int, ...] = (1, 32)
PROFILE_SIZE = (12, 4)
TOLERANCE = 1e-8
#: With ``--quick``, PennyLane default.qubit at n=12, B=32 is extrapolated from B=1 when
#: the estimate exceeds this many seconds.
QUICK_LIMIT_S = 120.0
QUICK_MIN_QUBITS = 12
RESULTS = ROOT / "benchmarks" / "results" / "simulator.md"

Array = NDArray[np.float64]


# --------------------------------------------------------------------------- problem
def num_weights(n: int, layers: int) -> int:
    return 3 * n * layers


def weight_index(n: int, layer: int, qubit: int, gate: int) -> int:
    """Index of the weight of rotation ``gate`` (0 = RX, 1 = RY, 2 = RZ) on ``qubit``."""
    return (layer * n + qubit) * 3 + gate


def z_labels(n: int) -> list[str]:
    """Qiskit-style labels of ``Z_i`` (rightmost character = qubit 0)."""
    return ["I" * (n - 1 - i) + "Z" + "I" * i for i in range(n)]


def shift_weights(weights: Array) -> Array:
    """The ``2P + 1`` weight rows of one gradient: unshifted, then ``+pi/2``, ``-pi/2`` per k."""
    p = weights.shape[0]
    rows = np.tile(weights, (2 * p + 1, 1))
    k = np.arange(p)
    rows[1 + 2 * k, k] += math.pi / 2
    rows[2 + 2 * k, k] -= math.pi / 2
    return rows


def shift_bindings(inputs: Array, weights: Array) -> Array:
    """All ``B (2P + 1)`` bindings ``[inputs..., weights...]``, input-major."""
    w = shift_weights(weights)
    blocks = [np.hstack([np.broadcast_to(x, (w.shape[0], x.shape[0])), w]) for x in inputs]
    return np.ascontiguousarray(np.vstack(blocks))


def shift_gradient(expectations: Array, batch: int, p: int) -> Array:
    """Jacobians ``[B, n_obs, P]`` from the expectations of :func:`shift_bindings` rows."""
    e = expectations.reshape(batch, 2 * p + 1, -1)
    return np.transpose((e[:, 1::2, :] - e[:, 2::2, :]) / 2.0, (0, 2, 1))


# --------------------------------------------------------------------------- circuits
def qdb_circuit(n: int, layers: int) -> Circuit:
    xs = [Parameter(f"x{i}", kind="input") for i in range(n)]
    ws = [Parameter(f"w{k}") for k in range(num_weights(n, layers))]
    c = Circuit(n, parameters=[*xs, *ws], name=f"hea-{n}x{layers}")
    for i in range(n):
        c.ry(math.pi * xs[i], i)
    for layer in range(layers):
        for q in range(n):
            c.rx(ws[weight_index(n, layer, q, 0)], q)
            c.ry(ws[weight_index(n, layer, q, 1)], q)
            c.rz(ws[weight_index(n, layer, q, 2)], q)
        for q in range(n - 1):
            c.cx(q, q + 1)
    return c


def qiskit_circuit(circuit: Circuit, layers: int) -> tuple[Any, tuple[Any, ...], str]:
    """The Qiskit circuit, its parameters in ``circuit.parameters`` order, and how it was made."""
    try:
        qc = circuit.to_qiskit()
        by_name = {p.name: p for p in qc.parameters}
        return qc, tuple(by_name[p.name] for p in circuit.parameters), "Circuit.to_qiskit()"
    except Exception as exc:  # the conversion may be missing or broken while it is being built
        print(f"note: Circuit.to_qiskit() failed ({type(exc).__name__}: {exc}); building directly")
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter as QiskitParameter

    n = circuit.num_qubits
    xs = [QiskitParameter(f"x{i}") for i in range(n)]
    ws = [QiskitParameter(f"w{k}") for k in range(num_weights(n, layers))]
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.ry(math.pi * xs[i], i)
    for layer in range(layers):
        for q in range(n):
            qc.rx(ws[weight_index(n, layer, q, 0)], q)
            qc.ry(ws[weight_index(n, layer, q, 1)], q)
            qc.rz(ws[weight_index(n, layer, q, 2)], q)
        for q in range(n - 1):
            qc.cx(q, q + 1)
    return qc, (*xs, *ws), "qiskit.QuantumCircuit built directly"


def pennylane_jacobian(device_name: str, n: int, layers: int) -> Callable[[Array, Array], Array]:
    """``jac(weights, x) -> [n, P]``: ``qml.jacobian`` of a parameter-shift QNode."""
    import pennylane as qml
    from pennylane import numpy as pnp

    dev = qml.device(device_name, wires=n)

    @qml.qnode(dev, diff_method="parameter-shift")  # type: ignore[untyped-decorator]
    def qnode(w: Any, x: Any) -> Any:
        for i in range(n):
            qml.RY(np.pi * x[i], wires=i)
        for layer in range(layers):
            for q in range(n):
                qml.RX(w[weight_index(n, layer, q, 0)], wires=q)
                qml.RY(w[weight_index(n, layer, q, 1)], wires=q)
                qml.RZ(w[weight_index(n, layer, q, 2)], wires=q)
            for q in range(n - 1):
                qml.CNOT(wires=[q, q + 1])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    def stacked(w: Any, x: Any) -> Any:
        return qml.math.stack(qnode(w, x))

    jacobian = qml.jacobian(stacked, argnums=0)

    def jac(weights: Array, x: Array) -> Array:
        w = pnp.array(weights, requires_grad=True)
        xx = pnp.array(x, requires_grad=False)
        return np.asarray(jacobian(w, xx), dtype=np.float64)

    jac.device = dev  # type: ignore[attr-defined]
    return jac


def pennylane_executions(jac: Callable[[Array, Array], Array], weights: Array, x: Array) -> int:
    """Circuit executions one ``qml.jacobian`` call makes, counted by ``qml.Tracker``."""
    import pennylane as qml

    with qml.Tracker(jac.device) as tracker:  # type: ignore[attr-defined]
        jac(weights, x)
    return int(tracker.totals.get("executions", 0))


# --------------------------------------------------------------------------- timing
@dataclass
class Timing:
    seconds: float
    repeats: int
    extrapolated: bool = False


def best_of(
    run: Callable[[], Any],
    warm: Callable[[], Any],
    warm_fraction: float,
    repeats: int,
    slow_s: float,
) -> tuple[Timing, Any]:
    """Warm up with ``warm`` (``warm_fraction`` of a full ``run``), then best of the repeats.

    When the warm-up predicts a full run slower than ``slow_s``, a single repeat is taken.
    """
    t0 = time.perf_counter()
    warm()
    estimate = (time.perf_counter() - t0) / warm_fraction
    k = 1 if estimate > slow_s else repeats
    best = math.inf
    result: Any = None
    for _ in range(k):
        t0 = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - t0)
    return Timing(best, k), result


async def time_qdb(
    circuit: Circuit,
    values: Array,
    labels: list[str],
    precision: str,
    repeats: int,
    slow_s: float,
) -> tuple[Timing, Array, int]:
    """Best-of time of ``SimulatorBackend.run`` over all bindings; expectations; distinct states."""
    async with SimulatorBackend(precision=precision) as sim:  # type: ignore[arg-type]

        async def once() -> Any:
            return await sim.run(circuit, parameter_values=values, observables=labels)

        t0 = time.perf_counter()
        res = await once()
        estimate = time.perf_counter() - t0
        k = 1 if estimate > slow_s else repeats
        best = math.inf
        for _ in range(k):
            t0 = time.perf_counter()
            res = await once()
            best = min(best, time.perf_counter() - t0)
    assert res.expectations is not None
    distinct = int(res.metadata.get("distinct_states", -1))
    return Timing(best, k), np.asarray(res.expectations, dtype=np.float64), distinct


def time_qiskit(
    qc: Any,
    params: tuple[Any, ...],
    values: Array,
    labels: list[str],
    batch: int,
    repeats: int,
    slow_s: float,
) -> tuple[Timing, Array]:
    """Best-of time of one ``StatevectorEstimator`` PUB over all bindings; its expectations.

    The warm-up runs the first input's ``2P + 1`` bindings only (a full run can take many
    minutes at n=12, B=32).
    """
    from qiskit.primitives import StatevectorEstimator
    from qiskit.quantum_info import SparsePauliOp

    estimator = StatevectorEstimator()
    observables = [[SparsePauliOp(label) for label in labels]]  # [1, n]

    def evaluate(rows: Array) -> Array:
        pub = (qc, observables, {params: rows[:, None, :]})  # bindings [R, 1] -> evs [R, n]
        return np.asarray(estimator.run([pub]).result()[0].data.evs, dtype=np.float64)

    per_input = values.shape[0] // batch
    return best_of(
        lambda: evaluate(values), lambda: evaluate(values[:per_input]), 1.0 / batch, repeats, slow_s
    )


def time_pennylane(
    jac: Callable[[Array, Array], Array],
    weights: Array,
    inputs: Array,
    repeats: int,
    slow_s: float,
    extrapolate_over: float | None,
) -> tuple[Timing, Array | None]:
    """Jacobians of every input; with ``extrapolate_over``, estimate from one input if slow."""
    batch = inputs.shape[0]

    def run() -> Array:
        return np.stack([jac(weights, x) for x in inputs])

    def warm() -> Array:
        return jac(weights, inputs[0])

    if extrapolate_over is not None and batch > 1:
        one, _ = best_of(lambda: warm()[None], warm, 1.0, repeats, slow_s)
        if one.seconds * batch > extrapolate_over:
            return Timing(one.seconds * batch, one.repeats, extrapolated=True), None
    return best_of(run, warm, 1.0 / batch, repeats, slow_s)


# --------------------------------------------------------------------------- report
@dataclass
class Row:
    n: int
    layers: int
    batch: int
    bindings: int
    distinct_states: int
    times: dict[str, Timing] = field(default_factory=dict)
    max_errors: dict[str, float] = field(default_factory=dict)


CONTENDERS: tuple[tuple[str, str], ...] = (
    ("qdb", "quantum-db"),
    ("qdb32", "quantum-db single"),
    ("default", "PL default.qubit"),
    ("lightning", "PL lightning.qubit"),
    ("qiskit", "Qiskit SV Estimator"),
)


def _seconds(t: Timing | None) -> str:
    if t is None:
        return "—"
    text = f"{t.seconds:.4f}" if t.seconds < 10 else f"{t.seconds:.1f}"
    return f"{'~' if t.extrapolated else ''}{text}{'¹' if t.repeats == 1 else ''}"


def _ratio(t: Timing | None, base: Timing | None) -> str:
    if t is None or base is None:
        return "—"
    return f"{'~' if t.extrapolated else ''}{t.seconds / base.seconds:.1f}x"


def table(rows: Sequence[Row]) -> str:
    head = [
        "size",
        "B",
        "bindings",
        *(f"{name} (s)" for _, name in CONTENDERS),
        "default.qubit / qdb",
        "lightning / qdb",
        "Qiskit / qdb",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        base = r.times.get("qdb")
        cells = [
            f"n={r.n}, L={r.layers} (P={num_weights(r.n, r.layers)})",
            str(r.batch),
            str(r.bindings),
        ]
        cells += [_seconds(r.times.get(key)) for key, _ in CONTENDERS]
        cells += [_ratio(r.times.get(key), base) for key in ("default", "lightning", "qiskit")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    model = "unknown"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
        for line in cpuinfo.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"python {platform.python_version()}"]
    for dist in ("numpy", "pennylane", "pennylane_lightning", "qiskit"):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, "
        f"{platform.system()} {platform.machine()}",
        f"- versions: {', '.join(versions)}",
    ]


# --------------------------------------------------------------------------- profile
def profile_qdb(n: int, layers: int, top: int) -> str:
    """cProfile of quantum-db at (n, layers, B=1): the public run, then its worker path.

    The simulation itself runs on the backend's worker threads, which cProfile (main thread
    only) does not see, so the second profile calls the same pure functions the worker
    calls (``evolve``, ``expectations``) on the main thread, single-threaded, over all the
    bindings. The plan is compiled once outside, as the backend caches it per circuit.
    """
    from backends.observables import as_observables
    from backends.simulator.plan import compile_plan
    from backends.simulator.statevector import evolve, expectations

    rng = np.random.default_rng(SEED)
    circuit = qdb_circuit(n, layers)
    p = num_weights(n, layers)
    values = shift_bindings(rng.random((1, n)), rng.uniform(0.0, 2 * math.pi, p))
    labels = z_labels(n)
    out = io.StringIO()

    async def public(times: int) -> None:
        async with SimulatorBackend() as sim:
            for _ in range(times):
                await sim.run(circuit, parameter_values=values, observables=labels)

    asyncio.run(public(1))
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(public(5))
    prof.disable()
    title = f"SimulatorBackend.run, n={n}, L={layers}, B=1, 5 runs (main thread, backends/ only)"
    out.write(f"### {title}\n\n```\n")
    # Only quantum-db's own functions: the rest is the event loop waiting on the workers.
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(r"/backends/", top)
    out.write("```\n\n")

    observables = tuple(as_observables(labels, n))

    plan = compile_plan(circuit)

    def worker_path() -> None:
        states, owner = evolve(plan, values, np.complex128)
        expectations(states, n, observables)[owner]

    worker_path()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        worker_path()
    prof.disable()
    title = f"evolve + expectations (worker path, one thread), n={n}, L={layers}, B=1, 5 runs"
    out.write(f"### {title}\n\n```\n")
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    out.write("```\n")
    return out.getvalue()


# --------------------------------------------------------------------------- main
def run_size(
    n: int,
    layers: int,
    args: argparse.Namespace,
    notes: list[str],
    on_row: Callable[[Row], None],
) -> list[Row]:
    rng = np.random.default_rng(SEED)
    p = num_weights(n, layers)
    circuit = qdb_circuit(n, layers)
    qc, qparams, how = qiskit_circuit(circuit, layers)
    notes.append(f"n={n}: Qiskit circuit from {how}")
    labels = z_labels(n)
    jac_default = pennylane_jacobian("default.qubit", n, layers)
    jac_lightning = pennylane_jacobian("lightning.qubit", n, layers)
    # The same inputs whichever batches are run: the first B of max(32, batches) draws.
    all_inputs = rng.random((max(*BATCHES, *args.batches), n))
    weights = rng.uniform(0.0, 2 * math.pi, p)
    executions = pennylane_executions(jac_default, weights, all_inputs[0])
    notes.append(
        f"n={n}, L={layers}: one PennyLane qml.jacobian executes {executions} circuits "
        f"(2P+1 = {2 * p + 1})"
    )
    rows: list[Row] = []
    for batch in args.batches:
        inputs = all_inputs[:batch]
        values = shift_bindings(inputs, weights)
        print(f"n={n} L={layers} B={batch}: {values.shape[0]} bindings", flush=True)
        t_qdb, e_qdb, distinct = asyncio.run(
            time_qdb(circuit, values, labels, "double", args.repeats, args.slow_seconds)
        )
        row = Row(n, layers, batch, values.shape[0], distinct)
        row.times["qdb"] = t_qdb
        print(f"  quantum-db double  {t_qdb.seconds:.4f} s", flush=True)
        t32, e32, _ = asyncio.run(
            time_qdb(circuit, values, labels, "single", args.repeats, args.slow_seconds)
        )
        row.times["qdb32"] = t32
        row.max_errors["single vs double"] = float(np.max(np.abs(e32 - e_qdb)))
        print(f"  quantum-db single  {t32.seconds:.4f} s", flush=True)

        t_qk, e_qk = time_qiskit(
            qc, qparams, values, labels, batch, args.repeats, args.slow_seconds
        )
        row.times["qiskit"] = t_qk
        err = float(np.max(np.abs(e_qk - e_qdb)))
        row.max_errors["qdb vs Qiskit"] = err
        assert err < TOLERANCE, f"quantum-db and Qiskit disagree by {err:.3g} (n={n}, B={batch})"
        print(f"  Qiskit estimator   {t_qk.seconds:.4f} s", flush=True)

        grad = shift_gradient(e_qdb, batch, p)
        for key, jac in (("lightning", jac_lightning), ("default", jac_default)):
            quick = args.quick and key == "default" and n >= QUICK_MIN_QUBITS
            t_pl, j_pl = time_pennylane(
                jac,
                weights,
                inputs,
                args.repeats,
                args.slow_seconds,
                QUICK_LIMIT_S if quick else None,
            )
            row.times[key] = t_pl
            if j_pl is not None:
                err = float(np.max(np.abs(j_pl - grad)))
                row.max_errors[f"qdb gradient vs PL {key}"] = err
                assert err < TOLERANCE, (
                    f"quantum-db gradient and PennyLane {key} disagree by {err:.3g}"
                )
            extra = " (extrapolated from B=1)" if t_pl.extrapolated else ""
            print(f"  PL {key:<15} {t_pl.seconds:.4f} s{extra}", flush=True)
        rows.append(row)
        notes.append(
            f"n={n}, B={batch}: quantum-db kept {distinct} distinct states for "
            f"{values.shape[0]} bindings; max |diff| "
            + ", ".join(f"{k} {v:.2g}" for k, v in row.max_errors.items())
            + f"; 1-min load average at the end {os.getloadavg()[0]:.2f}"
        )
        on_row(row)
    return rows


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = [item.lower().split("x") for item in text.split(",")]
        sizes = tuple((int(a), int(b)) for a, b in pairs)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected NxL[,NxL...], got {text!r}") from exc
    if any(n < 2 or layers < 1 for n, layers in sizes):
        raise argparse.ArgumentTypeError("sizes need n >= 2 qubits and L >= 1 layers")
    return sizes


def _batches(text: str) -> tuple[int, ...]:
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected B[,B...], got {text!r}") from exc
    if any(b < 1 for b in batches):
        raise argparse.ArgumentTypeError("batch sizes must be positive")
    return batches


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is kept)")
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=30.0,
        help="a case whose warm-up predicts more than this gets one repeat",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="extrapolate PennyLane default.qubit at n>=12, B>1 from B=1 when "
        f"it would take more than {QUICK_LIMIT_S:.0f} s",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile quantum-db at n=12, L=4, B=1 (top functions)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=SIZES,
        help="comma-separated NxL circuit sizes (default: 8x3,12x4)",
    )
    parser.add_argument(
        "--batches",
        type=_batches,
        default=BATCHES,
        help="comma-separated batch sizes B (default: 1,32)",
    )
    parser.add_argument("--top", type=int, default=10, help="functions listed by --profile")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown results file")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    notes: list[str] = []
    rows: list[Row] = []
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["python benchmarks/simulator.py", *given])
    profile = ""

    def report(done: bool) -> str:
        """The table and notes so far; written to ``--output`` after every case."""
        footnotes = [
            "Times are seconds for all B(2P+1) bindings, best of "
            f"{args.repeats} after a warm-up; ¹ = one repeat (warm-up predicted more than "
            f"{args.slow_seconds:g} s); ~ = extrapolated from B=1 (×B). Ratios are contender "
            "time / quantum-db (double) time.",
            *notes,
            f"benchmark wall time {time.perf_counter() - started:.0f} s"
            + ("" if done else " so far (PARTIAL: the run has not finished)"),
        ]
        text = "\n".join([table(rows), "", *(f"- {line}" for line in footnotes)])
        if not args.no_write:
            body = [
                "# Simulator benchmark: one parameter-shift gradient",
                "",
                "Hardware-efficient circuit (RY(pi x) encoding, L layers of RX RY RZ + CNOT "
                "chain), <Z_i> on every qubit; the 2P+1 bindings of one parameter-shift gradient "
                f"per input, B inputs. Generated by `{command}`.",
                "",
                *machine_info(),
                "",
                text,
                "",
            ]
            if profile:
                body += ["## Profile", "", profile]
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text("\n".join(body), encoding="utf-8")
        return text

    def measured(_row: Row) -> None:
        report(done=False)

    for n, layers in args.sizes:
        rows.extend(run_size(n, layers, args, notes, measured))
    if args.profile:
        n, layers = PROFILE_SIZE
        profile = profile_qdb(n, layers, args.top)
    text = report(done=True)
    print()
    print(text)
    if profile:
        print()
        print(profile)
    if not args.no_write:
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
