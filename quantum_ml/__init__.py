"""How to learn: encoders, layers and models, gradients, optimizers, the trainer, the CLI.

``quantum_ml`` may import ``backends`` and ``quantum_db``. ``TorchQuantumLayer`` (the
PyTorch bridge in ``quantum_ml.torch_layer``) is exported lazily: ``import quantum_ml``
does not import torch, so the rest works without it, and the first use of the name
imports the module (which says how to install torch when it is missing).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .contracts import CONTRACT_KEYS, check_encoding, contract_differences
from .encoders import (
    EncoderKind,
    QuantumDataEncoder,
    ScalingKind,
    amplitude_state,
    state_preparation_circuit,
)
from .errors import (
    AlertRuleError,
    CommandLineError,
    DashboardError,
    DataOutOfBoundsError,
    DiscriminatorError,
    DistributionError,
    EncodingError,
    EncodingMismatchError,
    ExportError,
    ExportUnreachableError,
    GANConfigError,
    GANError,
    GeneratorError,
    GradientError,
    GradientMethodError,
    GridError,
    HPOError,
    LearningError,
    ModelError,
    ModelInputError,
    MonitorError,
    MonitoringError,
    NoTrainableParametersError,
    OptimizerError,
    QuantumDBError,
    QuantumMetricError,
    ResumeMismatchError,
    TorchLayerError,
    TrainingError,
    UIError,
    UnknownComponentError,
    UnknownMetricError,
)
from .gradients import (
    EvaluationPlan,
    GradientMethod,
    QuantumGradientComputer,
    ShiftRule,
    shift_rule,
    supports_adjoint,
)
from .hpo import (
    METRICS,
    MODEL_HYPERPARAMETERS,
    OPTUNA_SCHEMA,
    PRUNERS,
    SAMPLERS,
    TRAINING_HYPERPARAMETERS,
    Choice,
    FloatRange,
    HPOResult,
    IntRange,
    OptunaPruning,
    QuantumHPOSearch,
    SearchSpace,
    StudyReport,
    StudySpec,
    Trial,
    WorkerReport,
    budget_name,
    create_study,
    list_studies,
    load_spec,
    optuna_url,
    run_worker,
    study_report,
    trial_run_id,
)
from .models import QuantumModel, entangling_pairs
from .optimizers import SGD, SPSA, Adam, Optimizer, optimizer_from_state
from .trainer import History, QuantumTrainer, TrainingConfig
from .training import (
    FORCE_PROGRESS_ENV,
    Callback,
    EarlyStopping,
    LambdaCallback,
    ManagedBackend,
    ProgressBar,
    ReduceLROnPlateau,
    StepCallback,
    TorchLRScheduler,
    TrainingContext,
    TrainingState,
    loss_and_grad,
    request_key,
)

if TYPE_CHECKING:
    from .hybrid import hybrid_classifier
    from .torch_layer import EvaluationRoute, TorchQuantumLayer, route_evaluations
    from .torch_models import (
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

__all__ = [
    "CONTRACT_KEYS",
    "FORCE_PROGRESS_ENV",
    "METRICS",
    "MODEL_HYPERPARAMETERS",
    "OPTUNA_SCHEMA",
    "PRUNERS",
    "SAMPLERS",
    "SGD",
    "SPSA",
    "TRAINING_HYPERPARAMETERS",
    "Adam",
    "AlertRuleError",
    "Callback",
    "Choice",
    "CommandLineError",
    "DashboardError",
    "DataOutOfBoundsError",
    "DiscriminatorError",
    "DistributionError",
    "EarlyStopping",
    "EncoderKind",
    "EncodingError",
    "EncodingMismatchError",
    "EvaluationPlan",
    "EvaluationRoute",
    "ExportError",
    "ExportUnreachableError",
    "FloatRange",
    "GANConfigError",
    "GANError",
    "GeneratorError",
    "GradientError",
    "GradientMethod",
    "GradientMethodError",
    "GridError",
    "HPOError",
    "HPOResult",
    "History",
    "IntRange",
    "LambdaCallback",
    "LearningError",
    "ManagedBackend",
    "ModelError",
    "ModelInputError",
    "MonitorError",
    "MonitoringError",
    "NoTrainableParametersError",
    "Optimizer",
    "OptimizerError",
    "OptunaPruning",
    "ProgressBar",
    "QuantumDBError",
    "QuantumDataEncoder",
    "QuantumGradientComputer",
    "QuantumHPOSearch",
    "QuantumMetricError",
    "QuantumModel",
    "QuantumTrainer",
    "ReduceLROnPlateau",
    "ResumeMismatchError",
    "ScalingKind",
    "SearchSpace",
    "ShiftRule",
    "StepCallback",
    "StudyReport",
    "StudySpec",
    "TorchLRScheduler",
    "TorchLayerError",
    "TorchModel",
    "TorchModelSpec",
    "TorchQuantumLayer",
    "TrainingConfig",
    "TrainingContext",
    "TrainingError",
    "TrainingState",
    "Trial",
    "UIError",
    "UnknownComponentError",
    "UnknownMetricError",
    "WorkerReport",
    "amplitude_state",
    "budget_name",
    "check_encoding",
    "contract_differences",
    "create_study",
    "entangling_pairs",
    "freeze",
    "frozen_names",
    "hybrid_classifier",
    "list_studies",
    "load_spec",
    "load_torch_model",
    "loss_and_grad",
    "optimizer_from_state",
    "optuna_url",
    "request_key",
    "route_evaluations",
    "run_worker",
    "shift_rule",
    "spec_of",
    "state_preparation_circuit",
    "study_report",
    "supports_adjoint",
    "torch_factory",
    "torch_registry_payload",
    "trial_run_id",
    "unfreeze",
    "with_spec",
]

#: Exported names whose modules are imported on first use (torch is an optional extra).
_LAZY: dict[str, str] = {
    "EvaluationRoute": ".torch_layer",
    "TorchQuantumLayer": ".torch_layer",
    "route_evaluations": ".torch_layer",
    "hybrid_classifier": ".hybrid",
    "TorchModel": ".torch_models",
    "TorchModelSpec": ".torch_models",
    "torch_factory": ".torch_models",
    "with_spec": ".torch_models",
    "spec_of": ".torch_models",
    "torch_registry_payload": ".torch_models",
    "load_torch_model": ".torch_models",
    "freeze": ".torch_models",
    "unfreeze": ".torch_models",
    "frozen_names": ".torch_models",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
