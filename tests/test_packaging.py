"""The package as a user installs it: a complete wheel, declared imports, install hints."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import site
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backends", "quantum_db", "quantum_ml")
MIGRATIONS = ROOT / "quantum_db" / "migrations"

#: Each optional SDK, the extra that provides it, and so the hint its absence must give.
SDK_EXTRAS = {
    "torch": "torch",
    "qiskit": "qiskit",
    "qiskit_aer": "qiskit",
    "cirq": "cirq",
    "sympy": "cirq",
    "qiskit_ionq": "ionq",
    "cirq_ionq": "ionq",
    "requests": "ionq",
    "urllib3": "ionq",
    "pinecone": "pinecone",
    "asyncpg": "postgres",
    "plotly": "dashboard",
    "matplotlib": "dashboard",
    "starlette": "dashboard",
    "uvicorn": "dashboard",
    "mlflow": "mlflow",
    "pyarrow": "parquet",
    "pynvml": "gpu",
}


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that could point Python or the package elsewhere."""
    prefixes = ("PYTHON", "QDB_", "IONQ_", "PINECONE_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return {**env, **extra}


def _run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a set-up step; its output is the failure message when it fails."""
    out = subprocess.run(command, capture_output=True, text=True, env=_clean_env(), timeout=timeout)
    assert out.returncode == 0, f"{command}: {out.stdout}{out.stderr}"
    return out


# --------------------------------------------------------------------------- the wheel
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout as a clean clone has it.

    The copy keeps the top-level ``migrations`` link (``symlinks=True``) so that the build
    meets the layout a clone has, and the build's ``build/`` and ``*.egg-info`` land in
    the copy, not in the working tree. ``--no-build-isolation`` builds with the installed
    setuptools (in the dev extra) instead of downloading one.
    """
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist"),
    )
    assert (source / "migrations").is_symlink()
    out = base / "dist"
    _run(
        [
            *(sys.executable, "-m", "pip", "--isolated", "wheel", "--quiet"),
            *("--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(out)),
            str(source),
        ],
        timeout=240,
    )
    (built,) = out.glob("quantum_db-*.whl")
    return built


def _source_files(folder: Path) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_wheel_holds_every_module_the_migrations_and_the_type_markers(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = _source_files(MIGRATIONS)
    # The scripts Alembic needs, named so that an emptied folder cannot pass.
    assert {
        "quantum_db/migrations/env.py",
        "quantum_db/migrations/script.py.mako",
        "quantum_db/migrations/README.md",
    } <= migrations
    assert any(re.fullmatch(r"quantum_db/migrations/versions/0001_\w+\.py", n) for n in names)
    assert migrations <= names, sorted(migrations - names)
    for package in PACKAGES:
        modules = {n for n in _source_files(ROOT / package) if n.endswith(".py")}
        assert modules <= names, sorted(modules - names)
        assert f"{package}/py.typed" in names
    # Nothing outside the three packages: not the link, not the tests.
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("quantum_db-")}
    assert tops == set(PACKAGES), tops


def test_wheel_metadata_declares_the_command_and_the_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (info,) = {n.split("/", 1)[0] for n in archive.namelist() if ".dist-info/" in n}
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert re.search(r"^qdb = quantum_ml\.cli:main$", entry_points, flags=re.M)
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.M)
    core = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in requires if ";" not in r}
    assert {"numpy", "sqlalchemy", "aiosqlite", "alembic", "tenacity", "tqdm"} <= core, core


def _site_packages(python: Path) -> Path:
    out = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    return Path(out.stdout.strip())


