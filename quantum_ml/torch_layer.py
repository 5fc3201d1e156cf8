"""A PyTorch ``nn.Module`` wrapping a parameterized circuit, differentiable through autograd."""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from backends.base import Backend
from backends.circuit import Circuit
from backends.errors import MissingDependencyError
from backends.observables import Observable, ObservableLike, as_observables
from backends.simulator import SimulatorBackend
from backends.simulator.dense import DENSE_MAX_QUBITS

from .errors import TorchLayerError
from .gradients import QuantumGradientComputer

try:
    import torch
    from torch.autograd.function import once_differentiable
except ImportError as exc:  # the whole module is the torch bridge: say how to get torch
    raise MissingDependencyError(
        f"TorchQuantumLayer needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc

__all__ = ["EvaluationRoute", "TorchLayerError", "TorchQuantumLayer", "route_evaluations"]

_T = TypeVar("_T")
Array = NDArray[np.float64]


# --------------------------------------------------------------------------- routing
@dataclass(frozen=True, slots=True)
class EvaluationRoute:
    """Where the layers' circuits go while a trainer drives them: ``backend`` (e.g. one
    whose runs go through the BackendManager) on the event loop ``loop``.

    The trainer runs the torch forward and backward passes in a worker thread; each
    layer's evaluation is handed back to the trainer's loop, which stays responsive and
    owns every job, instead of to the layer's private loop.
    """

    backend: Backend
    loop: asyncio.AbstractEventLoop
    #: Replaces each layer's gradient method (e.g. parameter shift on hardware).
    gradient: QuantumGradientComputer | None = None
    #: Replaces each layer's shots when given.
    shots: int | None = None


_route: ContextVar[EvaluationRoute | None] = ContextVar("qdb_torch_layer_route", default=None)


@contextmanager
def route_evaluations(
    backend: Backend,
    loop: asyncio.AbstractEventLoop,
    *,
    gradient: QuantumGradientComputer | None = None,
    shots: int | None = None,
) -> Iterator[None]:
    """Send every :class:`TorchQuantumLayer` evaluation in this context to ``backend`` on
    ``loop`` (worker threads started with ``asyncio.to_thread`` inherit the context)."""
    token = _route.set(EvaluationRoute(backend, loop, gradient, shots))
    try:
        yield
    finally:
        _route.reset(token)


# --------------------------------------------------------------------------- portal
class _Portal:
    """A daemon thread running its own event loop; sync code submits coroutines to it.

    This lets the layer's synchronous ``forward`` drive the async backends both from plain
    code and from code already running inside an event loop in the calling thread (where
    ``asyncio.run`` is not allowed).
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name="TorchQuantumLayer-portal", daemon=True
        )
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._loop.is_closed()

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the portal's loop and block until it finishes."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise TorchLayerError(
                "a TorchQuantumLayer cannot be evaluated from inside its own backend's event loop"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def close(self) -> None:
        """Stop the loop and (unless called from the portal thread itself) join the thread."""
        if self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:  # closed in between
            return
        if threading.current_thread() is not self._thread:
            self._thread.join()


class _ThreadLoops:
    """A private event loop per calling thread, driven right there (``run_until_complete``).

    For the in-process simulator: a narrow circuit's evaluation takes well under a
    millisecond, and handing it to the portal thread and back (two thread wake-ups, far
    slower on a busy machine) would cost as much again. The simulator's coroutines hold
    nothing bound to one loop (a thread pool; primitives made per call), so any loop
    serves; remote backends keep the portal's single, always-running loop.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loops: list[asyncio.AbstractEventLoop] = []

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = asyncio.new_event_loop()
            self._local.loop = loop
            with self._lock:
                self._loops.append(loop)
        return loop.run_until_complete(coro)

    def close(self) -> None:
        """Close every loop not in use right now (one in use is closed by a later call)."""
        with self._lock:
            loops, self._loops = self._loops, []
            for loop in loops:
                if loop.is_running():
                    self._loops.append(loop)
                else:
                    loop.close()


def _no_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def _on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on ``loop`` (another thread's) and wait for it here."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise TorchLayerError(
            "a routed TorchQuantumLayer cannot be evaluated on its trainer's event loop "
            "thread; the trainer runs forward passes in a worker thread"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


# --------------------------------------------------------------------------- autograd
class _QuantumFunction(torch.autograd.Function):
    """``(x [B, I], weights [W]) -> expectations [B, O]`` with the circuit's jacobian."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weights: torch.Tensor, layer: TorchQuantumLayer
    ) -> torch.Tensor:
        need_x, need_w = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        ctx.x_dtype = x.dtype
        ctx.w_dtype = weights.dtype
        ctx.vjp = None
        if (need_x or need_w) and layer._uses_vjp():
            # Wide circuits on an exact simulator: the forward pass only, and one
            # vector-Jacobian product with grad_output in backward.
            values, bindings, route = layer._forward_only(x, weights)
            ctx.vjp = (layer, bindings, route, need_x, need_w)
            ctx.jac_x = ctx.jac_w = None
            return torch.from_numpy(values).to(dtype=x.dtype, device=x.device)
        values, jac_x, jac_w = layer._evaluate(x, weights, need_x, need_w)
        ctx.jac_x = jac_x
        ctx.jac_w = jac_w
        return torch.from_numpy(values).to(dtype=x.dtype, device=x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g = grad_out.detach().to(device="cpu", dtype=torch.float64).numpy()  # [B, O]
        grad_x: torch.Tensor | None = None
        grad_w: torch.Tensor | None = None
        if ctx.vjp is not None:
            layer, bindings, route, need_x, need_w = ctx.vjp
            gx, gw = layer._vjp(bindings, g, need_x, need_w, route)
            if gx is not None:
                grad_x = torch.from_numpy(gx).to(dtype=ctx.x_dtype, device=grad_out.device)
            if gw is not None:
                grad_w = torch.from_numpy(gw).to(dtype=ctx.w_dtype, device=grad_out.device)
            return grad_x, grad_w, None
        if ctx.jac_x is not None:
            gx = np.einsum("bo,boi->bi", g, ctx.jac_x)
            grad_x = torch.from_numpy(gx).to(dtype=ctx.x_dtype, device=grad_out.device)
        if ctx.jac_w is not None:
            gw = np.einsum("bo,bow->w", g, ctx.jac_w)
            grad_w = torch.from_numpy(gw).to(dtype=ctx.w_dtype, device=grad_out.device)
        return grad_x, grad_w, None


# --------------------------------------------------------------------------- the layer
class TorchQuantumLayer(torch.nn.Module):
    """A circuit as a layer: inputs feed its ``"input"`` parameters, ``weights`` the rest.

    ``forward(x)`` takes ``x`` of shape ``[B, n_inputs]`` (or ``[n_inputs]``) and returns the
    expectations ``[B, n_observables]`` (or ``[n_observables]``) in ``x``'s dtype. The
    trainable :attr:`weights` (float64 unless an initial tensor of another floating dtype is
    given) bind the circuit's ``"weight"`` parameters in circuit order. ``weights`` may be an
    initial tensor, an integer seed, or ``None`` (uniform in ``[0, 2π)`` from torch's global
    generator, like other ``nn`` layers).

    ``gradient_method`` defaults to ``"adjoint"`` on an exact :class:`SimulatorBackend`
    (``shots=None``) and to ``"parameter-shift"`` otherwise; a configured
    :class:`QuantumGradientComputer` is accepted too. Each forward evaluates values and
    the jacobian in one call and keeps the jacobian for the backward pass (double backward
    is not supported). With ``shots``, every forward passes the same ``seed``.

    Backends are async; the layer runs them on a private event-loop thread created on first
    use, so ``forward`` works from plain code and from inside a running event loop. (On a
    :class:`SimulatorBackend` called from a thread without a running loop it drives a
    private loop in the calling thread instead: no thread hand-off per forward.) Call
    :meth:`close` to stop that thread and close those loops (they are made again on the
    next forward); they are not part of the layer's state, which only holds the weights.
    """

    weights: torch.nn.Parameter

    def __init__(
        self,
        circuit: Circuit,
        backend: Backend,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        weights: torch.Tensor | Sequence[float] | int | None = None,
        gradient_method: str | QuantumGradientComputer | None = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(circuit, Circuit):
            raise TorchLayerError(f"expected a backends.Circuit, got {type(circuit).__name__}")
        if not isinstance(backend, Backend):
            raise TorchLayerError(f"expected a backends.Backend, got {type(backend).__name__}")
        self.circuit = circuit
        self.backend = backend
        self.observables: tuple[Observable, ...] = tuple(
            as_observables(observables, circuit.num_qubits)
        )
        self.shots = shots
        self.seed = seed
        kinds = [p.kind for p in circuit.parameters]
        self._input_index: list[int] = [i for i, k in enumerate(kinds) if k == "input"]
        self._weight_index: list[int] = [i for i, k in enumerate(kinds) if k == "weight"]
        if isinstance(gradient_method, QuantumGradientComputer):
            self.gradient = gradient_method
        else:
            if gradient_method is None:
                exact = backend.supports_derivatives("adjoint", shots)
                gradient_method = "adjoint" if exact else "parameter-shift"
            self.gradient = QuantumGradientComputer(gradient_method)
        self.weights = torch.nn.Parameter(self._initial_weights(weights))
        self._portal: _Portal | None = None
        self._portal_lock = threading.Lock()
        self._thread_loops = self._new_thread_loops()

    def _new_thread_loops(self) -> _ThreadLoops:
        loops = _ThreadLoops()
        # Close the loops when the layer is garbage collected without close().
        weakref.finalize(self, loops.close)
        return loops

    # ------------------------------------------------------------------ shape info
    @property
    def num_inputs(self) -> int:
        return len(self._input_index)

    @property
    def num_weights(self) -> int:
        return len(self._weight_index)

    @property
    def num_outputs(self) -> int:
        return len(self.observables)

    def extra_repr(self) -> str:
        return (
            f"circuit={self.circuit.name!r}, inputs={self.num_inputs}, "
            f"weights={self.num_weights}, outputs={self.num_outputs}, "
            f"backend={self.backend.name!r}, gradient={self.gradient.method!r}, "
            f"shots={self.shots}"
        )

    def _initial_weights(
        self, weights: torch.Tensor | Sequence[float] | int | None
    ) -> torch.Tensor:
        n = self.num_weights
        if weights is None:
            return torch.rand(n, dtype=torch.float64) * (2 * math.pi)
        if isinstance(weights, int | np.integer) and not isinstance(weights, bool):
            rng = np.random.default_rng(int(weights))
            return torch.from_numpy(rng.uniform(0.0, 2 * math.pi, size=n))
        try:
            tensor = torch.as_tensor(weights).detach().clone()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TorchLayerError(f"weights must be a tensor, a seed, or None: {exc}") from None
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        if tensor.numel() != n:
            raise TorchLayerError(
                f"the circuit has {n} weight parameters but {tensor.numel()} initial weights "
                "were given"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise TorchLayerError("initial weights must be finite")
        return tensor.reshape(n)

    # ------------------------------------------------------------------ portal
    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if isinstance(self.backend, SimulatorBackend) and _no_running_loop():
            return self._thread_loops.call(coro)
        with self._portal_lock:
            portal = self._portal
            if portal is None or not portal.alive:
                portal = self._portal = _Portal()
                # Stop the thread when the layer is garbage collected without close().
                weakref.finalize(self, portal.close)
        return portal.call(coro)

    def close(self) -> None:
        """Stop the layer's event-loop thread and close its loops; a later forward makes
        new ones."""
        with self._portal_lock:
            portal, self._portal = self._portal, None
        if portal is not None:
            portal.close()
        self._thread_loops.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_portal"] = None
        state.pop("_portal_lock", None)
        state.pop("_thread_loops", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[no-untyped-call]
        self._portal = None
        self._portal_lock = threading.Lock()
        self._thread_loops = self._new_thread_loops()

    # ------------------------------------------------------------------ evaluation
    def _target(self) -> tuple[Any, Backend, int | None, Any]:
        """``(gradient computer, backend, shots, route)`` of this evaluation."""
        route = _route.get()
        gradient, backend, shots = self.gradient, self.backend, self.shots
        if route is not None:
            backend = route.backend
            gradient = route.gradient or gradient
            shots = route.shots if route.shots is not None else shots
        return gradient, backend, shots, route

    def _uses_vjp(self) -> bool:
        """Exact adjoint gradients of a circuit wider than dense differentiation covers."""
        gradient, backend, shots, _ = self._target()
        return (
            gradient.method == "adjoint"
            and shots is None
            and backend.supports_derivatives("vjp", None)
            and self.circuit.num_qubits > DENSE_MAX_QUBITS
        )

    def _bindings(self, x: torch.Tensor, weights: torch.Tensor) -> Array:
        xs = x.detach().to(device="cpu", dtype=torch.float64).numpy()
        ws = weights.detach().to(device="cpu", dtype=torch.float64).numpy()
        values = np.empty((xs.shape[0], self.circuit.num_parameters))
        values[:, self._input_index] = xs
        values[:, self._weight_index] = ws[None, :]
        return values

    def _forward_only(self, x: torch.Tensor, weights: torch.Tensor) -> tuple[Array, Array, Any]:
        """The expectations alone (a VJP follows in backward): ``(values, bindings, route)``."""
        _, backend, _, route = self._target()
        bindings = self._bindings(x, weights)
        coro = backend.run(self.circuit, bindings, observables=list(self.observables))
        result = self._run(coro) if route is None else _on_loop(route.loop, coro)
        assert result.expectations is not None
        return np.ascontiguousarray(result.expectations, dtype=np.float64), bindings, route

    def _vjp(
        self, bindings: Array, g: Array, need_x: bool, need_w: bool, route: Any
    ) -> tuple[Array | None, Array | None]:
        """``(grad_x [B, I] or None, grad_w [W] or None)`` from one vector-Jacobian product."""
        gradient, backend, _, _ = (
            self._target()
            if route is None
            else (
                route.gradient or self.gradient,
                route.backend,
                None,
                route,
            )
        )
        wrt = (self._input_index if need_x else []) + (self._weight_index if need_w else [])
        coro = gradient.value_and_vjp(backend, self.circuit, bindings, self.observables, g, wrt=wrt)
        _, vjp = self._run(coro) if route is None else _on_loop(route.loop, coro)
        gx = np.ascontiguousarray(vjp[:, self._input_index]) if need_x else None
        gw = vjp[:, self._weight_index].sum(axis=0) if need_w else None
        return gx, gw

    def _evaluate(
        self, x: torch.Tensor, weights: torch.Tensor, need_x: bool, need_w: bool
    ) -> tuple[Array, Array | None, Array | None]:
        """``(values [B, O], d/dx [B, O, I] or None, d/dw [B, O, W] or None)``."""
        values = self._bindings(x, weights)
        wrt = (self._input_index if need_x else []) + (self._weight_index if need_w else [])
        gradient, backend, shots, route = self._target()
        coro = gradient.value_and_jacobian(
            backend, self.circuit, values, self.observables, shots=shots, seed=self.seed, wrt=wrt
        )
        out, jac = self._run(coro) if route is None else _on_loop(route.loop, coro)
        jac_x = np.ascontiguousarray(jac[:, :, self._input_index]) if need_x else None
        jac_w = np.ascontiguousarray(jac[:, :, self._weight_index]) if need_w else None
        return np.ascontiguousarray(out, dtype=np.float64), jac_x, jac_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expectations ``[B, n_observables]`` of the circuit for inputs ``x`` ``[B, n_inputs]``."""
        if not isinstance(x, torch.Tensor):
            raise TorchLayerError(f"expected a torch.Tensor input, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TorchLayerError(f"inputs must be a floating-point tensor, got {x.dtype}")
        squeeze = x.dim() == 1
        batch = x.unsqueeze(0) if squeeze else x
        if batch.dim() != 2:
            raise TorchLayerError(
                f"inputs must have shape [batch, {self.num_inputs}], got {tuple(x.shape)}"
            )
        if batch.shape[1] != self.num_inputs:
            raise TorchLayerError(
                f"the circuit takes {self.num_inputs} inputs per sample, got inputs of shape "
                f"{tuple(x.shape)}"
            )
        if batch.shape[0] == 0:
            raise TorchLayerError("inputs hold no samples (batch size 0)")
        apply = _QuantumFunction.apply
        out = cast(torch.Tensor, apply(batch, self.weights, self))  # type: ignore[no-untyped-call]
        return out.squeeze(0) if squeeze else out
