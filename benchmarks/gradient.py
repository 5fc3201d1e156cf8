"""Benchmark: the loss gradient of issue 13, quantum-db against its peers and a C limit.

Workload: ``backends.templates.hardware_efficient_circuit(n, L)`` (angle encoding
``RY(pi x_q)`` on every qubit, the first n circuit parameters being the inputs x, then L
layers of RX RY RZ on every qubit and a CNOT chain (q, q + 1)), P = 3nL weights. The loss is
``mean_b sum_q <Z_q>_b`` over a batch of B inputs; the timed quantity is its gradient with
respect to all P weights (a vector [P]), in float64. Contenders, all in one run:

* quantum-db, exact: ``QuantumGradientComputer("adjoint").value_and_vjp`` on
  ``SimulatorBackend`` with cotangents 1/B for every observable (the reference every other
  gradient must equal to 1e-8, ``np.allclose(atol=1e-8)``; a mismatch stops the run), and
  the adjoint Jacobian (``computer.jacobian``) summed over observables, mean over the batch;
* quantum-db, parameter shift: ``QuantumGradientComputer("parameter-shift").value_and_vjp``
  (its Jacobian contracted with the cotangents, as ``value_and_vjp`` does for that method);
* PennyLane ``lightning.qubit`` adjoint (``qml.grad`` of the loss), the same with
  ``device_vjp=True``, and parameter shift; ``default.qubit`` parameter shift. All four
  take the batch by parameter broadcasting (``RY(pi x[:, q])``: one QNode call for B > 1;
  a plain call for B = 1), which was faster than a Python loop over the inputs for each of
  them (seconds, loop / broadcast: lightning adjoint 0.66 / 0.37 and VJP 0.91 / 0.71 at
  8x3:32, 0.38 / 0.31 and 0.68 / 0.24 at 12x4:8; lightning PS 3.1 / 2.2 and default.qubit
  PS 9.4 / 2.3 at 8x3:4);
* TorchQuantum 0.1.8 by backprop (``loss.backward()``) and by its vectorized parameter
  shift: the 2P shifted weight vectors of every input in one batched forward pass
  (bsz = 2P B; split in chunks of at most 1 GiB of states), contracted after;
* the "limit": ``benchmarks/ps_kernel.c``, the 2P shifted circuits of every input in
  plain C with OpenMP, one cache-resident complex128 state per thread, gate by gate,
  compiled at start (``cc -O3 -march=native -fopenmp -shared -fPIC``) into a temp dir and
  loaded with ctypes. Skipped, saying why, where ``cc`` is missing.

TorchQuantum 0.1.8 declares dependencies that do not install beside this project (qiskit<1,
tensorflow, pyscf); install it and the light modules it imports without them::

    python3 -m pip install --no-deps torchquantum==0.1.8 torchpack==0.3.1 \\
        opt-einsum pylatexenc loguru multimethod toml dill

Its package ``__init__`` still imports Qiskit < 1 APIs (``qiskit.providers.aer``,
``IBMQ``, ``qiskit_ibm_runtime``) and pathos/torchvision/torchdiffeq for plugins and
datasets, so :func:`import_torchquantum` imports it with those modules replaced by inert
stubs for the duration of the import (the real Qiskit is restored after); the simulation
code used here (``QuantumDevice``, ``torchquantum.functional``, ``measurement.expval``)
never reaches them. ``QuantumDevice`` has no dtype argument: the package's
``torchquantum.macro`` is loaded first with ``C_DTYPE = complex128`` and
``F_DTYPE = float64``, so states and gate matrices are double precision. Without
TorchQuantum its columns are left out, saying why.

Timing: best of ``--repeats`` after one warm-up, or one timed pass for a cell slower than
10 s. For B > 1 the warm-up runs on two inputs, and B/2 times the seconds of two inputs
estimates the whole batch (see :func:`measure`). Parameter-shift peers (PennyLane,
TorchQuantum) are skipped, shown "—", where that estimate (or B/2 times their B = 1 cell
of the same size, before anything runs) is over ``--peer-limit`` seconds (default 60), and
at n >= 20; a B = 1 cell over the limit has run once already, and that run is its time.

    python benchmarks/gradient.py                  # the issue's table (long; see --help)
    python benchmarks/gradient.py --sizes 8x3:1    # a quick check
    python benchmarks/gradient.py --memory         # peak RSS at 16x4:32, one process each

Writes ``benchmarks/results/gradient.md`` (``--memory``: ``gradient_memory.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import SimulatorBackend  # noqa: E402
from backends.templates import hardware_efficient_circuit, z_observables  # noqa: E402
from quantum_ml.gradients import QuantumGradientComputer  # noqa: E402

Array = NDArray[np.float64]
#: xs [B, n], w [P] -> d loss / d w [P]
GradFn = Callable[[Array, Array], Awaitable[Array]]

CASES = ((8, 3, 1), (8, 3, 32), (12, 4, 1), (12, 4, 32), (16, 4, 1), (16, 4, 32), (20, 4, 1))
MEMORY_CASE = "16x4:32"
SLOW_S = 10.0  # one timed pass above this
TQ_CHUNK_BYTES = 2**30  # TorchQuantum's vectorized parameter shift: states per forward pass
KERNEL_SOURCE = Path(__file__).with_name("ps_kernel.c")
HALF_PI = np.pi / 2


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls of ``fn`` after one warm-up, and the last result."""
    result = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def pennylane_qnode(device: str, method: str, n: int, layers: int, **options: Any) -> Any:
    """The benchmark's circuit as a PennyLane QNode returning every <Z_q>.

    ``x[q]`` may be a number or a vector [B] (parameter broadcasting over a batch)."""
    import pennylane as qml

    dev = qml.device(device, wires=n)

    @qml.qnode(dev, diff_method=method, **options)  # type: ignore[untyped-decorator]
    def circuit(x: Any, w: Any) -> Any:
        for q in range(n):
            qml.RY(np.pi * x[q], wires=q)
        k = 0
        for _ in range(layers):
            for q in range(n):
                qml.RX(w[k], wires=q)
                qml.RY(w[k + 1], wires=q)
                qml.RZ(w[k + 2], wires=q)
                k += 3
            for q in range(n - 1):
                qml.CNOT(wires=[q, q + 1])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return circuit


