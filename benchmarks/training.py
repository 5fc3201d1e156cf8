"""Benchmark: one epoch of hybrid training, quantum-db vs PennyLane's ``qml.qnn.TorchLayer``.

What it measures
----------------
The same hybrid classifier three times: ``Linear(4, 4) -> 4-qubit, 3-layer quantum layer
-> Linear(4, 2)``. The quantum layer is quantum_ml's ``QuantumModel(4, 3)`` circuit
(``RY(x_i)`` encoding, then per layer ``RX RY RZ`` on every qubit and the CX chain
``(0, 1), (1, 2), (2, 3)``) with ``<Z_i>`` on every qubit:

* quantum-db: ``quantum_ml.hybrid.hybrid_classifier(4, 4, 3, 2)`` (a
  :class:`TorchQuantumLayer` on the built-in ``SimulatorBackend``, exact adjoint
  gradients) in a hand-written torch loop and, with ``--trainer``, through
  ``QuantumTrainer.fit`` (every circuit through the BackendManager, a job row per run);
* PennyLane ``lightning.qubit`` with ``diff_method="adjoint"``;
* PennyLane ``default.qubit`` with ``diff_method="backprop"``.

All three start from the same float64 weights and see the same data: a seeded 200 x 4
dataset with 0/1 labels, batches of 16 in a fixed order (13 steps), ``Adam(lr=0.01)``,
cross-entropy, one epoch. The PennyLane circuit is checked against quantum-db's (its
state against Qiskit's ``Statevector`` of quantum-db's circuit, its expectations against
the simulator's) before anything is timed, and the losses of every step of every run
must agree to 1e-6 across the contenders; otherwise the benchmark exits with status 1.
Each model is built once; every epoch starts from the same state (loaded untimed), a
warm-up epoch first, then ``--repeats`` timed epochs, interleaved round-robin so a change
in machine load hits every contender alike.

How to run
----------
From the repository root::

    python benchmarks/training.py               # best of 5 (about 20 s on 2 cores)
    python benchmarks/training.py --trainer     # also time QuantumTrainer.fit
    python benchmarks/training.py --profile     # also cProfile quantum-db's epoch

The Markdown table is printed and written to ``benchmarks/results/training.md`` together
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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends import SimulatorBackend  # noqa: E402
from quantum_ml.models import QuantumModel  # noqa: E402
from quantum_ml.torch_layer import TorchQuantumLayer  # noqa: E402

N_QUBITS = 4
LAYERS = 3
N_CLASSES = 2
SAMPLES = 200
BATCH = 16
LEARNING_RATE = 0.01
SEED = 0
#: Largest difference allowed between two contenders' losses at any step.
TOLERANCE = 1e-6
#: Largest difference allowed between the circuits' states and expectations.
CIRCUIT_TOLERANCE = 1e-10
#: The issue's target: quantum-db at least this many times faster than the faster PennyLane.
TARGET_SPEEDUP = 3.0
RESULTS = ROOT / "benchmarks" / "results" / "training.md"

Array = NDArray[np.float64]
Batches = list[tuple[torch.Tensor, torch.Tensor]]


class LossMismatch(AssertionError):
    """Two contenders' losses (or circuits) disagree beyond the tolerance."""


# --------------------------------------------------------------------------- problem
def dataset(samples: int) -> tuple[Array, NDArray[np.int64]]:
    """A seeded ``[samples, 4]`` dataset in ``[-1, 1]`` with a nonlinear 0/1 label."""
    rng = np.random.default_rng(SEED)
    x = rng.uniform(-1.0, 1.0, (samples, N_QUBITS))
    y = (x[:, 0] * x[:, 1] + 0.5 * x[:, 2] - 0.3 * x[:, 3] > 0.0).astype(np.int64)
    return x, y


def batches(x: Array, y: NDArray[np.int64], size: int) -> Batches:
    """Fixed-order mini-batches (the last one may be short), as float64 / int64 tensors."""
    return [
        (torch.from_numpy(x[i : i + size].copy()), torch.from_numpy(y[i : i + size].copy()))
        for i in range(0, x.shape[0], size)
    ]


