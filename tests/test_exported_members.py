"""The public surface: each package's ``__all__`` is complete and its errors live in one place.

In the style of httpx's ``tests/test_exported_members.py``: what a package's ``__init__``
binds is what its ``__all__`` lists, every public name of its surface modules is
exported, and every exception class is exported from the package, defined in its
``errors`` module and drawn in that module's docstring tree. The SDK-facing exports are
lazy: importing the packages loads no SDK.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import backends
import quantum_db
import quantum_ml
from backends.errors import BackendError, QuantumDBError
from quantum_db.errors import DatabaseError
from quantum_ml.errors import LearningError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"backends": backends, "quantum_db": quantum_db, "quantum_ml": quantum_ml}
ROOTS: dict[str, type[QuantumDBError]] = {
    "backends": BackendError,
    "quantum_db": DatabaseError,
    "quantum_ml": LearningError,
}

#: The modules whose whole ``__all__`` a package re-exports. The others (the simulator's
#: kernels, the IonQ client wrappers, the registry, the CLI, ...) are used through their
#: own module path.
SURFACE = {
    "backends": [
        "accounting",
        "aer",
        "base",
        "circuit",
        "cost",
        "errors",
        "gates",
        "ionq",
        "manager",
        "observables",
        "parameters",
        "retry",
        "simulator",
        "templates",
    ],
    "quantum_db": [
        "accounting",
        "alerts",
        "checkpoints",
        "database",
        "datasets",
        "errors",
        "loader",
        "metrics",
        "models",
        "runs",
        "settings",
        "vectorstores",
    ],
    "quantum_ml": [
        "contracts",
        "encoders",
        "errors",
        "gradients",
        "hpo",
        "hybrid",
        "models",
        "optimizers",
        "torch_layer",
        "torch_models",
        "trainer",
        "training",
    ],
}
#: Names a surface module lists for its siblings, deliberately not part of the package API.
MODULE_ONLY = {
    "quantum_db.datasets.validate_name",
    "quantum_db.runs.ensure_run",
    "quantum_db.runs.validate_run_id",
    "quantum_db.settings.PINECONE_KEY_VARIABLES",
    "quantum_db.settings.environment_variables",
}
#: What ``from __future__ import annotations`` and the lazy-export machinery bind.
MACHINERY = {"annotations", "TYPE_CHECKING", "Any"}
#: Modules that import an SDK (or torch) when imported.
SDKS = ("qiskit", "qiskit_aer", "qiskit_ionq", "cirq", "cirq_ionq", "torch", "pinecone")


def all_modules(package: types.ModuleType) -> list[types.ModuleType]:
    names = [
        info.name
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        if ".migrations" not in info.name  # Alembic scripts, run by Alembic only
    ]
    return [package, *(importlib.import_module(name) for name in names)]


@pytest.mark.parametrize("name", list(PACKAGES))
def test_all_is_what_the_package_binds(name: str) -> None:
    package = PACKAGES[name]
    exported = package.__all__
    assert len(set(exported)) == len(exported), "a name is listed twice"
    bound = {
        member
        for member, value in vars(package).items()
        if not member.startswith("_")
        and member not in MACHINERY
        and not isinstance(value, types.ModuleType)
    }
    lazy = set(getattr(package, "_LAZY", {}))
    assert bound - set(exported) == set(), "bound in __init__ but not in __all__"
    assert set(exported) - bound - lazy == set(), "in __all__ but not bound in __init__"
    for member in exported:
        assert getattr(package, member) is not None
    assert set(exported) <= set(dir(package))


@pytest.mark.parametrize("name", list(PACKAGES))
def test_surface_modules_are_fully_exported(name: str) -> None:
    package = PACKAGES[name]
    for module_name in SURFACE[name]:
        module = importlib.import_module(f"{name}.{module_name}")
        for member in module.__all__:
            if f"{name}.{module_name}.{member}" in MODULE_ONLY:
                assert member not in package.__all__
                continue
            assert member in package.__all__, f"{module_name}.{member} is not exported"
            assert getattr(package, member) is getattr(module, member), member


@pytest.mark.parametrize("name", list(PACKAGES))
def test_every_exception_lives_in_the_errors_module(name: str) -> None:
    package = PACKAGES[name]
    errors = importlib.import_module(f"{name}.errors")
    tree = errors.__doc__ or ""
    found: dict[str, type[BaseException]] = {}
    for module in all_modules(package):
        for member, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.split(".")[0] == name
            ):
                if value.__name__.startswith("_"):
                    # A private marker (e.g. "retry this") must still be caught by a
                    # public class of the errors module.
                    assert value.__mro__[1].__module__ == f"{name}.errors", value
                    continue
                assert value.__module__ == f"{name}.errors", (
                    f"{value.__module__}.{value.__qualname__} (seen as {module.__name__}.{member})"
                    f" belongs in {name}/errors.py"
                )
                found[value.__name__] = value
    defined = {
        member: value
        for member, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert set(found) <= set(defined)
    for member, cls in defined.items():
        assert member in errors.__all__ and member in package.__all__, member
        assert getattr(package, member) is cls
        if cls is QuantumDBError:
            continue  # the root of all three, defined in backends.errors
        assert f" {member}" in tree, f"{member} is missing from the tree in {name}.errors"
        if issubclass(cls, Warning):
            assert not issubclass(cls, QuantumDBError)
        else:
            assert issubclass(cls, ROOTS[name]), f"{member} does not derive from its root"


def test_the_roots_hang_under_quantum_db_error() -> None:
    for root in ROOTS.values():
        assert root.__mro__[1] is QuantumDBError
    for package in PACKAGES.values():
        assert package.QuantumDBError is QuantumDBError


@pytest.mark.parametrize(
    ("old_path", "name", "errors_module"),
    [
        ("backends.manager", "UnknownBackendError", "backends.errors"),
        ("backends.ionq.driver", "RemoteCallError", "backends.errors"),
        ("quantum_db.vectorstores.pinecone", "PartialUpsertError", "quantum_db.errors"),
        ("quantum_db.vectorstores", "PartialUpsertError", "quantum_db.errors"),
        ("quantum_db.checkpoints", "CheckpointWarning", "quantum_db.errors"),
        ("quantum_ml.encoders", "EncodingError", "quantum_ml.errors"),
        ("quantum_ml.trainer", "TrainingError", "quantum_ml.errors"),
        ("quantum_ml.hpo", "HPOError", "quantum_ml.errors"),
        ("quantum_ml.torch_layer", "TorchLayerError", "quantum_ml.errors"),
        ("quantum_ml.gradients", "GradientError", "quantum_ml.errors"),
        ("quantum_ml.gradients", "GradientMethodError", "quantum_ml.errors"),
        ("quantum_ml.optimizers", "OptimizerError", "quantum_ml.errors"),
        ("quantum_ml.models", "ModelError", "quantum_ml.errors"),
    ],
)
def test_old_import_paths_still_work(old_path: str, name: str, errors_module: str) -> None:
    old = importlib.import_module(old_path)
    assert getattr(old, name) is getattr(importlib.import_module(errors_module), name)
    assert name in old.__all__


def test_bad_input_errors_are_value_errors_in_quantum_ml() -> None:
    from quantum_ml import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        # Roots, and what goes wrong around a run rather than with an input: a backend
        # that cannot compute, a folder or port or server that is not there.
        if cls in (
            errors.QuantumDBError,
            errors.LearningError,
            errors.GradientError,
            errors.MonitoringError,
            errors.DashboardError,
            errors.UIError,
            errors.ExportError,
            errors.ExportUnreachableError,
        ):
            assert not issubclass(cls, ValueError)
        else:
            assert issubclass(cls, ValueError), name


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys\n{code}\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(SDKS)!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_the_packages_loads_no_sdk() -> None:
    assert _loaded_after("import backends, quantum_db, quantum_ml") == []
    assert _loaded_after("import backends; assert 'pydantic' not in sys.modules") == []


def test_lazy_exports_resolve_without_loading_an_sdk() -> None:
    code = (
        "from backends import IonQBackend, QiskitBackend\n"
        "import backends.ionq, backends.aer\n"
        "assert IonQBackend is backends.ionq.IonQBackend\n"
        "assert QiskitBackend is backends.aer.QiskitBackend"
    )
    assert _loaded_after(code) == []
    code = (
        "import quantum_ml, quantum_ml.torch_layer\n"
        "assert quantum_ml.TorchQuantumLayer is quantum_ml.torch_layer.TorchQuantumLayer"
    )
    assert _loaded_after(code) == ["torch"]


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    for package in (backends, quantum_ml):
        with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
            _ = package.NoSuchThing