# --------------------------------------------------------------------------- contenders
def qdb_vjp(sim: SimulatorBackend, n: int, layers: int) -> GradFn:
    circuit = hardware_efficient_circuit(n, layers)
    computer = QuantumGradientComputer("adjoint")
    obs = z_observables(n)
    wrt = list(range(n, circuit.num_parameters))

    async def grad(xs: Array, w: Array) -> Array:
        b = xs.shape[0]
        values = np.hstack([xs, np.tile(w, (b, 1))])
        cot = np.full((b, n), 1.0 / b)
        _, vjp = await computer.value_and_vjp(sim, circuit, values, obs, cot, wrt=wrt)
        return np.asarray(vjp[:, n:].sum(axis=0))

    return grad


def qdb_jacobian(sim: SimulatorBackend, n: int, layers: int, method: str) -> GradFn:
    """quantum-db's Jacobian [B, n, P] (``"adjoint"``), summed over observables, mean over B."""
    circuit = hardware_efficient_circuit(n, layers)
    computer = QuantumGradientComputer(method)
    obs = z_observables(n)
    wrt = list(range(n, circuit.num_parameters))

    async def grad(xs: Array, w: Array) -> Array:
        values = np.hstack([xs, np.tile(w, (xs.shape[0], 1))])
        jac = await computer.jacobian(sim, circuit, values, obs, wrt=wrt)
        return np.asarray(jac[:, :, n:].sum(axis=1).mean(axis=0))

    return grad


