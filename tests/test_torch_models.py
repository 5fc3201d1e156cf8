"""Torch modules in the model registry: stored as arrays plus a factory, rebuilt exactly.

Everything runs on a real SQLite file and on the real PostgreSQL server; the rebuild that
matters is done by a fresh Python process reading the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import random
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector
from sqlalchemy import select

from quantum_db import QuantumDatabase
from quantum_db.errors import DataValidationError, SerializationError
from quantum_db.registry.schema import ModelVersionRow
from quantum_ml.errors import ModelError
from quantum_ml.hybrid import hybrid_classifier
from quantum_ml.models import QuantumModel
from quantum_ml.torch_models import (
    TorchModel,
    TorchModelSpec,
    freeze,
    frozen_names,
    load_torch_model,
    spec_of,
    torch_factory,
    torch_registry_payload,
    unfreeze,
    with_spec,
)

ROOT = Path(__file__).resolve().parent.parent
HYBRID = "quantum_ml.hybrid:hybrid_classifier"
HYBRID_KWARGS = {"n_features": 3, "n_qubits": 3, "layers": 2, "n_outputs": 2, "seed": 11}


# ---------------------------------------------------------------- factories for the tests
@torch_factory
def buffered_net(width: int = 3) -> torch.nn.Sequential:
    """State of every storable dtype; the Linear's default init draws from torch's RNG."""
    net = torch.nn.Sequential(
        torch.nn.Linear(width, width, dtype=torch.float64), torch.nn.BatchNorm1d(width)
    )
    net.register_buffer("mask", torch.tensor([True, False] * width)[:width])
    net.register_buffer("counts", torch.arange(width, dtype=torch.int32))
    net.register_buffer("codes", torch.arange(width, dtype=torch.uint8))
    net.register_buffer("scale", torch.ones(width, dtype=torch.float16))
    return net


@torch_factory
def nested_net() -> torch.nn.Sequential:
    encoder = torch.nn.Sequential(
        OrderedDict(
            lin=torch.nn.Linear(2, 3, dtype=torch.float64),
            act=torch.nn.Tanh(),
            mix=torch.nn.Linear(3, 3, dtype=torch.float64),
        )
    )
    return torch.nn.Sequential(
        OrderedDict(encoder=encoder, head=torch.nn.Linear(3, 1, dtype=torch.float64))
    )


def _not_decorated() -> torch.nn.Module:
    return torch.nn.Linear(1, 1)


shadowed = torch_factory(_not_decorated)  # its path leads to the undecorated function


@torch_factory
def not_a_module() -> torch.nn.Module:
    return "a string"  # type: ignore[return-value]


# ---------------------------------------------------------------- helpers
def state_arrays(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), key


def numpy_global_state() -> tuple[bytes, int]:
    state = np.random.get_state(legacy=False)["state"]
    return bytes(state["key"].tobytes()), int(state["pos"])


def requires_grad(module: torch.nn.Module) -> dict[str, bool]:
    return {k: p.requires_grad for k, p in module.named_parameters()}


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(2024)
    x = torch.from_numpy(rng.normal(size=(8, 3)).astype(np.float32))
    y = torch.from_numpy((rng.random(8) > 0.5).astype(np.int64))
    return x, y


def fine_tune(net: torch.nn.Module, steps: int = 3) -> None:
    x, y = training_data()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()


async def stored_blob(db: QuantumDatabase) -> bytes:
    async with db.registry.session() as session:
        blob: bytes | None = await session.scalar(select(ModelVersionRow.parameters))
    assert blob is not None
    return blob


@pytest.fixture
def trained() -> torch.nn.Module:
    net = hybrid_classifier(**HYBRID_KWARGS)
    fine_tune(net)
    return net


# ---------------------------------------------------------------- the hybrid factory
def test_hybrid_matches_its_docstring_in_qiskit() -> None:
    n, n_layers, seed = 3, 2, 5
    net = hybrid_classifier(4, n_qubits=n, layers=n_layers, n_outputs=2, seed=seed)
    state = state_arrays(net)
    w = np.random.default_rng(seed).uniform(0.0, 2 * math.pi, 3 * n_layers * n)
    np.testing.assert_array_equal(state["1.weights"], w)
    np.testing.assert_array_equal(state["1.weights"], QuantumModel(n, n_layers, seed=seed).weights)
    generator = torch.Generator().manual_seed(seed)
    for key, shape, fan_in in (
        ("0.weight", (n, 4), 4),
        ("0.bias", (n,), 4),
        ("2.weight", (2, n), n),
        ("2.bias", (2,), n),
    ):
        bound = 1 / math.sqrt(fan_in)
        expected = torch.empty(shape).uniform_(-bound, bound, generator=generator)
        np.testing.assert_array_equal(state[key], expected.numpy())

    features = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    with torch.no_grad():
        out = net(torch.from_numpy(features)).numpy()
    for row, f in zip(out, features, strict=True):
        x = state["0.weight"].astype(np.float64) @ f + state["0.bias"]
        qc = QuantumCircuit(n)
        for q in range(n):
            qc.ry(float(x[q]), q)
        for layer in range(n_layers):
            for q in range(n):
                k = 3 * (layer * n + q)
                qc.rx(w[k], q)
                qc.ry(w[k + 1], q)
                qc.rz(w[k + 2], q)
            for q in range(n - 1):
                qc.cx(q, q + 1)
        sv = Statevector(qc)
        z = np.array(
            [
                sv.expectation_value(SparsePauliOp("I" * (n - 1 - q) + "Z" + "I" * q)).real
                for q in range(n)
            ]
        )
        logits = state["2.weight"].astype(np.float64) @ z + state["2.bias"]
        np.testing.assert_allclose(row, logits, atol=1e-5)


def test_hybrid_is_seeded_and_leaves_the_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a, b = hybrid_classifier(2, seed=3), hybrid_classifier(2, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert_bitwise_equal(state_arrays(a), state_arrays(b))
    c = hybrid_classifier(2, seed=4)
    for key, value in state_arrays(c).items():
        assert not np.array_equal(value, state_arrays(a)[key]), key
    assert spec_of(a) == TorchModelSpec(
        HYBRID, {"n_features": 2, "n_qubits": 4, "layers": 3, "n_outputs": 2, "seed": 3}
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_features": 0}, "n_features must be >= 1"),
        ({"n_features": True}, "n_features must be an integer"),
        ({"n_features": 2.0}, "n_features must be an integer"),
        ({"n_features": 2, "n_qubits": 0}, "n_qubits must be in"),
        ({"n_features": 2, "n_qubits": 10_000}, "n_qubits must be in"),
        ({"n_features": 2, "layers": 0}, "layers must be >= 1"),
        ({"n_features": 2, "n_outputs": 0}, "n_outputs must be >= 1"),
        ({"n_features": 2, "seed": -1}, "seed must be in"),
        ({"n_features": 2, "seed": 2**63}, "seed must be in"),
        ({"n_features": np.int64(2)}, "kwargs\\['n_features'\\] is a int64"),
        ({"n_feature": 2}, "hybrid_classifier"),
    ],
)
def test_hybrid_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ModelError, match=match):
        hybrid_classifier(**kwargs)


# ---------------------------------------------------------------- specs and factories
@pytest.mark.parametrize(
    ("factory", "match"),
    [
        ("hybrid_classifier", "not of the form"),
        ("quantum_ml.hybrid:", "not of the form"),
        (":hybrid_classifier", "not of the form"),
        ("quantum_ml..hybrid:hybrid_classifier", "not of the form"),
        ("quantum ml.hybrid:hybrid_classifier", "not of the form"),
        (42, "must be a 'package.module:function' string"),
        ("no_such_package_qdb.models:build", "cannot import module 'no_such_package_qdb.models'"),
        ("quantum_ml.hybrid:no_such_factory", "does not exist"),
        ("math:pi", "is a float, not a callable"),
        ("__main__:main", "__main__"),
    ],
)
def test_bad_factories(factory: Any, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        TorchModelSpec(factory, {})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_features": (1, 2)}, "tuple .*pass a list"),
        ({"n_features": 3, "seed": math.nan}, "nan"),
        ({"n_features": {1: 2}}, "JSON keys must be strings"),
        ({"n_features": object()}, "is a object"),
        ({"n_features": np.float32(1.0)}, "is a float32"),
        ({"n_feature": 3}, "do not fit"),
        ([("n_features", 3)], "kwargs must be a mapping"),
    ],
)
def test_bad_kwargs(kwargs: Any, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        TorchModelSpec(HYBRID, kwargs)


def test_spec_copies_its_kwargs_and_attaches() -> None:
    kwargs: dict[str, Any] = {"n_features": 3, "n_qubits": 2}
    spec = TorchModelSpec(HYBRID, kwargs)
    kwargs["n_qubits"] = 5
    assert spec.kwargs == {"n_features": 3, "n_qubits": 2}
    assert spec.resolve() is hybrid_classifier
    net = torch.nn.Linear(1, 1)
    assert spec_of(net) is None
    assert with_spec(net, hybrid_classifier, n_features=1) is net
    assert spec_of(net) == TorchModelSpec(HYBRID, {"n_features": 1})
    with pytest.raises(ModelError, match="not a module-level function"):
        with_spec(net, lambda: net)
    with pytest.raises(ModelError, match=r"must be a torch\.nn\.Module"):
        with_spec("net", HYBRID)  # type: ignore[type-var]


def test_torch_factory_misuse() -> None:
    def local_factory() -> torch.nn.Module:
        return torch.nn.Linear(1, 1)

    with pytest.raises(ModelError, match="not a module-level function"):
        torch_factory(local_factory)
    with pytest.raises(ModelError, match="does not lead back"):
        shadowed()
    with pytest.raises(ModelError, match=r"result of not_a_module must be a torch\.nn\.Module"):
        not_a_module()


def test_payload_holds_every_state_tensor_with_its_dtype() -> None:
    net = buffered_net()
    payload = torch_registry_payload(net)
    arch = payload["architecture"]
    assert arch["kind"] == "torch"
    assert arch["factory"] == f"{__name__}:buffered_net"
    assert arch["kwargs"] == {"width": 3}
    assert arch["state_keys"] == list(net.state_dict())
    assert arch["dtypes"] == {
        "mask": "bool",
        "counts": "int32",
        "codes": "uint8",
        "scale": "float16",
        "0.weight": "float64",
        "0.bias": "float64",
        "1.weight": "float32",
        "1.bias": "float32",
        "1.running_mean": "float32",
        "1.running_var": "float32",
        "1.num_batches_tracked": "int64",
    }
    assert arch["frozen"] == []
    assert_bitwise_equal(payload["parameters"], state_arrays(net))
    with torch.no_grad():  # a snapshot: later training does not change the payload
        net.get_parameter("0.weight").add_(1.0)
    assert not np.array_equal(payload["parameters"]["0.weight"], state_arrays(net)["0.weight"])


def test_payload_bad_modules() -> None:
    with pytest.raises(ModelError, match="does not say which factory builds it"):
        torch_registry_payload(torch.nn.Linear(2, 2))
    with pytest.raises(ModelError, match=r"must be a torch\.nn\.Module"):
        torch_registry_payload("net")  # type: ignore[arg-type]
    net = with_spec(torch.nn.Linear(2, 2, dtype=torch.bfloat16), HYBRID, n_features=2)
    with pytest.raises(ModelError, match="bfloat16"):
        torch_registry_payload(net)
    with pytest.raises(ModelError, match="no state"):
        torch_registry_payload(with_spec(torch.nn.ReLU(), HYBRID, n_features=2))


# ---------------------------------------------------------------- freezing
def test_freeze_by_submodule_and_parameter_name() -> None:
    net = nested_net()
    freeze(net, "encoder.lin")
    assert requires_grad(net) == {
        "encoder.lin.weight": False,
        "encoder.lin.bias": False,
        "encoder.mix.weight": True,
        "encoder.mix.bias": True,
        "head.weight": True,
        "head.bias": True,
    }
    assert frozen_names(net) == ["encoder.lin"]
    freeze(net, ["encoder"])
    assert frozen_names(net) == ["encoder"]  # the highest fully frozen submodule
    unfreeze(net, ["encoder.lin"])
    assert frozen_names(net) == ["encoder.mix"]
    unfreeze(net, "encoder")
    assert frozen_names(net) == []
    freeze(net, ["head.bias"])
    assert frozen_names(net) == ["head.bias"]
    freeze(net, [""])
    assert frozen_names(net) == [""]
    unfreeze(net, "")
    assert all(requires_grad(net).values())


def test_unknown_freeze_names_change_nothing() -> None:
    net = hybrid_classifier(2)
    available = "no submodule named 'encoder'; the submodules are '0', '1', '2'"
    with pytest.raises(ModelError, match=available):
        freeze(net, ["0", "encoder"])
    assert all(requires_grad(net).values())
    with pytest.raises(ModelError, match="must be strings"):
        freeze(net, [0])  # type: ignore[list-item]
    with pytest.raises(ModelError, match=r"must be a torch\.nn\.Module"):
        unfreeze("net", ["0"])  # type: ignore[type-var]


# ---------------------------------------------------------------- the registry
REBUILD = """
import asyncio, json, sys
import numpy as np, torch
from quantum_db import QuantumDatabase
from quantum_ml.torch_models import load_torch_model

