"""Tests for the data encoders and the variational QuantumModel."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector

from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_db.errors import QuantumDBError
from quantum_ml.encoders import (
    EncodingError,
    QuantumDataEncoder,
    state_preparation_circuit,
)
from quantum_ml.models import ModelError, QuantumModel, entangling_pairs


def cx_pairs(model: QuantumModel) -> list[tuple[int, ...]]:
    return [i.qubits for i in model.circuit.instructions if i.name == "cx"]


def reference(model: QuantumModel, x: np.ndarray) -> np.ndarray:
    """Build the same model directly in Qiskit and read it out from a Statevector."""
    n = model.n_qubits
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(float(x[q]), q)
    w = iter(model.weights)
    for _ in range(model.layers):
        for q in range(n):
            for rot in model.rotations:
                getattr(qc, rot)(float(next(w)), q)
        for c, t in entangling_pairs(n, model.entanglement):
            qc.cx(c, t)
    sv = Statevector(qc)
    if model.readout == "expectation":
        labels = ["I" * (n - 1 - q) + "Z" + "I" * q for q in range(n)]
        out = np.array([sv.expectation_value(SparsePauliOp(lab)).real for lab in labels])
    else:
        out = sv.probabilities()
    if model.head_weight is not None and model.head_bias is not None:
        out = model.head_weight @ out + model.head_bias
    return out


# ---------------------------------------------------------------- structure
@pytest.mark.parametrize(
    ("entanglement", "expected"),
    [
        ("linear", [(0, 1), (1, 2), (2, 3)]),
        ("circular", [(0, 1), (1, 2), (2, 3), (3, 0)]),
        ("full", [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]),
    ],
)
def test_entanglement_patterns(entanglement: str, expected: list[tuple[int, int]]) -> None:
    model = QuantumModel(4, 2, entanglement=entanglement)  # type: ignore[arg-type]
    assert cx_pairs(model) == expected * 2


def test_parameter_counts_and_order() -> None:
    model = QuantumModel(3, 2, rotations=("ry", "rz"))
    assert model.num_weights == 12 == model.weights.shape[0]
    names = [p.name for p in model.circuit.parameters]
    assert names == ["x0", "x1", "x2"] + [f"w{k}" for k in range(12)]
    assert [p.kind for p in model.circuit.parameters[:3]] == ["input"] * 3
    assert model.observables == ["IIZ", "IZI", "ZII"]
    assert QuantumModel(2, 1, readout="probabilities").readout_dim == 4


def test_seeded_init_is_reproducible() -> None:
    a = QuantumModel(3, 2, task="classification", n_outputs=3, seed=5)
    b = QuantumModel(3, 2, task="classification", n_outputs=3, seed=5)
    c = QuantumModel(3, 2, task="classification", n_outputs=3, seed=6)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.head_weight is not None and b.head_weight is not None
    np.testing.assert_array_equal(a.head_weight, b.head_weight)
    assert not np.array_equal(a.weights, c.weights)
    assert np.all((a.weights >= 0) & (a.weights < 2 * math.pi))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_qubits": 0, "layers": 1},
        {"n_qubits": 2, "layers": 1, "entanglement": "star"},
        {"n_qubits": 2, "layers": 1, "rotations": ("rx", "h")},
        {"n_qubits": 2, "layers": 1, "readout": "counts"},
        {"n_qubits": 2, "layers": 1, "n_outputs": 3},
        {"n_qubits": 2, "layers": 1, "task": "ranking"},
    ],
)
def test_bad_model_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ModelError):
        QuantumModel(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- forward
@pytest.mark.parametrize(
    ("entanglement", "readout", "task"),
    [
        ("linear", "expectation", None),
        ("circular", "probabilities", None),
        ("full", "expectation", "classification"),
        ("circular", "probabilities", "regression"),
    ],
)
async def test_forward_matches_qiskit(entanglement: str, readout: str, task: str | None) -> None:
    model = QuantumModel(
        3,
        2,
        entanglement=entanglement,  # type: ignore[arg-type]
        readout=readout,  # type: ignore[arg-type]
        task=task,  # type: ignore[arg-type]
        seed=3,
    )
    X = np.random.default_rng(0).uniform(0, math.pi, (4, 3))
    out = await model.forward(SimulatorBackend(), X)
    expected = np.stack([reference(model, x) for x in X])
    np.testing.assert_allclose(out, expected, atol=1e-10)
    if readout == "probabilities" and task is None:
        np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)


async def test_forward_with_encoder_and_amplitude_encoding() -> None:
    X = np.random.default_rng(1).normal(size=(5, 2))
    enc = QuantumDataEncoder("angle", "minmax").fit(X)
    model = QuantumModel(2, 1, encoder=enc)
    out = await model.forward(SimulatorBackend(), X)
    expected = np.stack([reference(model, x) for x in enc.transform(X)])
    np.testing.assert_allclose(out, expected, atol=1e-10)

    amp = QuantumModel(2, 1, encoding="amplitude", readout="probabilities", seed=2)
    X4 = np.random.default_rng(2).normal(size=(3, 4))
    out = await amp.forward(SimulatorBackend(), X4)
    for row, x in zip(out, X4, strict=True):
        qc = QuantumCircuit(2)
        qc.initialize(x / np.linalg.norm(x), [0, 1])
        w = iter(amp.weights)
        for q in range(2):
            for rot in amp.rotations:
                getattr(qc, rot)(float(next(w)), q)
        qc.cx(0, 1)
        np.testing.assert_allclose(row, Statevector(qc).probabilities(), atol=1e-10)


async def test_forward_rejects_bad_width() -> None:
    with pytest.raises(ModelError):
        await QuantumModel(3, 1).forward(SimulatorBackend(), np.zeros((2, 2)))


# ---------------------------------------------------------------- freezing
def test_freeze_mask_semantics() -> None:
    model = QuantumModel(2, 3)  # 6 weights per layer
    assert model.trainable_mask.all()
    model.freeze("layers:0")
    mask = model.trainable_mask
    assert not mask[:6].any() and mask[6:].all()
    mask[:] = False  # a copy: the model is unchanged
    assert model.trainable_mask[6:].all()
    model.freeze([7, 8]).freeze(17)
    assert np.flatnonzero(~model.trainable_mask).tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 17]
    model.unfreeze([7])
    assert model.trainable_mask[7]
    model.unfreeze()
    assert model.trainable_mask.all()
    model.freeze("layers:1,2")
    assert np.flatnonzero(model.trainable_mask).tolist() == list(range(6))
    model.freeze()
    assert not model.trainable_mask.any()
    for bad in ("layers:3", "layer:0", "layers:x", 18, -1, [True]):
        with pytest.raises(ModelError):
            model.freeze(bad)


# ---------------------------------------------------------------- registry
async def test_registry_round_trip(tmp_path: Path) -> None:
    X = np.random.default_rng(4).normal(size=(6, 3))
    enc = QuantumDataEncoder("angle", "standard").fit(X)
    model = QuantumModel(
        3, 2, entanglement="full", task="classification", n_outputs=3, seed=9, encoder=enc
    )
    model.freeze("layers:0")
    async with QuantumDatabase(f"sqlite+aiosqlite:///{tmp_path}/q.sqlite").connect() as db:
        await db.models.register("m", model)
        version = await db.models.get("m")
    assert set(version.parameters) == {"weights", "head_weight", "head_bias"}
    assert version.architecture["entanglement"] == "full"
    m2 = QuantumModel.from_registry(version)
    np.testing.assert_array_equal(m2.weights, model.weights)
    assert m2.head_weight is not None and model.head_weight is not None
    np.testing.assert_array_equal(m2.head_weight, model.head_weight)
    np.testing.assert_array_equal(m2.trainable_mask, model.trainable_mask)
    assert m2.circuit == model.circuit
    assert m2.encoder is not None and m2.encoder.to_contract() == enc.to_contract()
    backend = SimulatorBackend()
    np.testing.assert_array_equal(await m2.forward(backend, X), await model.forward(backend, X))


def test_from_payload_rejects_foreign_or_mismatched() -> None:
    payload = QuantumModel(2, 1).registry_payload()
    with pytest.raises(ModelError):
        QuantumModel.from_payload(payload["parameters"], {"kind": "other"})
    with pytest.raises(ModelError):
        QuantumModel.from_payload({"weights": np.zeros(5)}, payload["architecture"])


# ---------------------------------------------------------------- encoder
def test_encoder_fit_and_contract_round_trip() -> None:
    X = np.random.default_rng(5).normal(size=(20, 3))
    enc = QuantumDataEncoder("angle", "minmax").fit(X)
    contract = enc.to_contract()
    assert contract["n_qubits"] == 3
    np.testing.assert_allclose(contract["feature_min"], X.min(axis=0))
    np.testing.assert_allclose(contract["feature_std"], X.std(axis=0))
    back = QuantumDataEncoder.from_contract(contract)
    assert back.to_contract() == contract
    np.testing.assert_array_equal(back.transform(X), enc.transform(X))


async def test_encoder_reads_a_dataset_contract(tmp_path: Path) -> None:
    X = np.random.default_rng(6).normal(size=(30, 2))
    async with QuantumDatabase(f"sqlite+aiosqlite:///{tmp_path}/q.sqlite").connect() as db:
        info = await db.store_training_data(
            "d", X, np.arange(30) % 2, encoding={"scaling": "standard"}
        )
    enc = QuantumDataEncoder.from_contract(info.encoding)
    assert (enc.encoder, enc.scaling, enc.n_qubits) == ("angle", "standard", 2)
    np.testing.assert_allclose(
        enc.transform(X), QuantumDataEncoder("angle", "standard").fit(X).transform(X)
    )


def test_angle_transform_ranges() -> None:
    X = np.random.default_rng(7).normal(scale=5, size=(50, 4))
    angles = QuantumDataEncoder("angle", "minmax").fit(X).transform(X)
    assert angles.min() == 0.0 and angles.max() == pytest.approx(math.pi)
    assert np.all((angles >= 0) & (angles <= math.pi))
    outside = QuantumDataEncoder("angle", "minmax").fit(X).transform(X * 10)
    assert np.all((outside >= 0) & (outside <= math.pi))  # clipped to the fitted range
    std = QuantumDataEncoder("angle", "standard").fit(X).transform(X)
    assert np.all((std > 0) & (std < math.pi))
    np.testing.assert_array_equal(QuantumDataEncoder("angle", "none").transform(X), X)
    circuit = QuantumDataEncoder("angle", "none").circuit(4)
    assert [(i.name, i.qubits) for i in circuit.instructions] == [("ry", (q,)) for q in range(4)]
    assert [a.coeff for i in circuit.instructions for a in i.angles] == [1.0] * 4


@pytest.mark.parametrize("n_qubits", [1, 2, 3, 4])
def test_amplitude_state_preparation_is_exact(n_qubits: int) -> None:
    rng = np.random.default_rng(n_qubits)
    for trial in range(5):
        x = rng.normal(size=2**n_qubits)  # mixed signs
        if trial == 1:
            x[::3] = 0.0  # zero amplitudes on the way
        if trial == 2:
            x = x[: max(1, 2**n_qubits - 1)]  # padded with a zero
        circuit = state_preparation_circuit(x, n_qubits)
        assert {i.name for i in circuit.instructions} <= {"ry", "cx"}
        target = np.zeros(2**n_qubits)
        target[: x.size] = x / np.linalg.norm(x)
        state = Statevector(circuit.to_qiskit()).data
        np.testing.assert_allclose(state, target, atol=1e-10)


def test_encoder_amplitude_circuit() -> None:
    x = np.array([3.0, -1.0, 0.5])
    enc = QuantumDataEncoder("amplitude", "none")
    circuit = enc.amplitude_circuit(x)
    assert circuit.num_qubits == 2
    expected = np.append(x, 0.0) / np.linalg.norm(x)
    np.testing.assert_allclose(Statevector(circuit.to_qiskit()).data, expected, atol=1e-10)
    with pytest.raises(EncodingError):
        enc.circuit(2)


@pytest.mark.parametrize(
    ("encoder", "call"),
    [
        (QuantumDataEncoder("angle", "none"), lambda e: e.fit([[1.0, np.nan]])),
        (QuantumDataEncoder("angle", "minmax"), lambda e: e.transform([[1.0, 2.0]])),
        (QuantumDataEncoder("angle", "none", 3), lambda e: e.fit([[1.0, 2.0]])),
        (
            QuantumDataEncoder("angle", "minmax").fit([[1.0, 2.0], [0.0, 1.0]]),
            lambda e: e.transform([[1.0, 2.0, 3.0]]),
        ),
        (QuantumDataEncoder("amplitude", "none"), lambda e: e.amplitude_circuit([0.0, 0.0])),
        (QuantumDataEncoder("amplitude", "none", 1), lambda e: e.transform([[1.0, 2.0, 3.0]])),
        (QuantumDataEncoder("amplitude", "none"), lambda e: e.amplitude_circuit([1.0, np.inf])),
        (QuantumDataEncoder("angle", "none"), lambda e: e.to_contract()),
        (QuantumDataEncoder("angle", "none"), lambda e: e.from_contract({"encoder": "angle"})),
    ],
)
def test_bad_inputs_raise_encoding_error(encoder: QuantumDataEncoder, call: object) -> None:
    with pytest.raises(EncodingError) as info:
        call(encoder)  # type: ignore[operator]
    assert isinstance(info.value, QuantumDBError) and isinstance(info.value, ValueError)


def test_bad_encoder_settings() -> None:
    with pytest.raises(EncodingError):
        QuantumDataEncoder("basis")  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        QuantumDataEncoder(scaling="robust")  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        state_preparation_circuit(np.ones(5), 2)
