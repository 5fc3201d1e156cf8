"""The encoding contract check: stored datasets' contracts against the model's encoder.

The contracts are real: datasets stored in a real database (SQLite file and PostgreSQL)
and read back through a loader, a model's contract from ``QuantumDataEncoder.fit`` kept in
the model registry. The expected differences are worked out by hand from the data.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from quantum_db import QuantumDatabase
from quantum_ml.contracts import CONTRACT_KEYS, check_encoding, contract_differences
from quantum_ml.encoders import QuantumDataEncoder
from quantum_ml.errors import EncodingError, EncodingMismatchError, LearningError

ADVICE = "re-encode the data with the model's contract, or pass allow_encoding_mismatch=True"


def features(n: int = 60, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Four features on different scales (ranges about 4, 40, 0.4, 4000) and 3 classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    data = (rng.normal(size=(n, 4)) + labels[:, None]) * np.array([1.0, 10.0, 0.1, 1000.0])
    return data, labels


@dataclass
class Stored:
    db: QuantumDatabase
    data: np.ndarray
    labels: np.ndarray
    minmax: dict[str, Any]  # the dataset stored with encoding={"scaling": "minmax"}
    standard: dict[str, Any]  # the same samples stored with encoding={"scaling": "standard"}


async def stored_contract(db: QuantumDatabase, name: str) -> dict[str, Any]:
    """The contract as a trainer meets it: ``loader.info.encoding`` after loading."""
    loader = await db.create_ml_data_loader(name, batch_size=8, seed=3).load()
    return loader.info.encoding


@pytest.fixture
async def stored(database_url: str) -> AsyncIterator[Stored]:
    data, labels = features()
    async with QuantumDatabase(database_url).connect() as db:
        await db.store_training_data("minmax", data, labels, encoding={"scaling": "minmax"})
        await db.store_training_data("standard", data, labels, encoding={"scaling": "standard"})
        yield Stored(
            db,
            data,
            labels,
            await stored_contract(db, "minmax"),
            await stored_contract(db, "standard"),
        )


def trained_contract(data: np.ndarray, scaling: Any = "minmax", **kwargs: Any) -> dict[str, Any]:
    return QuantumDataEncoder("angle", scaling, **kwargs).fit(data).to_contract()


# ---------------------------------------------------------------- matches and mismatches
async def test_model_trained_on_minmax_refuses_standard_scaled_data(stored: Stored) -> None:
    model = trained_contract(stored.data, "minmax")
    before = copy.deepcopy((model, stored.standard))
    with pytest.raises(EncodingMismatchError) as caught:
        check_encoding(model, stored.standard)
    message = str(caught.value)
    assert "the data's encoding contract differs from the model's" in message
    assert "scaling: expected 'minmax', got 'standard'" in message
    assert ADVICE in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, LearningError)
    # The statistics are those of the same samples: scaling is the only difference.
    assert contract_differences(model, stored.standard) == [
        "scaling: expected 'minmax', got 'standard'"
    ]
    assert (model, stored.standard) == before  # the check changes neither contract


async def test_same_data_passes_even_at_zero_tolerance(stored: Stored) -> None:
    model = trained_contract(stored.data, "minmax")
    assert check_encoding(model, stored.minmax) == []
    # Stored (JSON in the registry) and read back, the statistics are bit for bit numpy's.
    assert contract_differences(model, stored.minmax, tolerance=0.0) == []
    assert check_encoding(trained_contract(stored.data, "standard"), stored.standard) == []


async def test_model_registered_with_its_contract(stored: Stored) -> None:
    """The registry keeps the model's contract; checked against both stored datasets."""
    # Fitted on the samples read back from the store (in the store's row order).
    read_back = (await stored.db.get_dataset("minmax")).data
    encoder = QuantumDataEncoder("angle", "minmax").fit(read_back)
    await stored.db.models.register("qnn", np.zeros(8), encoding=encoder.to_contract())
    version = await stored.db.models.get("qnn")
    assert version.encoding is not None
    assert check_encoding(version.encoding, stored.minmax) == []
    with pytest.raises(EncodingMismatchError, match="scaling: expected 'minmax'"):
        check_encoding(version.encoding, stored.standard, what="validation data")


