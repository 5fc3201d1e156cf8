"""The project as a newcomer meets it: layout, README commands, CI, layering, public API."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backends", "quantum_db", "quantum_ml")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quickstart, flags=re.S)


def test_top_level_layout() -> None:
    for name in ("pyproject.toml", "README.md", "Dockerfile", ".ci/run", *PACKAGES):
        assert (ROOT / name).exists(), name
    for folder in ("migrations", "tests", "examples", "benchmarks"):
        assert (ROOT / folder).is_dir(), folder
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").exists(), f"{package} is not marked typed"


def test_readme_has_two_quickstart_commands_and_ci_runs_the_second() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    install_and_run, test = commands
    assert install_and_run.startswith("python3 -m pip install torch==2.13.0 && ")
    assert install_and_run.endswith("qdb demo")
    assert test.startswith("python3 -m pip install torch==2.13.0 && ")
    assert "pytest" in test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines, ".ci/run must run the README's test command verbatim"


def test_dockerfile_installs_like_the_readme() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    install = readme_commands()[0].rsplit(" && ", 1)[0]
    assert f"RUN {install}" in dockerfile


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("backends", {"quantum_db", "quantum_ml"}), ("quantum_db", {"quantum_ml"})],
)
def test_layers_import_one_way(package: str, forbidden: set[str]) -> None:
    for path in (ROOT / package).rglob("*.py"):
        bad = _imports(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_are_exported(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    public = {name for name in vars(module) if not name.startswith("_")}
    submodules = {name for name in public if type(getattr(module, name)).__name__ == "module"}
    assert public - submodules == exported
    for name in exported:
        assert hasattr(module, name)


def test_backends_imports_without_optional_sdks() -> None:
    code = (
        "import sys\n"
        "for m in ('qiskit', 'cirq', 'torch', 'sympy', 'pennylane'): sys.modules[m] = None\n"
        "import backends, asyncio\n"
        "async def go():\n"
        "    async with backends.SimulatorBackend() as s:\n"
        "        r = await s.run(backends.Circuit(1).h(0), observables=['X'])\n"
        "        print(round(float(r.expectations[0, 0]), 6))\n"
        "asyncio.run(go())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1.0"


def test_missing_sdk_error_names_the_install_command() -> None:
    code = (
        "import sys\n"
        "sys.modules['cirq'] = None\n"
        "import backends\n"
        "try:\n"
        "    backends.Circuit(1).h(0).to_cirq()\n"
        "except backends.MissingDependencyError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'quantum-db[cirq]'" in out.stdout


def test_qdb_tour_runs_and_checks_its_gradient() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "quantum_ml.cli", "tour", "--qubits", "4", "--layers", "2"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    match = re.search(r"max \|shift - finite difference\| = (\S+)", out.stdout)
    assert match, out.stdout
    assert float(match.group(1)) < 1e-6
    assert "GHZ state, 1000 shots" in out.stdout


def test_qdb_demo_trains_a_classifier_from_a_clean_directory(tmp_path: Path) -> None:
    """The main job: from an empty directory, a dataset, a trained model, >= 90% accuracy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDB_", "IONQ_"))}
    out = subprocess.run(
        [sys.executable, "-m", "quantum_ml.cli", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.search(r"test accuracy: (\S+)", out.stdout)
    assert match, out.stdout
    assert float(match.group(1)) >= 0.9
    assert "chose simulator" in out.stdout
    assert "registered model 'moons-classifier' v1" in out.stdout
    assert (tmp_path / "quantum_db.sqlite").exists()


def test_qdb_tour_rejects_bad_sizes() -> None:
    from quantum_ml.cli import main

    assert main(["tour", "--qubits", "40"]) == 2


def test_examples_run() -> None:
    for script in sorted((ROOT / "examples").glob("*.py")):
        subprocess.run([sys.executable, str(script)], capture_output=True, check=True, cwd=ROOT)
