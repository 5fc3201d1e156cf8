"""The quantum metrics monitor: a trainer callback that measures the model's circuit.

Every ``every`` steps :class:`QuantumMetricsMonitor` prepares the circuit the run trains
with its current weights (on a probe input: zeros by default, the ``probe`` sample when
given) and logs, at that step:

* ``entanglement/qubit_{i}`` and ``entanglement/half_chain``: von Neumann entropies (bits);
* ``fidelity/reference`` (to ``reference_state``, when given), ``fidelity/previous`` (to
  the state of the previous evaluation) and ``fidelity/checkpoint`` (to the state at the
  run's latest checkpoint);
* ``grad/{group}/mean``, ``grad/{group}/variance`` (and ``grad/all/norm_mean``) over the
  gradients of the last ``every`` steps (groups: ``all``, ``layer_{k}`` of a
  QuantumModel, ``head``; a torch module's parameters by name), ``grad/log10_variance``,
  and with three layers or more the barren-plateau fit of log-variance against depth,
  ``grad/plateau_slope`` and ``grad/plateau`` (1.0 when the variance decays
  exponentially with depth, as McClean et al. 2018 describe);
* with shots: ``snr/expectation_mean`` and ``snr/expectation_min`` (closed-form shot-noise
  SNR of the probe's expectations) and ``snr/gradient_mean`` (|mean| / std of each
  partial derivative over the window).

When training begins it logs ``circuit/depth``, ``circuit/gates_1q``, ``circuit/gates_2q``,
``circuit/parameters`` and the same as ``circuit/transpiled_*`` for the run's backend
(through Qiskit's transpiler for Aer and IonQ; the built-in simulator runs the circuit
as it is, so there they are the circuit's own counts and no SDK is loaded).

The monitor only reads the run: it never changes the weights, the RNGs or what is sent
to a backend, so a run with it trains bit for bit as one without it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backends.circuit import Circuit

from ..errors import MonitoringError, QuantumMetricError
from ..training.callbacks import Callback, TrainingContext
from .alerts import publish
from .quantum_metrics import (
    barren_plateau_fit,
    basis_gates_for,
    circuit_metrics,
    circuit_statevector,
    empirical_snr,
    entanglement_profile,
    gradient_statistics,
    shot_noise_snr,
    state_fidelity,
    transpiled_circuit_metrics,
)

__all__ = ["QuantumMetricsMonitor"]

logger = logging.getLogger(__name__)

#: States wider than this are not kept in checkpoints (fidelity to the previous state
#: then restarts after a resume); 2**12 amplitudes are 64 KiB.
_MAX_KEPT_AMPLITUDES = 1 << 12


@dataclass(frozen=True, slots=True)
class _Target:
    """The circuit a run trains, bound to its current weights, and its gradient groups."""

    circuit: Circuit
    values: NDArray[np.float64]
    observables: tuple[Any, ...]
    groups: dict[str, list[int]]


def _bind(
    circuit: Circuit, weights: NDArray[np.float64], inputs: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """One binding of ``circuit``: its weight parameters from ``weights``, inputs from
    ``inputs`` (zeros when None), in the circuit's parameter order."""
    params = list(circuit.parameters)
    values = np.zeros(len(params))
    weight_at = [i for i, p in enumerate(params) if p.kind == "weight"]
    input_at = [i for i, p in enumerate(params) if p.kind != "weight"]
    if len(weight_at) != weights.size:
        raise QuantumMetricError(
            f"the circuit has {len(weight_at)} weight parameters, the model {weights.size} weights"
        )
    values[weight_at] = weights
    if inputs is not None and input_at:
        if inputs.size != len(input_at):
            raise MonitoringError(
                f"the probe has {inputs.size} values, the circuit takes {len(input_at)} inputs"
            )
        values[input_at] = inputs
    return values


def _layer_groups(n_weights: int, layers: int, offset: int = 0) -> dict[str, list[int]]:
    if layers < 1 or n_weights % layers:
        return {}
    per = n_weights // layers
    return {
        f"layer_{k}": list(range(offset + k * per, offset + (k + 1) * per)) for k in range(layers)
    }