async def test_feature_ranges_beyond_the_tolerance_raise_within_pass(stored: Stored) -> None:
    tolerance = 1e-3
    span = stored.data.max(axis=0) - stored.data.min(axis=0)
    assert span[0] > 1 and span[3] > 1000  # so the allowance is tolerance * span
    model = trained_contract(stored.data, "minmax")

    # Feature 0 shifted by 10x its allowance: min, max and mean move by that, std does not.
    far = stored.data.copy()
    far[:, 0] += 10 * tolerance * span[0]
    await stored.db.store_training_data("far", far, stored.labels)
    far_contract = await stored_contract(stored.db, "far")
    differences = contract_differences(model, far_contract, tolerance=tolerance)
    assert [line.split(":")[0] for line in differences] == [
        "feature_min",
        "feature_max",
        "feature_mean",
    ]
    assert all("1 of 4 features" in line and "feature 0:" in line for line in differences)
    with pytest.raises(EncodingMismatchError, match="feature_min: 1 of 4 features"):
        check_encoding(model, far_contract, tolerance=tolerance)
    # The same shift reads the same from either side.
    assert len(contract_differences(far_contract, model, tolerance=tolerance)) == 3

    # Feature 3 (range ~5000) shifted by a quarter of its allowance, over 1000x the bare
    # tolerance: it passes because the allowance scales with the range. Feature 2 (range
    # ~0.5) shifted by 0.9x the bare tolerance, above tolerance * range: it passes because
    # ranges below 1 count as 1.
    assert span[2] < 0.9
    near = stored.data.copy()
    near[:, 3] += 0.25 * tolerance * span[3]
    near[:, 2] += 0.9 * tolerance
    await stored.db.store_training_data("near", near, stored.labels)
    near_contract = await stored_contract(stored.db, "near")
    assert check_encoding(model, near_contract, tolerance=tolerance) == []
    # At the default tolerance (1e-6) the same shifts are far too large.
    strict = contract_differences(model, near_contract)
    assert [line.split(":")[0] for line in strict] == ["feature_min", "feature_max", "feature_mean"]
    assert all("2 of 4 features" in line for line in strict)
    assert "feature 2:" in strict[0] and "feature 3:" in strict[0]


async def test_qubit_count_differs(stored: Stored) -> None:
    # Amplitude encoding of 4 features needs 2 qubits; a dataset declaring 3 differs only there.
    model = QuantumDataEncoder("amplitude", "minmax").fit(stored.data).to_contract()
    assert model["n_qubits"] == 2
    await stored.db.store_training_data(
        "wide",
        stored.data,
        stored.labels,
        encoding={"encoder": "amplitude", "scaling": "minmax", "n_qubits": 3},
    )
    wide = await stored_contract(stored.db, "wide")
    assert contract_differences(model, wide) == ["n_qubits: expected 2, got 3"]
    with pytest.raises(EncodingMismatchError, match="n_qubits: expected 2, got 3"):
        check_encoding(model, wide)
    # The angle-encoded minmax dataset differs in encoder and qubits, not in statistics.
    assert contract_differences(model, stored.minmax) == [
        "encoder: expected 'amplitude', got 'angle'",
        "n_qubits: expected 2, got 4",
    ]


async def test_fewer_features_is_a_width_difference(stored: Stored) -> None:
    model = trained_contract(stored.data, "minmax")
    await stored.db.store_training_data("narrow", stored.data[:, :3], stored.labels)
    narrow = await stored_contract(stored.db, "narrow")
    # Per-feature statistics of different widths are not compared feature by feature.
    assert contract_differences(model, narrow) == [
        "n_qubits: expected 4, got 3",
        "feature width: expected 4 features, got 3",
    ]