def hybrid_model() -> torch.nn.Sequential:
    """quantum_ml's ``hybrid_classifier(4, 4, 3, 2)`` in float64 on a fresh simulator.

    ``Linear(4, 4) -> TorchQuantumLayer(QuantumModel(4, 3)) -> Linear(4, 2)``; the factory
    builds its linear layers in float32, converted here so that all three contenders
    compute in float64.
    """
    from quantum_ml.hybrid import hybrid_classifier

    model = hybrid_classifier(N_QUBITS, N_QUBITS, LAYERS, N_CLASSES, seed=SEED)
    return model.to(torch.float64)


def close_layers(model: torch.nn.Module) -> None:
    """Close the model's quantum layers (their private event loops)."""
    for module in model.modules():
        if isinstance(module, TorchQuantumLayer):
            module.close()


def initial_weights() -> dict[str, torch.Tensor]:
    """The seeded starting point every contender copies: the hybrid model's state."""
    model = hybrid_model()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    close_layers(model)
    return state


def _linears(init: dict[str, torch.Tensor]) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    pre = torch.nn.Linear(N_QUBITS, N_QUBITS, dtype=torch.float64)
    post = torch.nn.Linear(N_QUBITS, N_CLASSES, dtype=torch.float64)
    pre.load_state_dict({"weight": init["0.weight"], "bias": init["0.bias"]})
    post.load_state_dict({"weight": init["2.weight"], "bias": init["2.bias"]})
    return pre, post