async def main(url, folder):
    async with QuantumDatabase(url, create=False).connect() as db:
        version = await db.models.get("clf")
    net = load_torch_model(version)
    x = torch.from_numpy(np.load(folder + "/x.npy", allow_pickle=False))
    with torch.no_grad():
        out = net(x).numpy()
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    np.savez(folder + "/rebuilt.npz", allow_pickle=False, __out__=out, **state)
    grads = {k: p.requires_grad for k, p in net.named_parameters()}
    print(json.dumps({"keys": list(state), "requires_grad": grads, "modules": list(sys.modules)}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def rebuild_elsewhere(url: str, folder: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        REBUILD,
        url,
        str(folder),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return report


async def test_a_trained_hybrid_rebuilds_exactly_in_a_fresh_process(
    database_url: str, trained: torch.nn.Module, tmp_path: Path
) -> None:
    fresh = state_arrays(hybrid_classifier(**HYBRID_KWARGS))
    mine = state_arrays(trained)
    for key in mine:  # training moved every tensor, so a bare factory call cannot pass
        assert mine[key].tobytes() != fresh[key].tobytes(), key
    async with QuantumDatabase(database_url).connect() as db:
        version = await db.models.register("clf", TorchModel(trained), metrics={"loss": 0.5})
    assert version.architecture["factory"] == HYBRID
    assert version.architecture["kwargs"] == HYBRID_KWARGS

    x = np.random.default_rng(7).normal(size=(6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        expected_out = trained(torch.from_numpy(x)).numpy()
    report = await rebuild_elsewhere(database_url, tmp_path)
    assert "pytest" not in report["modules"]  # a fresh interpreter, not this one
    with np.load(tmp_path / "rebuilt.npz", allow_pickle=False) as archive:
        rebuilt = {k: archive[k] for k in archive.files}
    out = rebuilt.pop("__out__")
    assert report["keys"] == list(mine)
    assert_bitwise_equal({k: rebuilt[k] for k in report["keys"]}, mine)
    assert out.dtype == expected_out.dtype and out.tobytes() == expected_out.tobytes()
    assert report["requires_grad"] == requires_grad(trained)


async def test_the_stored_blob_holds_arrays_and_no_pickle(
    database_url: str, trained: torch.nn.Module
) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        await db.models.register("clf", TorchModel(trained))
        blob = await stored_blob(db)
    mine = state_arrays(trained)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        members = archive.namelist()
    assert all(m.endswith(".npy") for m in members), members  # no data.pkl of torch.save
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    assert not any(a.dtype.hasobject for a in arrays.values())
    by_bytes = {a.tobytes(): a.dtype for a in arrays.values()}
    for key, array in mine.items():  # each tensor is there, raw, with its own dtype
        assert by_bytes[array.tobytes()] == array.dtype, key
    rest = blob
    for array in arrays.values():
        rest = rest.replace(array.tobytes(), b"")
    assert b"\x80\x04" not in rest  # pickle protocol 4's header, outside the raw numbers
    assert b"\x80\x04\x95" not in blob  # ... and the header-plus-frame a pickle starts with


async def test_every_dtype_round_trips_and_the_global_rng_is_kept(database_url: str) -> None:
    net = buffered_net()
    net.train()
    net[1](torch.linspace(-1.0, 1.0, 12).reshape(4, 3))  # BatchNorm's running statistics
    with torch.no_grad():
        net.get_buffer("mask").logical_not_()
        net.get_buffer("counts").add_(-7)
        net.get_buffer("codes").add_(200)
        net.get_buffer("scale").mul_(0.3)
    assert int(net.get_buffer("1.num_batches_tracked")) == 1
    mine = state_arrays(net)
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    states = (torch.get_rng_state(), numpy_global_state(), random.getstate())
    async with QuantumDatabase(database_url).connect() as db:
        version = await db.models.register("buffers", TorchModel(net))
        stored = await db.models.get("buffers")
        rebuilt = await db.models.load("buffers")
    assert torch.equal(torch.get_rng_state(), states[0])  # buffered_net draws from it
    assert numpy_global_state() == states[1]
    assert random.getstate() == states[2]
    assert {k: str(a.dtype) for k, a in stored.parameters.items()} == version.architecture["dtypes"]
    assert_bitwise_equal({k: stored.parameters[k] for k in mine}, mine)
    assert isinstance(rebuilt, torch.nn.Module)
    assert_bitwise_equal(state_arrays(rebuilt), mine)
    assert spec_of(rebuilt) == spec_of(net)  # so it can be registered again as is


async def test_transfer_learning_keeps_the_frozen_part_fixed(
    database_url: str, trained: torch.nn.Module
) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        await db.models.register("clf", TorchModel(trained))
        net = load_torch_model(await db.models.get("clf"))
        before = state_arrays(net)
        freeze(net, ["0"])
        fine_tune(net, steps=3)
        after = state_arrays(net)
        for key in ("0.weight", "0.bias"):
            assert after[key].tobytes() == before[key].tobytes(), key
        for key in ("1.weights", "2.weight", "2.bias"):
            assert after[key].tobytes() != before[key].tobytes(), key
        tuned = await db.models.register("clf", TorchModel(net))
        assert tuned.version == 2
        assert tuned.architecture["frozen"] == ["0"]
        again = load_torch_model(await db.models.get("clf", version=2))
    assert requires_grad(again) == {
        "0.weight": False,
        "0.bias": False,
        "1.weights": True,
        "2.weight": True,
        "2.bias": True,
    }
    assert_bitwise_equal(state_arrays(again), after)


async def test_nested_and_parameter_freezes_travel(database_url: str) -> None:
    net = freeze(freeze(nested_net(), "encoder"), ["head.bias"])
    async with QuantumDatabase(database_url).connect() as db:
        version = await db.models.register("nested", TorchModel(net))
        again = await db.models.load("nested")
    assert version.architecture["frozen"] == ["encoder", "head.bias"]
    assert requires_grad(again) == requires_grad(net)


async def test_specs_that_do_not_build_the_module_are_not_stored(database_url: str) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        wrong_shape = with_spec(hybrid_classifier(3), HYBRID, n_features=5)
        with pytest.raises(DataValidationError, match=r"'0\.weight' is stored as .*\(4, 3\)"):
            await db.models.register("clf", TorchModel(wrong_shape))
        extra = hybrid_classifier(3)
        extra.append(torch.nn.Linear(2, 2))
        with pytest.raises(DataValidationError, match=r"not in the module: \['3\.weight'"):
            await db.models.register("clf", TorchModel(extra))
        wrong_dtype = hybrid_classifier(3).double()
        with pytest.raises(DataValidationError, match=r"torch\.float64 .* builds torch\.float32"):
            await db.models.register("clf", TorchModel(wrong_dtype))
        other = hybrid_classifier(3)
        with pytest.raises(DataValidationError, match="bare Sequential"):
            await db.models.register("clf", other)
        raw = torch_registry_payload(other)
        raw["architecture"]["factory"] = "no_such_package_qdb:build"
        with pytest.raises(DataValidationError, match="cannot import module 'no_such_package_qdb'"):
            await db.models.register("clf", raw["parameters"], architecture=raw["architecture"])
        raw["architecture"]["factory"] = HYBRID
        raw["architecture"]["frozen"] = ["encoder"]
        with pytest.raises(DataValidationError, match="frozen name 'encoder'"):
            await db.models.register("clf", raw["parameters"], architecture=raw["architecture"])
        assert await db.models.list() == []
        async with db.registry.session() as session:
            assert (await session.scalars(select(ModelVersionRow.id))).all() == []


async def test_loading_what_is_not_a_buildable_torch_model(
    database_url: str, trained: torch.nn.Module
) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        good = await db.models.register("clf", TorchModel(trained))
        bare = await db.models.register("weights", np.ones(3))
        quantum = await db.models.register("qnn", QuantumModel(2, 1))
    with pytest.raises(SerializationError, match="bare parameters"):
        bare.build()
    with pytest.raises(SerializationError, match=r"kind 'quantum_ml\.QuantumModel'.*from_registry"):
        quantum.build()
    with pytest.raises(ModelError, match=r"kind 'quantum_ml\.QuantumModel', not 'torch'"):
        load_torch_model(quantum)
    with pytest.raises(ModelError, match="expected a quantum_db ModelVersion"):
        load_torch_model(trained)  # type: ignore[arg-type]
    # The same stored arrays, described by an architecture the code no longer fits:
    moved = dataclasses.replace(
        good, architecture={**good.architecture, "factory": "no_such_package_qdb:build"}
    )
    with pytest.raises(ModelError, match="cannot import module 'no_such_package_qdb'"):
        load_torch_model(moved)
    with pytest.raises(SerializationError, match="cannot import module"):
        moved.build()
    grown = dataclasses.replace(
        good, architecture={**good.architecture, "kwargs": {**HYBRID_KWARGS, "n_qubits": 4}}
    )
    with pytest.raises(ModelError, match=r"'0\.weight' is stored as torch.float32 \(3, 3\)"):
        load_torch_model(grown)
    fewer = dataclasses.replace(
        good, parameters={k: v for k, v in good.parameters.items() if k != "2.bias"}
    )
    with pytest.raises(ModelError, match="are not the state keys"):
        load_torch_model(fewer)
    retyped = dataclasses.replace(
        good, parameters={**good.parameters, "2.bias": good.parameters["2.bias"].astype(np.float64)}
    )
    with pytest.raises(ModelError, match=r"'2\.bias' is stored as float64"):
        load_torch_model(retyped)
    assert_bitwise_equal(state_arrays(load_torch_model(good)), state_arrays(trained))
