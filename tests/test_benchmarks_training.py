"""The training benchmark at a tiny size: its correctness checks only, never its timings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from benchmarks import training


@pytest.mark.slow
def test_tiny_run_has_equal_losses_for_every_contender(tmp_path: Path) -> None:
    output = tmp_path / "training.md"
    argv = ["--samples", "32", "--repeats", "1", "--trainer", "--output", str(output)]
    assert training.main(argv) == 0  # exits 1 when any step's losses differ by > 1e-6
    text = output.read_text()
    for name in ("TorchQuantumLayer", "QuantumTrainer.fit", "lightning.qubit", "default.qubit"):
        assert name in text
    found = re.search(r"max \|loss difference\| over all 2 steps of every run: (\S+)", text)
    assert found is not None
    assert float(found.group(1)) < 1e-12  # the same float64 arithmetic, up to rounding
    assert torch.get_default_dtype() == torch.float32  # restored after the run


def test_pennylane_circuits_equal_quantum_db_circuit() -> None:
    for device, method in (("lightning.qubit", "adjoint"), ("default.qubit", "backprop")):
        with training.float64_default():
            assert training.check_circuits(device, method) < 1e-12


def _contender(name: str, runs: list[list[float]]) -> training.Contender:
    contender = training.Contender(name, name, torch.nn.Linear(1, 1), lambda _: (0.0, []))
    contender.losses = runs
    return contender


def test_compare_losses_finds_the_largest_difference_of_any_run() -> None:
    reference = _contender("a", [[0.7, 0.6, 0.5]])
    close = _contender("b", [[0.7, 0.6, 0.5], [0.7, 0.6 + 3e-7, 0.5]])
    assert training.compare_losses([reference, close]) == pytest.approx(3e-7, rel=1e-6)
    off = _contender("c", [[0.7, 0.6, 0.5 + 2e-6]])
    assert training.compare_losses([reference, close, off]) > training.TOLERANCE
    short = _contender("d", [[0.7, 0.6]])
    with pytest.raises(training.LossMismatch, match="took 2 steps"):
        training.compare_losses([reference, short])