def _target(task: Any, probe: NDArray[np.float64] | None) -> _Target | None:
    """What to measure of the run's task (a ModelTask, a QGAN generator), or None."""
    from ..models import QuantumModel

    model = getattr(task, "model", None)
    if isinstance(model, QuantumModel):
        weights = np.asarray(model.weights, dtype=np.float64)
        if model.encoding == "angle":
            inputs = None
            if probe is not None:
                row = probe.reshape(1, -1)
                inputs = (model.encoder.transform(row) if model.encoder is not None else row)[0]
            circuit = model.circuit
        else:
            # Amplitude encoding prepares each sample's state; the probe is |0...0>.
            circuit = model.weighted_circuit(Circuit(model.n_qubits))
            inputs = None
        n_w = model.num_weights
        total = n_w + (
            0 if model.head_weight is None else model.head_weight.size + model.head_bias.size  # type: ignore[union-attr]
        )
        groups = {"all": list(range(total)), **_layer_groups(n_w, model.layers)}
        if total > n_w:
            groups["head"] = list(range(n_w, total))
        return _Target(circuit, _bind(circuit, weights, inputs), tuple(model.observables), groups)
    module = getattr(task, "module", None)
    if module is not None:
        return _torch_target(module, probe)
    generator_circuit = getattr(task, "circuit", None)
    generator_weights = getattr(task, "weights", None)
    if isinstance(generator_circuit, Circuit) and generator_weights is not None:  # a QGAN's
        w = np.asarray(generator_weights, dtype=np.float64).ravel()
        observables = tuple(getattr(task, "observables", ()) or ())
        return _Target(generator_circuit, _bind(generator_circuit, w, None), observables, {})
    return None


def _torch_target(module: Any, probe: NDArray[np.float64] | None) -> _Target | None:
    from ..torch_layer import TorchQuantumLayer

    layers = [m for m in module.modules() if isinstance(m, TorchQuantumLayer)]
    if not layers:
        return None
    layer = layers[0]  # the first quantum layer of the module is the one measured
    weights = layer.weights.detach().cpu().numpy().astype(np.float64).ravel()
    groups: dict[str, list[int]] = {}
    at = 0
    for name, param in module.named_parameters():
        if param.requires_grad:
            groups.setdefault(name.split(".")[0] if "." in name else name, []).extend(
                range(at, at + param.numel())
            )
            at += param.numel()
    groups = {"all": list(range(at)), **{f"param_{k}": v for k, v in groups.items()}}
    inputs = None if probe is None else np.zeros(layer.num_inputs)
    return _Target(layer.circuit, _bind(layer.circuit, weights, inputs), layer.observables, groups)


def _gradient(task: Any) -> NDArray[np.float64] | None:
    """The last step's gradient over everything the optimizer updates, if the task has one."""
    last = getattr(task, "last_gradient", None)
    if last is not None:
        return np.asarray(last, dtype=np.float64).ravel().copy()
    module = getattr(task, "module", None)
    if module is not None:
        parts = [
            p.grad.detach().cpu().numpy().astype(np.float64).ravel()
            for p in module.parameters()
            if p.requires_grad and p.grad is not None
        ]
        return np.concatenate(parts) if parts else None
    return None


