"""The project as a newcomer meets it: layout, README commands, CI, layering, public API."""

from __future__ import annotations

import ast
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


def _pip_installs(command: str) -> list[str]:
    """The ``pip install`` steps of a shell command line, in order."""
    steps = [step.strip() for step in command.split("&&")]
    return [step for step in steps if re.match(r"python3? -m pip install ", step)]


def _without_dev_extra(step: str) -> str:
    """``pip install -e ".[all,dev]"`` as the image runs it: the dev tools left out."""

    def drop(match: re.Match[str]) -> str:
        extras = [extra for extra in match.group(1).split(",") if extra.strip() != "dev"]
        return f".[{','.join(extras)}]" if extras else "."

    return re.sub(r"\.\[([^\]]*)\]", drop, step)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_installs_like_the_readme() -> None:
    runs = [args for keyword, args in _dockerfile_instructions() if keyword == "RUN"]
    install = readme_commands()[0].rsplit(" && ", 1)[0]
    assert install in runs


def test_dockerfile_install_steps_are_the_ci_steps() -> None:
    ci_line = next(
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if "pip install" in line and not line.lstrip().startswith("#")
    )
    ci_steps = _pip_installs(ci_line)
    assert ci_steps[0] == "python3 -m pip install torch==2.13.0", ci_steps
    docker_steps = [
        step
        for keyword, args in _dockerfile_instructions()
        if keyword == "RUN"
        for step in _pip_installs(args)
    ]
    # Same steps, same order, same pins: only the dev extra (test tools) stays out.
    assert docker_steps == [_without_dev_extra(step) for step in ci_steps]


def test_dockerfile_runs_unprivileged_with_a_data_volume_and_a_healthcheck() -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # Everything after the last USER runs as that user: the install must come before it.
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:], "no RUN after switching to the service user"
    assert "CMD" in keywords[last_user:]
    setup = " ".join(args for keyword, args in instructions[:last_user] if keyword == "RUN")
    assert re.search(rf"useradd .*\b{user}\b", setup), setup
    assert re.search(rf"chown {user}(:\S+)? /data\b", setup), "/data must belong to the user"
    volume = keywords.index("VOLUME")
    assert instructions[volume][1] in ('["/data"]', "/data")
    # A named volume copies the mount point's ownership from the image: chown before VOLUME.
    chown = next(i for i, (k, a) in enumerate(instructions) if k == "RUN" and "chown" in a)
    assert chown < volume
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert re.search(r"QDB_DATABASE_URL=sqlite\+aiosqlite:////data/\S+\.sqlite", env), env
    healthcheck = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    assert re.search(r'CMD \["qdb", "health"\]|CMD qdb health', healthcheck[0]), healthcheck


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
    assert "model 'moons-classifier' v1" in out.stdout
    assert (tmp_path / "quantum_db.sqlite").exists()


def test_qdb_tour_rejects_bad_sizes() -> None:
    from quantum_ml.cli import main

    assert main(["tour", "--qubits", "40"]) == 2


def test_examples_run() -> None:
    for script in sorted((ROOT / "examples").glob("*.py")):
        subprocess.run([sys.executable, str(script)], capture_output=True, check=True, cwd=ROOT)