# --------------------------------------------------------------------------- the models
def qdb_model(init: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """The hybrid model, starting from ``init``."""
    model = hybrid_model()
    model.load_state_dict(init)
    return model


def pennylane_qnode(device: str, diff_method: str) -> Any:
    """QuantumModel's circuit, gate for gate, on PennyLane wires ``0..3`` (wire q = qubit q)."""
    import pennylane as qml

    from quantum_ml.models import entangling_pairs

    spec = QuantumModel(N_QUBITS, LAYERS, seed=SEED)
    gates = {"rx": qml.RX, "ry": qml.RY, "rz": qml.RZ}
    rotations = [gates[r] for r in spec.rotations]
    pairs = entangling_pairs(N_QUBITS, spec.entanglement)
    dev = qml.device(device, wires=N_QUBITS)

    def gates_of(inputs: Any, weights: Any) -> None:
        # inputs[..., i]: TorchLayer passes a batch [B, 4] (broadcast or split by the device).
        for q in range(N_QUBITS):
            qml.RY(inputs[..., q], wires=q)
        k = 0
        for _ in range(LAYERS):
            for q in range(N_QUBITS):
                for rotation in rotations:
                    rotation(weights[k], wires=q)
                    k += 1
            for control, target in pairs:
                qml.CNOT(wires=[control, target])

    def circuit(inputs: Any, weights: Any) -> Any:
        gates_of(inputs, weights)
        return [qml.expval(qml.PauliZ(q)) for q in range(N_QUBITS)]

    def state(inputs: Any, weights: Any) -> Any:
        gates_of(inputs, weights)
        return qml.state()

    return (
        qml.QNode(circuit, dev, interface="torch", diff_method=diff_method),
        qml.QNode(state, qml.device("default.qubit", wires=N_QUBITS)),
    )


def pennylane_model(
    init: dict[str, torch.Tensor], device: str, diff_method: str
) -> torch.nn.Sequential:
    import pennylane as qml

    qnode, _ = pennylane_qnode(device, diff_method)
    weights = init["1.weights"].clone()
    quantum = qml.qnn.TorchLayer(
        qnode, {"weights": (weights.numel(),)}, init_method={"weights": weights}
    )
    pre, post = _linears(init)
    return torch.nn.Sequential(pre, quantum, post)


def check_circuits(device: str, diff_method: str) -> float:
    """Largest difference between PennyLane's circuit and quantum-db's: state and <Z_i>.

    PennyLane orders basis states with wire 0 as the most significant bit, Qiskit (and
    quantum-db) with qubit 0 as the least significant, so PennyLane's state is read with
    its qubit axes reversed.
    """
    from qiskit.quantum_info import Statevector

    spec = QuantumModel(N_QUBITS, LAYERS, seed=SEED)
    rng = np.random.default_rng(SEED + 1)
    x = rng.uniform(-math.pi, math.pi, N_QUBITS)
    w = rng.uniform(0.0, 2 * math.pi, spec.num_weights)
    qnode, state_node = pennylane_qnode(device, diff_method)
    pl_state = np.asarray(state_node(x, w), dtype=np.complex128)
    pl_state = pl_state.reshape((2,) * N_QUBITS).transpose(*reversed(range(N_QUBITS))).ravel()
    qc = spec.circuit.to_qiskit()
    by_name = {p.name: p for p in qc.parameters}
    binding = dict(zip((p.name for p in spec.circuit.parameters), [*x, *w], strict=True))
    qk_state = Statevector(qc.assign_parameters({by_name[k]: v for k, v in binding.items()})).data
    state_error = float(np.max(np.abs(pl_state - qk_state)))

    pl_expect = np.asarray([float(v) for v in qnode(torch.from_numpy(x), torch.from_numpy(w))])

    async def ours() -> Array:
        async with SimulatorBackend() as sim:
            result = await sim.run(spec.circuit, np.concatenate([x, w])[None], spec.observables)
        assert result.expectations is not None
        return np.asarray(result.expectations[0], dtype=np.float64)

    expect_error = float(np.max(np.abs(pl_expect - asyncio.run(ours()))))
    return max(state_error, expect_error)


# --------------------------------------------------------------------------- training
def train_epoch(model: torch.nn.Module, data: Batches) -> list[float]:
    """One epoch of Adam on cross-entropy; the loss of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    losses = []
    for xb, yb in data:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


class TrainerRuns:
    """The same epoch through ``QuantumTrainer.fit``, one fresh run id per call.

    One SQLite registry in ``folder`` stays connected, on one event loop, for all calls
    (so the BackendManager loads its backends once, as in a long-lived service); the
    dataset is stored once and read back unshuffled, so the trainer sees the batches of
    :func:`batches` in the same order. The step losses come from its ``on_step``
    callback. Only ``fit`` is timed.
    """

    def __init__(self, folder: Path, x: Array, y: NDArray[np.int64], batch: int) -> None:
        from quantum_db import QuantumDatabase

        self.db = QuantumDatabase(f"sqlite+aiosqlite:///{folder / 'training.db'}")
        self.x, self.y, self.batch = x, y, batch
        self.loop = asyncio.new_event_loop()
        self.connection: Any = None
        self.count = 0

    def __call__(self, model: torch.nn.Module) -> tuple[float, list[float]]:
        if self.connection is None:
            self.connection = self.db.connect()
            self.loop.run_until_complete(self.connection.__aenter__())
            self.loop.run_until_complete(
                self.db.store_training_data("training-bench", self.x, self.y)
            )
        return self.loop.run_until_complete(self._fit(model))

    async def _fit(self, model: torch.nn.Module) -> tuple[float, list[float]]:
        from quantum_ml import QuantumTrainer, TrainingConfig

        loader = await self.db.create_ml_data_loader(
            "training-bench", batch_size=self.batch, shuffle=False
        ).load()
        config = TrainingConfig(
            optimizer="adam",
            learning_rate=LEARNING_RATE,
            loss="cross_entropy",
            epochs=1,
            seed=SEED,
            # One checkpoint, at the epoch's end (written always); metrics every step.
            checkpoint_every=len(loader),
        )
        losses: list[float] = []
        trainer = QuantumTrainer(config, self.db, on_step=lambda _step, loss: losses.append(loss))
        self.count += 1
        start = time.perf_counter()
        await trainer.fit(model, loader, run_id=f"training-bench-{self.count}")
        return time.perf_counter() - start, [float(v) for v in losses]

    def close(self) -> None:
        try:
            if self.connection is not None:
                self.loop.run_until_complete(self.connection.__aexit__(None, None, None))
        finally:
            self.loop.close()


# --------------------------------------------------------------------------- timing
Epoch = Callable[[torch.nn.Module], tuple[float, list[float]]]


def timed_epoch(model: torch.nn.Module, data: Batches) -> tuple[float, list[float]]:
    start = time.perf_counter()
    losses = train_epoch(model, data)
    return time.perf_counter() - start, losses


@dataclass
class Contender:
    """One model trained epoch after epoch, each time from the same initial state."""

    key: str
    name: str
    model: torch.nn.Module
    epoch: Epoch
    seconds: list[float] = field(default_factory=list)
    losses: list[list[float]] = field(default_factory=list)

    def run(self, init: dict[str, torch.Tensor]) -> tuple[float, list[float]]:
        self.model.load_state_dict(init)
        return self.epoch(self.model)

    def timed(self, init: dict[str, torch.Tensor]) -> None:
        seconds, losses = self.run(init)
        self.seconds.append(seconds)
        self.losses.append(losses)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def compare_losses(contenders: Sequence[Contender]) -> float:
    """Largest step-loss difference between any run and the first contender's first run."""
    reference = contenders[0].losses[0]
    worst = 0.0
    for contender in contenders:
        for losses in contender.losses:
            if len(losses) != len(reference):
                raise LossMismatch(
                    f"{contender.name} took {len(losses)} steps, expected {len(reference)}"
                )
            worst = max(worst, float(np.max(np.abs(np.subtract(losses, reference)))))
    return worst


# --------------------------------------------------------------------------- report
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
    for dist in ("numpy", "torch", "pennylane", "pennylane_lightning", "qiskit"):
        try:
            versions.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            versions.append(f"{dist} (not installed)")
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, "
        f"{platform.system()} {platform.machine()}, torch threads {torch.get_num_threads()}",
        f"- versions: {', '.join(versions)}",
    ]