def qdb_ps(sim: SimulatorBackend, n: int, layers: int) -> GradFn:
    """``value_and_vjp`` with ``method="parameter-shift"`` (the contracted shift Jacobian)."""
    circuit = hardware_efficient_circuit(n, layers)
    computer = QuantumGradientComputer("parameter-shift")
    obs = z_observables(n)
    wrt = list(range(n, circuit.num_parameters))

    async def grad(xs: Array, w: Array) -> Array:
        b = xs.shape[0]
        values = np.hstack([xs, np.tile(w, (b, 1))])
        cot = np.full((b, n), 1.0 / b)
        _, vjp = await computer.value_and_vjp(sim, circuit, values, obs, cot, wrt=wrt)
        return np.asarray(vjp[:, n:].sum(axis=0))

    return grad


def pennylane_gradient(device: str, method: str, n: int, layers: int, **options: Any) -> GradFn:
    """``qml.grad`` of the loss; the batch by broadcasting (one QNode call) when B > 1."""
    import pennylane as qml
    from pennylane import numpy as pnp

    circuit = pennylane_qnode(device, method, n, layers, **options)

    async def grad(xs: Array, w: Array) -> Array:
        b = xs.shape[0]
        x = xs[0] if b == 1 else xs.T  # x[q]: a number, or the batch's column q

        def loss(ww: Any) -> Any:
            return qml.math.sum(qml.math.stack(circuit(x, ww))) / b

        return np.asarray(qml.grad(loss)(pnp.array(w, requires_grad=True)), dtype=np.float64)

    return grad


class _StubMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub_class(name)