def _host_dependency_dirs() -> list[str]:
    """The folders this interpreter finds its installed distributions in."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    # Never the checkout itself (a ./.venv inside it is fine: that is not the source tree).
    return [d for d in dirs if Path(d).resolve() != ROOT]


def _head_revision() -> str:
    """The one revision of quantum_db/migrations/versions that no other revision follows."""
    revisions: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        values: dict[str, str | None] = {}
        for node in ast.parse(path.read_text()).body:
            target: ast.expr | None = None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            value = getattr(node, "value", None)
            names = ("revision", "down_revision")
            if isinstance(target, ast.Name) and target.id in names and value is not None:
                values[target.id] = ast.literal_eval(value)
        revision = values["revision"]
        assert revision is not None, path
        revisions[revision] = values.get("down_revision")
    (head,) = set(revisions) - set(revisions.values())
    return head


@pytest.fixture
def wheel_venv(wheel: Path, tmp_path: Path) -> Path:
    """A fresh virtualenv holding the wheel, and the dependencies without the checkout.

    The venv is made without system site-packages and gets the wheel with ``--no-deps``
    (pip's ``--python`` installs into it without pip inside). The dependencies are this
    interpreter's own installed distributions, so nothing is downloaded: the venv gets a
    ``.pth`` naming those folders. A folder named in a ``.pth`` is only appended to
    ``sys.path``; the ``.pth`` files inside it are not run, so the editable install's
    import hook (``__editable__*.pth``) never loads, and the venv's own site-packages,
    which holds the wheel, comes first. The test then checks where everything imports from.
    """
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run(
        [
            *(sys.executable, "-m", "pip", "--isolated", "--python", str(python)),
            *("install", "--quiet", "--no-deps", "--no-index", str(wheel)),
        ],
        timeout=240,
    )
    purelib = _site_packages(python)
    (purelib / "host-dependencies.pth").write_text("\n".join(_host_dependency_dirs()) + "\n")
    return venv


_PROBE = """
import importlib.metadata, importlib.resources, json, sys
import backends, quantum_db, quantum_ml
dist = importlib.metadata.distribution("quantum-db")
print(json.dumps({
    "modules": [m.__file__ for m in (backends, quantum_db, quantum_ml)],
    "dist": str(dist.locate_file("")),
    "migrations": str(importlib.resources.files("quantum_db") / "migrations"),
    "finders": [repr(f) for f in sys.meta_path],  # setuptools' editable hook is a class
    "hooks": [name for name in sys.modules if name.startswith("__editable__")],
    "path": sys.path,
}))
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_qdb_init_and_demo_without_the_source_tree(
    wheel_venv: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = wheel_venv / "bin"
    env = _clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")

    probe = subprocess.run(
        [str(bin_dir / "python"), "-c", _PROBE],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    where = json.loads(probe.stdout)
    venv = wheel_venv.resolve()
    for module in where["modules"]:
        assert Path(module).resolve().is_relative_to(venv), where
    assert Path(where["dist"]).resolve().is_relative_to(venv), where
    migrations = Path(where["migrations"])
    assert migrations.resolve().is_relative_to(venv) and (migrations / "env.py").is_file()
    assert not any("__editable__" in finder for finder in where["finders"]), where
    assert not where["hooks"], where
    assert not any(Path(p).resolve() == ROOT for p in where["path"] if p), where

    def qdb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(bin_dir / "qdb"), *args],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=240,
        )

    database = work / "quantum_db.sqlite"
    # The image's HEALTHCHECK: unhealthy (exit 2, one line) before a database exists, and
    # asking creates none.
    health = qdb("health")
    assert health.returncode == 2, health.stdout + health.stderr
    assert "Traceback" not in health.stderr
    assert not database.exists()

    init = qdb("init")
    assert init.returncode == 0, init.stdout + init.stderr
    with sqlite3.connect(database) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == _head_revision()
    health = qdb("health")
    assert health.returncode == 0, health.stdout + health.stderr

    demo = qdb("demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    accuracy = re.search(r"test accuracy: (\S+)", demo.stdout)
    assert accuracy, demo.stdout
    assert float(accuracy.group(1)) >= 0.9
    assert "Traceback" not in demo.stderr
    # What the demo kept, read from the file rather than from its wording.
    with sqlite3.connect(database) as connection:
        versions = connection.execute(
            "SELECT count(*) FROM model_versions JOIN models ON models.id = model_id "
            "WHERE models.name = 'moons-classifier'"
        ).fetchone()[0]
        datasets = connection.execute("SELECT count(*) FROM datasets").fetchone()[0]
    assert versions == 1
    assert datasets >= 1


# --------------------------------------------------------------------------- declared imports
def _requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return _normalize(name.group(0))


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core distributions, extra -> distributions), self-references resolved."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = _normalize(project["name"])
    core = {_requirement_name(r) for r in project["dependencies"]}
    raw: dict[str, list[str]] = project["optional-dependencies"]

    def resolve(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        names: set[str] = set()
        for requirement in raw[extra]:
            if _requirement_name(requirement) == own:
                inner = re.search(r"\[([^\]]+)\]", requirement)
                assert inner, requirement
                for other in inner.group(1).split(","):
                    if other.strip() not in seen:
                        names |= resolve(other.strip(), seen | {extra})
            else:
                names.add(_requirement_name(requirement))
        return names

    return core, {extra: resolve(extra) for extra in raw}


def _imports(tree: ast.AST) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, guarded) for each absolute import.

    Guarded: inside a function, under ``if TYPE_CHECKING:``, or in a ``try`` that handles
    ImportError, i.e. an import that cannot break ``import package`` without its SDK.
    """

    def handles_import_error(node: ast.Try) -> bool:
        names = set()
        for handler in node.handlers:
            types = handler.type
            elts = types.elts if isinstance(types, ast.Tuple) else [types]
            names |= {e.id for e in elts if isinstance(e, ast.Name)}
        return bool(names & {"ImportError", "ModuleNotFoundError"})

    def visit(node: ast.AST, guarded: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = (
                guarded
                or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
                or (isinstance(child, ast.Try) and handles_import_error(child))
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name.split(".")[0], child.lineno, inner
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.split(".")[0], child.lineno, inner
            yield from visit(child, inner)

    yield from visit(tree, False)


def test_every_third_party_import_is_declared() -> None:
    core, extras = _declared()
    providers = importlib.metadata.packages_distributions()
    problems: list[str] = []
    seen_optional: set[str] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT)
            for module, line, guarded in _imports(ast.parse(path.read_text())):
                if module in sys.stdlib_module_names or module in (*PACKAGES, "__future__"):
                    continue
                dists = {_normalize(d) for d in providers.get(module, [])}
                if not dists:
                    problems.append(f"{where}:{line}: {module} is not installed by any extra")
                    continue
                if dists & core:
                    continue
                if not guarded:
                    problems.append(
                        f"{where}:{line}: {module} ({', '.join(sorted(dists))}) is imported "
                        "at module level but is not in [project].dependencies"
                    )
                elif module not in SDK_EXTRAS:
                    problems.append(
                        f"{where}:{line}: {module} is imported lazily but is neither a core "
                        "dependency nor an SDK of an extra (SDK_EXTRAS)"
                    )
                elif not dists & extras[SDK_EXTRAS[module]]:
                    problems.append(
                        f"{where}:{line}: {module} is not declared in the "
                        f"[{SDK_EXTRAS[module]}] extra"
                    )
                else:
                    seen_optional.add(module)
    assert not problems, "\n".join(problems)
    # The table above is not a list of wishes: each SDK is imported, or driven by a dialect.
    assert set(SDK_EXTRAS) - seen_optional == {"asyncpg"}, set(SDK_EXTRAS) - seen_optional
    assert "asyncpg" in extras["postgres"]
    assert set(extras["all"]) >= set().union(*(extras[e] for e in set(SDK_EXTRAS.values())))


# --------------------------------------------------------------------------- install hints
_HIDE = """
import sys
# What an environment without these SDKs looks like to `import`: ModuleNotFoundError,
# and importlib.util.find_spec() answering None.
for _name in {hidden!r}:
    sys.modules[_name] = None
from backends.errors import MissingDependencyError
{setup}
try:
{body}
except MissingDependencyError as exc:
    print("MissingDependencyError:", exc)
else:
    print("no error")
"""

_CASES = {
    "torch-layer": (("torch",), "", "import quantum_ml.torch_layer"),
    "torch-layer-class": (
        ("torch",),
        "import quantum_ml, quantum_db  # everything but the bridge works without torch",
        "from quantum_ml.torch_layer import TorchQuantumLayer",
    ),
    "torch-hybrid": (
        ("torch",),
        "import quantum_ml  # the trainer works for QuantumModels without torch",
        "from quantum_ml import hybrid_classifier",
    ),
    "torch-trainer": (("torch",), "", "import quantum_ml.training.torch_task"),
    "torch-loader": (
        ("torch",),
        "from quantum_db.torch_data import torch_loader",
        "torch_loader(None)  # the import comes before any use of the loader",
    ),
    "qiskit-backend": (("qiskit",), "import backends", "backends.QiskitBackend()"),
    "qiskit-aer-backend": (("qiskit_aer",), "import backends", "backends.QiskitBackend()"),
    "to-qiskit": (("qiskit",), "import backends", "backends.Circuit(1).h(0).to_qiskit()"),
    "to-cirq": (("cirq",), "import backends", "backends.Circuit(1).h(0).to_cirq()"),
    "to-cirq-sympy": (("sympy",), "import backends", "backends.Circuit(1).h(0).to_cirq()"),
    "ionq-qiskit": (
        ("qiskit_ionq",),
        "from backends.ionq import IonQBackend",
        "IonQBackend('simulator', driver='qiskit', api_key='test-key')",
    ),
    "ionq-cirq": (
        ("cirq_ionq",),
        "from backends.ionq import IonQBackend",
        "IonQBackend('simulator', driver='cirq', api_key='test-key')",
    ),
    "pinecone-store": (
        ("pinecone",),
        "import asyncio\nfrom quantum_db.vectorstores.pinecone import PineconeVectorStore",
        "asyncio.run(PineconeVectorStore().open())  # key and host from the environment",
    ),
    "pinecone-database": (
        ("pinecone",),
        "import asyncio\nfrom quantum_db import QuantumDatabase\n"
        "async def connect():\n"
        "    async with QuantumDatabase('sqlite+aiosqlite:///db.sqlite', vector_store='pinecone')"
        ".connect():\n"
        "        pass",
        "asyncio.run(connect())",
    ),
    "asyncpg": (
        ("asyncpg",),
        "import asyncio\nfrom quantum_db import QuantumDatabase\n"
        "async def connect(url):\n"
        "    async with QuantumDatabase(url).connect():\n"
        "        pass",
        "asyncio.run(connect('postgresql+asyncpg://postgres@127.0.0.1:5432/test'))",
    ),
    "asyncpg-standard-url": (
        ("asyncpg",),
        "import asyncio\nfrom quantum_db import QuantumDatabase\n"
        "async def connect(url):\n"
        "    async with QuantumDatabase(url).connect():\n"
        "        pass",
        "asyncio.run(connect('postgresql://postgres:s3cret@127.0.0.1:5432/test'))",
    ),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_a_missing_sdk_raises_missing_dependency_error_with_the_install_hint(
    case: str, tmp_path: Path
) -> None:
    hidden, setup, body = _CASES[case]
    extra = SDK_EXTRAS[hidden[0]]
    code = _HIDE.format(hidden=hidden, setup=setup, body=textwrap.indent(body, "    "))
    # Credentials and an index point at nothing: the SDK check must come first.
    env = _clean_env(PINECONE_API_KEY="pc-test-key", QDB_PINECONE_INDEX_HOST="http://127.0.0.1:9")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("MissingDependencyError:"), out.stdout
    assert f"pip install 'quantum-db[{extra}]'" in out.stdout, out.stdout
    assert "pc-test-key" not in out.stdout + out.stderr
    assert "s3cret" not in out.stdout + out.stderr


def test_the_cli_says_which_extra_a_url_needs_in_one_line(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['asyncpg'] = None\n"
        "from quantum_ml.cli import main\n"
        "sys.exit(main(['init', '--url', 'postgresql://postgres:s3cret@127.0.0.1:5432/test']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_clean_env(), "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "pip install 'quantum-db[postgres]'" in lines[0]
    assert "s3cret" not in out.stdout + out.stderr