async def test_allow_mismatch_warns_and_returns_the_differences(
    stored: Stored, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quantum_ml.contracts")
    model = trained_contract(stored.data, "minmax")
    assert check_encoding(model, stored.minmax, allow_mismatch=True) == []
    assert caplog.records == []  # nothing to warn about when they match

    differences = check_encoding(model, stored.standard, allow_mismatch=True, what="test data")
    assert differences == ["scaling: expected 'minmax', got 'standard'"]
    (record,) = caplog.records
    assert (record.name, record.levelno) == ("quantum_ml.contracts", logging.WARNING)
    message = record.getMessage()
    assert "the test data's encoding contract differs" in message
    assert "scaling: expected 'minmax', got 'standard'" in message
    assert "allow_encoding_mismatch=True" in message


async def test_missing_keys_are_differences(stored: Stored) -> None:
    model = trained_contract(stored.data, "minmax")
    partial = {k: v for k, v in stored.minmax.items() if k != "feature_std"}
    assert contract_differences(model, partial) == ["feature_std: missing from the actual contract"]
    bare_model = {k: v for k, v in model.items() if k not in ("scaling", "feature_std")}
    assert contract_differences(bare_model, partial) == [
        "scaling: missing from the expected contract",
        "feature_std: missing from both contracts",
    ]
    assert contract_differences({}, stored.minmax) == [
        f"{key}: missing from the expected contract" for key in CONTRACT_KEYS
    ]
    # Keys outside the contract's own are ignored.
    assert contract_differences({**model, "version": 2}, stored.minmax) == []


def test_no_contract_means_nothing_to_compare() -> None:
    contract = trained_contract(np.arange(6.0).reshape(3, 2))
    assert check_encoding(None, contract) == []
    assert check_encoding(contract, None) == []
    assert check_encoding(None, None) == []


# ---------------------------------------------------------------- bad inputs
GOOD = trained_contract(np.array([[0.0, 1.0], [2.0, 5.0], [1.0, 3.0]]))


def with_(key: str, value: Any) -> dict[str, Any]:
    return {**GOOD, key: value}


@pytest.mark.parametrize(
    ("contract", "match"),
    [
        (None, "must be a mapping, got NoneType"),
        ([("encoder", "angle")], "must be a mapping, got list"),
        ("angle", "must be a mapping, got str"),
        (with_("encoder", "basis"), "encoder must be one of"),
        (with_("scaling", "robust"), "scaling must be one of"),
        (with_("scaling", None), "scaling must be one of"),
        (with_("n_qubits", 0), "n_qubits must be a positive integer"),
        (with_("n_qubits", True), "n_qubits must be a positive integer"),
        (with_("n_qubits", "2"), "n_qubits must be a positive integer"),
        (with_("n_qubits", 2.0), "n_qubits must be a positive integer"),
        (with_("feature_min", 0.0), "feature_min must be a list of numbers, got float"),
        (with_("feature_min", "01"), "feature_min must be a list of numbers, got str"),
        (with_("feature_max", [2.0, "5"]), "feature_max must hold only numbers"),
        (with_("feature_max", [2.0, True]), "feature_max must hold only numbers"),
        (with_("feature_mean", [1.0, None]), "feature_mean must hold only numbers"),
        (with_("feature_std", [1.0, float("nan")]), "feature_std holds NaN or infinity"),
        (with_("feature_std", [float("inf"), 1.0]), "feature_std holds NaN or infinity"),
        (with_("feature_std", []), "feature_std is empty"),
        (with_("feature_std", [1.0, 2.0, 3.0]), r"different lengths \[2, 3\]"),
    ],
)
def test_bad_contracts_raise_encoding_error(contract: Any, match: str) -> None:
    with pytest.raises(EncodingError, match=match) as caught:
        contract_differences(GOOD, contract)
    assert "the actual" in str(caught.value)  # says which side is bad
    with pytest.raises(EncodingError, match=match) as caught:
        contract_differences(contract, GOOD)
    assert "the expected" in str(caught.value)
    if contract is not None:  # None on one side means "nothing to compare"
        with pytest.raises(EncodingError, match=match):
            check_encoding(GOOD, contract, allow_mismatch=True)


@pytest.mark.parametrize("tolerance", [-1e-6, float("nan"), float("inf"), True, "1e-6", None])
def test_bad_tolerance(tolerance: Any) -> None:
    with pytest.raises(EncodingError, match="tolerance must be a finite number >= 0"):
        contract_differences(GOOD, GOOD, tolerance=tolerance)
    with pytest.raises(EncodingError, match="tolerance must be a finite number >= 0"):
        check_encoding(GOOD, GOOD, tolerance=tolerance)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"allow_mismatch": "yes"}, "allow_mismatch must be True or False"),
        ({"allow_mismatch": 1}, "allow_mismatch must be True or False"),
        ({"what": ""}, "what must be a non-empty string"),
        ({"what": 3}, "what must be a non-empty string"),
    ],
)
def test_bad_check_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(EncodingError, match=match):
        check_encoding(GOOD, GOOD, **kwargs)
