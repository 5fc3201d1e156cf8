"""Hyperparameter search on Optuna, with any number of workers sharing one registry.

``space`` the search space, ``spec`` a study's settings (TOML for ``qdb hpo create``),
``storage`` where Optuna's tables live beside the registry, ``study`` creating a study and
running its trials, ``report`` reading what it found, ``search`` the Python entry point.
"""

from ..errors import HPOError
from .report import HPOResult, StudyReport, Trial, list_studies, study_report
from .search import QuantumHPOSearch
from .space import (
    MODEL_HYPERPARAMETERS,
    TRAINING_HYPERPARAMETERS,
    Choice,
    FloatRange,
    IntRange,
    SearchSpace,
)
from .spec import METRICS, PRUNERS, SAMPLERS, StudySpec
from .storage import OPTUNA_SCHEMA, optuna_url
from .study import (
    OptunaPruning,
    WorkerReport,
    budget_name,
    create_study,
    load_spec,
    run_worker,
    trial_run_id,
)

__all__ = [
    "METRICS",
    "MODEL_HYPERPARAMETERS",
    "OPTUNA_SCHEMA",
    "PRUNERS",
    "SAMPLERS",
    "TRAINING_HYPERPARAMETERS",
    "Choice",
    "FloatRange",
    "HPOError",
    "HPOResult",
    "IntRange",
    "OptunaPruning",
    "QuantumHPOSearch",
    "SearchSpace",
    "StudyReport",
    "StudySpec",
    "Trial",
    "WorkerReport",
    "budget_name",
    "create_study",
    "list_studies",
    "load_spec",
    "optuna_url",
    "run_worker",
    "study_report",
    "trial_run_id",
]