class QuantumMetricsMonitor(Callback):
    """Quantum metrics of the trained circuit every ``every`` steps (see the module)."""

    def __init__(
        self,
        every: int = 10,
        *,
        reference_state: ArrayLike | None = None,
        probe: ArrayLike | None = None,
        transpile: bool = True,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise MonitoringError(f"every (steps between evaluations) must be >= 1, got {every!r}")
        self.every = every
        self.reference_state = (
            None if reference_state is None else np.asarray(reference_state, dtype=np.complex128)
        )
        self.probe = None if probe is None else np.asarray(probe, dtype=np.float64).ravel()
        self.transpile = transpile
        # The gradients since the last evaluation: what its statistics are over.
        self._gradients: deque[NDArray[np.float64]] = deque(maxlen=max(2, every))
        self._previous: NDArray[np.complex128] | None = None
        self._at_checkpoint: NDArray[np.complex128] | None = None
        self._checkpoint_binding: tuple[Circuit, NDArray[np.float64]] | None = None
        self._pending_binding: NDArray[np.float64] | None = None
        self.evaluations = 0

    # ------------------------------------------------------------------ hooks
    async def on_train_begin(self, ctx: TrainingContext) -> None:
        target = _target(ctx.task, self.probe)
        if target is None:
            logger.info("run %r trains no circuit the quantum monitor can measure", ctx.run_id)
            return
        if self.reference_state is not None:
            expected = 1 << target.circuit.num_qubits
            if self.reference_state.shape != (expected,):
                raise MonitoringError(
                    f"reference_state has shape {self.reference_state.shape}, the circuit's "
                    f"state has {expected} amplitudes"
                )
        values = {**circuit_metrics(target.circuit), **self._transpiled(ctx, target.circuit)}
        await self._log(ctx, values, int(getattr(ctx.state, "step", 0)))

    def _transpiled(self, ctx: TrainingContext, circuit: Circuit) -> dict[str, float]:
        from backends.simulator import SimulatorBackend

        backend = getattr(ctx.backend, "inner", ctx.backend)
        if backend is None or not self.transpile:
            return {}
        if isinstance(backend, SimulatorBackend):
            # Runs every gate of the circuit natively: transpiled is the circuit itself.
            own = circuit_metrics(circuit)
            return {k.replace("circuit/", "circuit/transpiled_"): v for k, v in own.items()}
        try:
            return transpiled_circuit_metrics(circuit, basis_gates_for(backend))
        except (ImportError, QuantumMetricError) as exc:
            logger.info("no transpiled circuit metrics for %s: %s", backend.name, exc)
            return {}

    async def on_step_end(self, ctx: TrainingContext, step: int, logs: Mapping[str, float]) -> None:
        gradient = _gradient(ctx.task)
        if gradient is not None and np.all(np.isfinite(gradient)):
            if self._gradients and self._gradients[-1].shape != gradient.shape:
                self._gradients.clear()
            self._gradients.append(gradient)
        if step % self.every == 0:
            await self.evaluate(ctx, step)

    def on_checkpoint(self, ctx: TrainingContext, step: int, metric: float | None) -> None:
        # The binding only: its state is prepared at the next evaluation, if one comes
        # before the next checkpoint (checkpoints can be more frequent than evaluations).
        target = _target(ctx.task, self.probe)
        if target is not None:
            self._checkpoint_binding = (target.circuit, target.values.copy())

    async def evaluate(self, ctx: TrainingContext, step: int) -> dict[str, float]:
        """Measure now and log at ``step``; returns what was logged."""
        target = _target(ctx.task, self.probe)
        if target is None:
            return {}
        if self._pending_binding is not None:  # restored from a checkpoint
            binding = self._pending_binding
            self._pending_binding = None
            if self._checkpoint_binding is None and binding.shape == target.values.shape:
                self._checkpoint_binding = (target.circuit, binding)
        pending = self._checkpoint_binding
        self._checkpoint_binding = None
        if pending is None or np.array_equal(pending[1], target.values):
            state = circuit_statevector(target.circuit, target.values)
            if pending is not None:
                self._at_checkpoint = state
        elif pending[0] is target.circuit:
            # Both states in one pass: the batch shares each op's matrix construction.
            both = circuit_statevector(target.circuit, np.stack([target.values, pending[1]]))
            state, self._at_checkpoint = both[0], both[1]
        else:
            state = circuit_statevector(target.circuit, target.values)
            self._at_checkpoint = circuit_statevector(pending[0], pending[1])
        values = entanglement_profile(state)
        if self.reference_state is not None:
            values["fidelity/reference"] = float(state_fidelity(state, self.reference_state))
        if self._previous is not None and self._previous.shape == state.shape:
            values["fidelity/previous"] = float(state_fidelity(state, self._previous))
        if self._at_checkpoint is not None and self._at_checkpoint.shape == state.shape:
            values["fidelity/checkpoint"] = float(state_fidelity(state, self._at_checkpoint))
        self._previous = state
        values.update(self._gradient_metrics(target))
        shots = getattr(ctx.config, "shots", None)
        if shots and target.observables:
            from backends.observables import as_observables
            from backends.simulator.statevector import PauliMeasurement

            n = target.circuit.num_qubits
            measured = PauliMeasurement(n, tuple(as_observables(target.observables, n)))
            expectations = np.clip(measured.expectations(state[None, :])[0], -1.0, 1.0)
            snr = np.asarray(shot_noise_snr(expectations, int(shots)), dtype=np.float64)
            finite = snr[np.isfinite(snr)]
            if finite.size:
                values["snr/expectation_mean"] = float(finite.mean())
                values["snr/expectation_min"] = float(finite.min())
            if len(self._gradients) >= 2:
                per_param = np.asarray(empirical_snr(np.stack(self._gradients)), dtype=np.float64)
                finite = per_param[np.isfinite(per_param)]
                if finite.size:
                    values["snr/gradient_mean"] = float(finite.mean())
        await self._log(ctx, values, step)
        self.evaluations += 1
        return values

    def _gradient_metrics(self, target: _Target) -> dict[str, float]:
        if len(self._gradients) < 2:
            return {}
        draws = np.stack(self._gradients)
        size = draws.shape[1]
        groups = {name: idx for name, idx in target.groups.items() if idx and max(idx) < size} or {
            "all": list(range(size))
        }
        values = {
            key: value
            for key, value in gradient_statistics(draws, groups).items()
            # The norm once, for everything; per group its mean and variance (what the
            # barren-plateau literature compares), so a run logs fewer values.
            if not key.endswith("/norm_mean") or key == "grad/all/norm_mean"
        }
        all_variance = values.get("grad/all/variance")
        if all_variance is not None and all_variance > 0:
            values["grad/log10_variance"] = float(np.log10(all_variance))
        layers = sorted(
            (int(name.split("_")[1]), values[f"grad/{name}/variance"])
            for name in groups
            if name.startswith("layer_") and f"grad/{name}/variance" in values
        )
        if len(layers) >= 3 and all(v > 0 for _, v in layers):
            fit = barren_plateau_fit([d + 1 for d, _ in layers], [v for _, v in layers])
            values["grad/plateau_slope"] = float(fit.slope)
            values["grad/plateau"] = 1.0 if fit.plateau else 0.0
        return values

    async def _log(self, ctx: TrainingContext, values: dict[str, float], step: int) -> None:
        finite = {k: float(v) for k, v in values.items() if np.isfinite(v)}
        if not finite:
            return
        if ctx.db is not None:
            await ctx.db.metrics.log(ctx.run_id, finite, step)
        publish(ctx, finite)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        # Arrays, not lists: a checkpoint stores each as one binary entry.
        pending = None if self._checkpoint_binding is None else self._checkpoint_binding[1]
        return {
            "gradients": np.stack(self._gradients) if self._gradients else None,
            "previous": _kept(self._previous),
            "checkpoint": _kept(self._at_checkpoint),
            "checkpoint_binding": pending,
            "evaluations": self.evaluations,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._gradients.clear()
        saved = state.get("gradients")
        for g in [] if saved is None else np.asarray(saved, dtype=np.float64):
            self._gradients.append(np.array(g))
        self._previous = _restored(state.get("previous"))
        self._at_checkpoint = _restored(state.get("checkpoint"))
        pending = state.get("checkpoint_binding")
        self._pending_binding = None if pending is None else np.asarray(pending, np.float64)
        self.evaluations = int(state.get("evaluations", 0))


def _kept(state: NDArray[np.complex128] | None) -> NDArray[np.complex128] | None:
    return None if state is None or state.size > _MAX_KEPT_AMPLITUDES else state


def _restored(saved: Any) -> NDArray[np.complex128] | None:
    return None if saved is None else np.asarray(saved, dtype=np.complex128)