class _Stub(metaclass=_StubMeta):
    """Anything TorchQuantum's plugins take from a stubbed module: a class to subclass, a
    callable, a decorator (returns what it decorates), an object with any attribute."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub_class(name)


def _stub_class(name: str) -> type:
    return _StubMeta(name, (_Stub,), {})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub_class(name)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: frozenset[str]) -> None:
        self.roots = roots

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        module.__all__ = []  # type: ignore[attr-defined]
        module.__file__ = f"/nonexistent/{spec.name.replace('.', '/')}/__init__.py"
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@contextmanager
def _stubbed(roots: frozenset[str]) -> Iterator[None]:
    """Import ``roots`` (and their submodules) as stubs inside the block, then put back
    whatever real modules of those names were loaded before."""
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in roots}
    for k in saved:
        del sys.modules[k]
    finder = _StubFinder(roots)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for k in [k for k in sys.modules if k.split(".")[0] in roots]:
            del sys.modules[k]
        sys.modules.update(saved)


_TQ: Any = None


def import_torchquantum() -> Any:
    """TorchQuantum in double precision (see the module docstring). Raises ImportError."""
    global _TQ
    if _TQ is not None:
        return _TQ
    import torch

    spec = importlib.util.find_spec("torchquantum")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "torchquantum is not installed (python3 -m pip install --no-deps "
            "torchquantum==0.1.8 torchpack==0.3.1 opt-einsum pylatexenc loguru multimethod "
            "toml dill)"
        )
    macro_path = Path(next(iter(spec.submodule_search_locations))) / "macro.py"
    macro_spec = importlib.util.spec_from_file_location("torchquantum.macro", macro_path)
    if macro_spec is None or macro_spec.loader is None:
        raise ImportError(f"cannot load {macro_path}")
    macro = importlib.util.module_from_spec(macro_spec)
    macro_spec.loader.exec_module(macro)
    macro.C_DTYPE, macro.F_DTYPE = torch.complex128, torch.float64  # type: ignore[attr-defined]
    macro.C_DTYPE_NUMPY, macro.F_DTYPE_NUMPY = np.complex128, np.float64  # type: ignore[attr-defined]
    # Qiskit < 1 APIs always; the plugins' other imports only where they are missing.
    roots = {"qiskit", "qiskit_ibm_runtime", "qiskit_nature"}
    roots |= {
        m for m in ("pathos", "torchvision", "torchdiffeq") if importlib.util.find_spec(m) is None
    }
    sys.modules["torchquantum.macro"] = macro
    try:
        with _stubbed(frozenset(roots)):
            import torchquantum as tq  # type: ignore[import-untyped]
            import torchquantum.functional  # type: ignore[import-untyped]
            import torchquantum.measurement  # type: ignore[import-untyped]
    except Exception as exc:
        for k in [k for k in sys.modules if k.split(".")[0] == "torchquantum"]:
            del sys.modules[k]
        raise ImportError(f"torchquantum does not import: {type(exc).__name__}: {exc}") from exc
    if tq.QuantumDevice(n_wires=1).states.dtype != torch.complex128:
        raise ImportError("torchquantum's states are not complex128 after the dtype patch")
    _TQ = tq
    return tq


def _tq_forward(tq: Any, n: int, layers: int, x: Any, w: Any) -> Any:
    """sum_q <Z_q> [R] of R circuits: x [R, n]; w [P] (shared) or [R, P] (one row each)."""
    import torch

    tqf = tq.functional
    qdev = tq.QuantumDevice(n_wires=n, bsz=x.shape[0])
    for q in range(n):
        tqf.ry(qdev, wires=q, params=np.pi * x[:, q : q + 1])
    k = 0
    for _ in range(layers):
        for q in range(n):
            tqf.rx(qdev, wires=q, params=w[..., k : k + 1])
            tqf.ry(qdev, wires=q, params=w[..., k + 1 : k + 2])
            tqf.rz(qdev, wires=q, params=w[..., k + 2 : k + 3])
            k += 3
        for q in range(n - 1):
            tqf.cnot(qdev, wires=[q, q + 1])
    expectations = tq.measurement.expval(qdev, list(range(n)), [tq.PauliZ()] * n)
    out: torch.Tensor = expectations.sum(dim=-1)
    return out


def tq_backprop(n: int, layers: int) -> GradFn:
    import torch

    tq = import_torchquantum()

    async def grad(xs: Array, w: Array) -> Array:
        weights = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        loss = _tq_forward(tq, n, layers, torch.from_numpy(xs), weights).mean()
        loss.backward()
        if weights.grad is None:
            raise RuntimeError("torchquantum's backward pass left no gradient")
        return np.asarray(weights.grad.numpy(), dtype=np.float64)

    return grad


def tq_parameter_shift(n: int, layers: int) -> GradFn:
    """The 2P shifted weight vectors of every input as one batch (bsz = 2P B), no autograd."""
    import torch

    tq = import_torchquantum()
    p = 3 * n * layers
    chunk = max(1, TQ_CHUNK_BYTES // (16 * 2**n))

    async def grad(xs: Array, w: Array) -> Array:
        b = xs.shape[0]
        shifted = np.repeat(w[None], 2 * p, axis=0)  # row 2k: w_k + pi/2, row 2k + 1: - pi/2
        shifted[np.arange(0, 2 * p, 2), np.arange(p)] += HALF_PI
        shifted[np.arange(1, 2 * p, 2), np.arange(p)] -= HALF_PI
        x_rows = torch.from_numpy(np.repeat(xs, 2 * p, axis=0))  # row b 2P + e
        w_rows = torch.from_numpy(np.tile(shifted, (b, 1)))
        parts = []
        with torch.no_grad():
            for start in range(0, x_rows.shape[0], chunk):
                end = start + chunk
                parts.append(_tq_forward(tq, n, layers, x_rows[start:end], w_rows[start:end]))
        f = torch.cat(parts).numpy().reshape(b, 2 * p)
        return np.asarray(0.5 * (f[:, 0::2] - f[:, 1::2]).mean(axis=0), dtype=np.float64)

    return grad


_KERNEL: Any = None


def load_kernel() -> Any:
    """Compile ``ps_kernel.c`` into a temp dir and load it. Raises OSError with the reason."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    cc = shutil.which("cc")
    if cc is None:
        raise OSError("no C compiler (cc) on PATH")
    build = Path(tempfile.mkdtemp(prefix="qdb-ps-kernel-"))
    atexit.register(shutil.rmtree, build, True)  # the loaded library stays mapped
    library = build / "ps_kernel.so"
    command = [cc, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    command += [str(KERNEL_SOURCE), "-o", str(library), "-lm"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    lib = ctypes.CDLL(str(library))
    pointer = ctypes.POINTER(ctypes.c_double)
    lib.ps_gradient.argtypes = [ctypes.c_int] * 3 + [pointer] * 3 + [ctypes.c_int]
    lib.ps_gradient.restype = ctypes.c_int
    _KERNEL = lib
    return lib


def c_kernel(n: int, layers: int) -> GradFn:
    lib = load_kernel()
    pointer = ctypes.POINTER(ctypes.c_double)

    async def grad(xs: Array, w: Array) -> Array:
        x = np.ascontiguousarray(xs, dtype=np.float64)
        ww = np.ascontiguousarray(w, dtype=np.float64)
        out = np.zeros(w.shape[0])
        rc = lib.ps_gradient(
            n,
            layers,
            x.shape[0],
            x.ctypes.data_as(pointer),
            ww.ctypes.data_as(pointer),
            out.ctypes.data_as(pointer),
            0,
        )
        if rc != 0:
            raise MemoryError("ps_kernel.c could not allocate its states")
        return out

    return grad


@dataclass(frozen=True)
class Contender:
    key: str
    column: str
    kind: str  # "qdb", "exact peer", "ps peer", "limit"
    make: Callable[[SimulatorBackend, int, int], GradFn]


CONTENDERS = (
    Contender("qdb-vjp", "qdb VJP", "qdb", qdb_vjp),
    Contender(
        "qdb-jacobian",
        "qdb adjoint Jacobian",
        "qdb",
        lambda sim, n, L: qdb_jacobian(sim, n, L, "adjoint"),
    ),
    Contender("qdb-ps", "qdb PS", "qdb", qdb_ps),
    Contender(
        "lightning-adjoint",
        "lightning adjoint",
        "exact peer",
        lambda sim, n, L: pennylane_gradient("lightning.qubit", "adjoint", n, L),
    ),
    Contender(
        "lightning-vjp",
        "lightning VJP",
        "exact peer",
        lambda sim, n, L: pennylane_gradient("lightning.qubit", "adjoint", n, L, device_vjp=True),
    ),
    Contender(
        "lightning-ps",
        "lightning PS",
        "ps peer",
        lambda sim, n, L: pennylane_gradient("lightning.qubit", "parameter-shift", n, L),
    ),
    Contender(
        "default-ps",
        "default.qubit PS",
        "ps peer",
        lambda sim, n, L: pennylane_gradient("default.qubit", "parameter-shift", n, L),
    ),
    Contender("tq-backprop", "TQ backprop", "exact peer", lambda sim, n, L: tq_backprop(n, L)),
    Contender("tq-ps", "TQ PS", "ps peer", lambda sim, n, L: tq_parameter_shift(n, L)),
    Contender("c-kernel", "C PS kernel", "limit", lambda sim, n, L: c_kernel(n, L)),
)
EXACT_PEERS = ("lightning-adjoint", "lightning-vjp", "tq-backprop")
PS_PEERS = ("lightning-ps", "default-ps", "tq-ps")


def unavailable_reasons(keys: Sequence[str]) -> dict[str, str]:
    """Contenders that cannot run here, with the reason (printed and written)."""
    out: dict[str, str] = {}
    if any(k.startswith("tq-") for k in keys):
        try:
            import_torchquantum()
        except ImportError as exc:
            out["tq-backprop"] = out["tq-ps"] = str(exc)
    if "c-kernel" in keys:
        try:
            load_kernel()
        except OSError as exc:
            out["c-kernel"] = str(exc)
    return out


# --------------------------------------------------------------------------- timing
@dataclass
class Case:
    n: int
    layers: int
    batch: int
    xs: Array = field(init=False)
    w: Array = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(1234)
        self.xs = rng.uniform(0, 1, (self.batch, self.n))
        self.w = rng.uniform(0, 2 * np.pi, 3 * self.n * self.layers)

    @property
    def p(self) -> int:
        return 3 * self.n * self.layers

    @property
    def label(self) -> str:
        return f"{self.n}x{self.layers}:{self.batch}"


def parse_case(text: str) -> Case:
    size, batch = text.strip().split(":")
    n, layers = (int(v) for v in size.split("x"))
    return Case(n, layers, int(batch))


async def _timed(fn: GradFn, xs: Array, w: Array) -> tuple[float, Array]:
    start = time.perf_counter()
    g = await fn(xs, w)
    return time.perf_counter() - start, g


async def measure(
    fn: GradFn, case: Case, repeats: int, limit: float | None, single: float | None = None
) -> tuple[float, Array] | None:
    """Seconds of one gradient of ``case`` and the gradient, or None (skipped: estimated
    over ``limit``). ``single``: the same contender's seconds on one input of this size,
    when the B = 1 case already ran.

    B = 1: one warm-up, then best of ``repeats`` (one timed pass when the warm-up took over
    ``SLOW_S``; the warm-up itself when it took over ``limit``). B > 1: the estimate is
    ``B / 2`` times the seconds of two inputs (after a warm-up on two), ``B / 2`` times
    ``single`` before anything runs; then best of ``repeats``, or one timed pass where the
    estimate is over ``SLOW_S``. Linear in B, it overestimates what broadcasting saves, and
    a skip errs on the side of "—".
    """
    if case.batch == 1:
        t_warm, g = await _timed(fn, case.xs, case.w)
        if limit is not None and t_warm > limit:
            return t_warm, g  # the whole cell already ran: it stands as the one timed pass
        if t_warm > SLOW_S:
            return await _timed(fn, case.xs, case.w)
    else:
        if limit is not None and single is not None and case.batch * single / 2 > limit:
            return None
        await fn(case.xs[:2], case.w)
        t2, _ = await _timed(fn, case.xs[:2], case.w)
        estimate = case.batch * t2 / 2
        if limit is not None and estimate > limit:
            return None
        if estimate > SLOW_S:
            return await _timed(fn, case.xs, case.w)
    best = float("inf")
    for _ in range(repeats):
        seconds, g = await _timed(fn, case.xs, case.w)
        best = min(best, seconds)
    return best, g


def check(name: str, case: Case, g: Array, reference: Array) -> None:
    if g.shape != reference.shape or not np.allclose(g, reference, atol=1e-8):
        raise AssertionError(
            f"{name} at {case.label}: gradient differs from quantum-db's VJP by "
            f"{np.max(np.abs(g - reference)) if g.shape == reference.shape else g.shape}"
        )


def _cell(t: dict[str, float | None], key: str) -> str:
    v = t.get(key)
    return "—" if v is None else f"{v:.4f}"


def _best(t: dict[str, float | None], keys: Sequence[str]) -> float | None:
    values = [v for k in keys if (v := t.get(k)) is not None]
    return min(values) if values else None


def _ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}"


def table(rows: list[tuple[Case, dict[str, float | None]]], keys: Sequence[str]) -> str:
    columns = [c for c in CONTENDERS if c.key in keys]
    head = ["n, L (P)", "B", *(c.column for c in columns)]
    head += ["best peer exact", "qdb best exact / best peer exact"]
    head += ["best peer PS", "best peer PS / qdb PS", "qdb PS / C"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for case, t in rows:
        peer_exact = _best(t, EXACT_PEERS)
        qdb_exact = _best(t, ("qdb-vjp", "qdb-jacobian"))
        peer_ps = _best(t, PS_PEERS)
        cells = [f"{case.n}, {case.layers} ({case.p})", str(case.batch)]
        cells += [_cell(t, c.key) for c in columns]
        cells += ["—" if peer_exact is None else f"{peer_exact:.4f}"]
        cells += [_ratio(qdb_exact, peer_exact)]
        cells += ["—" if peer_ps is None else f"{peer_ps:.4f}"]
        cells += [_ratio(peer_ps, t.get("qdb-ps"), 1), _ratio(t.get("qdb-ps"), t.get("c-kernel"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def run_table(args: argparse.Namespace) -> None:
    cases = [parse_case(item) for item in args.sizes.split(",")]
    keys = [c.key for c in CONTENDERS]
    if args.only:
        wanted = set(args.only.split(",")) | {"qdb-vjp"}  # the reference always runs
        unknown = wanted - set(keys)
        if unknown:
            raise SystemExit(f"unknown contenders {sorted(unknown)}; choose from {keys}")
        keys = [k for k in keys if k in wanted]
    missing = unavailable_reasons(keys)
    for key, reason in missing.items():
        print(f"skipping {key}: {reason}", flush=True)
    keys = [k for k in keys if k not in missing]
    rows: list[tuple[Case, dict[str, float | None]]] = []
    singles: dict[tuple[str, int, int], float] = {}  # (contender, n, L) -> B = 1 seconds
    started = time.perf_counter()
    async with SimulatorBackend() as sim:
        for case in cases:
            timings: dict[str, float | None] = {}
            reference: Array | None = None
            for contender in CONTENDERS:
                if contender.key not in keys:
                    continue
                peer_ps = contender.kind == "ps peer"
                if peer_ps and case.n >= 20:
                    timings[contender.key] = None
                    continue
                fn = contender.make(sim, case.n, case.layers)
                limit = args.peer_limit if peer_ps else None
                single = singles.get((contender.key, case.n, case.layers))
                result = await measure(fn, case, args.repeats, limit, single)
                if result is None:
                    timings[contender.key] = None
                    continue
                seconds, g = result
                if case.batch == 1:
                    singles[(contender.key, case.n, case.layers)] = seconds
                if reference is None:
                    reference = g
                check(contender.column, case, g, reference)
                timings[contender.key] = seconds
            rows.append((case, timings))
            cells = ", ".join(f"{k} {'—' if v is None else f'{v:.4f}'}" for k, v in timings.items())
            print(f"{case.label} (P={case.p}): {cells}", flush=True)
    notes = [
        f"Seconds for one loss gradient (d/dw of mean_b sum_q <Z_q>, all P weights, float64), "
        f"every contender in one run and checked against quantum-db's VJP to 1e-8. Best of "
        f"{args.repeats} after a warm-up; one timed pass where the cell takes (B = 1) or is "
        f"estimated as B/2 times two inputs (B > 1) over {SLOW_S:.0f} s. PennyLane peers "
        f"broadcast over the batch; TorchQuantum runs in complex128. Parameter-shift peers "
        f"are skipped (—) at n >= 20 and where estimated over {args.peer_limit:.0f} s. "
        f"Best peer exact: lightning adjoint, lightning VJP, TQ backprop; best peer PS: "
        f"lightning PS, default.qubit PS, TQ PS. C PS kernel: benchmarks/ps_kernel.c "
        f"(OpenMP, {os.cpu_count()} cores, the 2P shifted circuits per input gate by gate). "
        f"Ratios: qdb best exact / best peer exact and qdb PS / C (below 1: quantum-db "
        f"faster), best peer PS / qdb PS (the speed-up).",
    ]
    notes += [f"Not run: {key}: {reason}." for key, reason in missing.items()]
    load = os.getloadavg()[0]
    notes.append(
        f"Load average at the end: {load:.2f}; total {time.perf_counter() - started:.0f} s."
    )
    text = "\n\n".join(notes) + "\n\n" + table(rows, keys) + "\n"
    print(text)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(text)


# --------------------------------------------------------------------------- memory
MEMORY_CHILDREN = ("baseline", "qdb-vjp", "lightning-adjoint", "lightning-vjp", "tq-backprop")


def import_libraries() -> str | None:
    """What every memory child imports, so that the baseline subtracts the same imports.
    Returns why TorchQuantum is missing, or None."""
    import numba  # noqa: F401  (quantum-db's compiled kernels, imported on first use)
    import pennylane as qml
    import pennylane_lightning.lightning_qubit  # type: ignore[import-untyped]  # noqa: F401
    import torch  # noqa: F401

    qml.device("lightning.qubit", wires=1)
    try:
        import_torchquantum()
    except ImportError as exc:
        return str(exc)
    return None


def rss_child(name: str, size: str) -> None:
    """One memory child: import everything, build the inputs, run ``name`` once (nothing
    for ``baseline``), print {"name", "peak_kib", "seconds", "gradient"} as JSON."""
    tq_missing = import_libraries()
    case = parse_case(size)
    out: dict[str, Any] = {"name": name, "seconds": None, "gradient": None}
    if name == "tq-backprop" and tq_missing is not None:
        out["error"] = tq_missing
    elif name != "baseline":
        contender = next(c for c in CONTENDERS if c.key == name)

        async def once() -> tuple[float, Array]:
            async with SimulatorBackend() as sim:
                return await _timed(contender.make(sim, case.n, case.layers), case.xs, case.w)

        seconds, g = asyncio.run(once())
        out["seconds"], out["gradient"] = seconds, g.tolist()
    out["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out), flush=True)


def run_memory(args: argparse.Namespace) -> None:
    case = parse_case(args.memory_size)
    results: dict[str, dict[str, Any]] = {}
    for name in MEMORY_CHILDREN:
        command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", name]
        command += ["--memory-size", args.memory_size]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            if name in ("baseline", "qdb-vjp"):
                raise RuntimeError(f"memory child {name} failed:\n{done.stderr[-4000:]}")
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            result: dict[str, Any] = {"name": name, "error": f"the child failed: {tail[0]}"}
            result["peak_kib"] = 0
        else:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        results[name] = result
        print(
            f"{name}: peak {result['peak_kib'] / 1024:.1f} MiB"
            + (f" ({result['error']})" if "error" in result else ""),
            flush=True,
        )
    reference = np.asarray(results["qdb-vjp"]["gradient"])
    for name, result in results.items():
        if result.get("gradient") is not None:
            check(name, case, np.asarray(result["gradient"]), reference)
    base = results["baseline"]["peak_kib"] / 1024
    ran = {k: v for k, v in results.items() if k != "baseline" and v.get("gradient") is not None}
    lines = [
        "| contender | peak RSS (MiB) | peak − baseline (MiB) | seconds (one cold run) |",
        "|---|---:|---:|---:|",
        f"| baseline (imports and inputs only) | {base:.1f} | 0.0 | — |",
    ]
    for name, result in ran.items():
        peak = result["peak_kib"] / 1024
        lines.append(f"| {name} | {peak:.1f} | {peak - base:.1f} | {result['seconds']:.3f} |")
    peers = [k for k in ("lightning-adjoint", "lightning-vjp", "tq-backprop") if k in ran]
    qdb_peak = ran["qdb-vjp"]["peak_kib"] / 1024
    best_raw = min(ran[k]["peak_kib"] / 1024 for k in peers) if peers else None
    best_net = min(ran[k]["peak_kib"] / 1024 - base for k in peers) if peers else None
    notes = [
        f"Peak resident memory (ru_maxrss) of one loss gradient at {case.label} "
        f"(P={case.p}), each contender in a process of its own after the same imports "
        f"(numpy, numba, torch, PennyLane and lightning, TorchQuantum, quantum-db) and "
        f"inputs; the baseline child computes nothing. Each child runs one gradient, cold: "
        f"quantum-db's figure includes loading its numba kernels from numba's cache.",
        f"qdb VJP / best exact peer: {_ratio(qdb_peak - base, best_net)} over the baseline, "
        f"{_ratio(qdb_peak, best_raw)} raw (peers: {', '.join(peers)}).",
    ]
    notes += [f"Not run: {k}: {v['error']}." for k, v in results.items() if "error" in v]
    notes.append(f"Load average at the end: {os.getloadavg()[0]:.2f}.")
    text = "\n\n".join(notes) + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    output = args.output.with_name("gradient_memory.md")
    output.parent.mkdir(exist_ok=True)
    output.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(f"{n}x{L}:{b}" for n, L, b in CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--peer-limit",
        type=float,
        default=60.0,
        help="skip a parameter-shift peer's cell estimated over this many seconds",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated contenders: " + ",".join(c.key for c in CONTENDERS),
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/gradient.md")
    parser.add_argument("--memory", action="store_true", help="peak RSS mode (gradient_memory.md)")
    parser.add_argument("--memory-size", default=MEMORY_CASE, help="the --memory case")
    parser.add_argument("--rss-child", choices=MEMORY_CHILDREN, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.memory_size)
    elif args.memory:
        run_memory(args)
    else:
        asyncio.run(run_table(args))


if __name__ == "__main__":
    main()