def table(contenders: Sequence[Contender], baseline: Contender) -> str:
    lines = [
        "| contender | best (s) | median (s) | runs (s) | speed-up over the faster PennyLane |",
        "|---|---:|---:|---|---:|",
    ]
    for c in contenders:
        runs = ", ".join(f"{s:.3f}" for s in c.seconds)
        ratio = "baseline" if c is baseline else f"{baseline.best / c.best:.1f}x"
        lines.append(f"| {c.name} | {c.best:.3f} | {c.median:.3f} | {runs} | {ratio} |")
    return "\n".join(lines)


def profile_qdb(init: dict[str, torch.Tensor], data: Batches, top: int) -> str:
    """cProfile of one quantum-db epoch (after a warm-up one), on the calling thread."""
    model = qdb_model(init)
    train_epoch(model, data)
    model.load_state_dict(init)
    prof = cProfile.Profile()
    prof.enable()
    train_epoch(model, data)
    prof.disable()
    close_layers(model)
    out = io.StringIO()
    out.write("```\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    out.write("```\n")
    return out.getvalue()


# --------------------------------------------------------------------------- main
def build_contenders(
    args: argparse.Namespace,
    init: dict[str, torch.Tensor],
    data: Batches,
    folder: Path,
    x: Array,
    y: NDArray[np.int64],
) -> list[Contender]:
    def plain(model: torch.nn.Module) -> tuple[float, list[float]]:
        return timed_epoch(model, data)

    contenders = [
        Contender("qdb", "quantum-db TorchQuantumLayer (adjoint)", qdb_model(init), plain),
        Contender(
            "lightning",
            "PL lightning.qubit TorchLayer (adjoint)",
            pennylane_model(init, "lightning.qubit", "adjoint"),
            plain,
        ),
        Contender(
            "default",
            "PL default.qubit TorchLayer (backprop)",
            pennylane_model(init, "default.qubit", "backprop"),
            plain,
        ),
    ]
    if args.trainer:
        contenders.insert(
            1,
            Contender(
                "trainer",
                "quantum-db QuantumTrainer.fit",
                qdb_model(init),
                TrainerRuns(folder, x, y, args.batch),
            ),
        )
    return contenders


def close(contenders: Sequence[Contender]) -> None:
    for c in contenders:
        close_layers(c.model)
        if isinstance(c.epoch, TrainerRuns):
            c.epoch.close()


@contextmanager
def float64_default() -> Iterator[None]:
    """Torch's default dtype float64 while the benchmark runs.

    PennyLane's torch interface turns ``lightning.qubit``'s results into tensors of the
    default dtype, so under float32 its expectations lose half their digits before the
    TorchLayer casts them back to float64.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=SAMPLES, help="dataset size")
    parser.add_argument("--batch", type=int, default=BATCH, help="batch size")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per contender")
    parser.add_argument(
        "--trainer", action="store_true", help="also train through QuantumTrainer.fit"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile quantum-db's epoch")
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown results file")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.given = list(sys.argv[1:] if argv is None else argv)
    if args.samples < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("--samples, --batch and --repeats must be positive")

    with float64_default():
        return run(args)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    command = " ".join(["python benchmarks/training.py", *args.given])
    for device, method in (("lightning.qubit", "adjoint"), ("default.qubit", "backprop")):
        error = check_circuits(device, method)
        print(f"circuit check vs PennyLane {device}: max |diff| {error:.2g}", flush=True)
        if error > CIRCUIT_TOLERANCE:
            print(f"FAIL: PennyLane {device}'s circuit differs from quantum-db's by {error:.3g}")
            return 1

    x, y = dataset(args.samples)
    data = batches(x, y, args.batch)
    init = initial_weights()
    with tempfile.TemporaryDirectory(prefix="qdb-training-bench-") as folder:
        contenders = build_contenders(args, init, data, Path(folder), x, y)
        try:
            for c in contenders:  # warm-up: imports, caches, compiled circuits, thread pools
                c.run(init)
            for _ in range(args.repeats):
                for c in contenders:
                    c.timed(init)
                    print(f"  {c.name:<42} {c.seconds[-1]:.3f} s", flush=True)
        finally:
            close(contenders)

    worst = compare_losses(contenders)
    pennylane = [c for c in contenders if c.key in ("lightning", "default")]
    baseline = min(pennylane, key=lambda c: c.best)
    speedup = baseline.best / contenders[0].best
    profile = profile_qdb(init, data, args.top) if args.profile else ""
    steps = len(data)
    notes = [
        f"{args.samples} samples, batch {args.batch} ({steps} steps), Adam(lr={LEARNING_RATE}), "
        f"cross-entropy, float64; one warm-up epoch, then {args.repeats} timed epochs per "
        "contender, interleaved round-robin. Speed-ups are the faster PennyLane's best time "
        "over the contender's best time.",
        f"quantum-db is {speedup:.1f}x faster than the faster PennyLane ({baseline.name}); "
        f"target {TARGET_SPEEDUP:g}x: {'met' if speedup >= TARGET_SPEEDUP else 'NOT met'}.",
        f"max |loss difference| over all {steps} steps of every run: {worst:.2g} "
        f"(tolerance {TOLERANCE:g})",
        f"loss at the first step {contenders[0].losses[0][0]:.6f}, at the last "
        f"{contenders[0].losses[0][-1]:.6f}",
        f"1-min load average at the end {os.getloadavg()[0]:.2f}; "
        f"benchmark wall time {time.perf_counter() - started:.0f} s",
    ]
    text = "\n".join([table(contenders, baseline), "", *(f"- {line}" for line in notes)])
    print()
    print(text)
    if profile:
        print()
        print(profile)
    if not args.no_write:
        body = [
            "# Training benchmark: one epoch of a hybrid classifier",
            "",
            "`Linear(4, 4) -> 4-qubit, 3-layer quantum layer -> Linear(4, 2)`, exact gradients, "
            "quantum-db's TorchQuantumLayer vs PennyLane's `qml.qnn.TorchLayer`. "
            f"Generated by `{command}`.",
            "",
            *machine_info(),
            "",
            text,
            "",
        ]
        if profile:
            body += ["## Profile of one quantum-db epoch", "", profile]
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(body), encoding="utf-8")
        print(f"wrote {args.output}")
    if worst > TOLERANCE:
        print(f"FAIL: losses differ by {worst:.3g} > {TOLERANCE:g}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
