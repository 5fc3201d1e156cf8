"""The exception hierarchy of the ``quantum_ml`` package.

Errors caused by bad input also derive from ``ValueError``, as in ``backends``.

    QuantumDBError                     root of every quantum-db error (from ``backends``)
    └── LearningError                  root of this package
        ├── EncodingError (ValueError)     data, a contract or settings an encoder cannot use
        ├── ModelError (ValueError)        a model that cannot be built, frozen or rebuilt
        ├── GradientError                  gradients of circuits cannot be computed
        │   └── GradientMethodError (ValueError)  unknown, or not supported by the backend
        ├── OptimizerError (ValueError)    bad optimizer settings, gradient shape or state
        ├── TrainingError (ValueError)     bad training settings, model, loader or checkpoint
        │   ├── UnknownComponentError      a loss, optimizer or scheduler name that does not exist
        │   ├── ModelInputError            a model whose input width differs from the data's
        │   ├── NoTrainableParametersError a model with nothing to train
        │   └── ResumeMismatchError        a run resumed with another architecture or config
        ├── EncodingMismatchError (ValueError)  data encoded otherwise than the model expects
        ├── HPOError (ValueError)          a search space or strategy the search cannot use
        ├── TorchLayerError (ValueError)   bad inputs, weights or settings of the torch layer
        ├── DistributionError (ValueError) probabilities or counts a metric cannot compare
        ├── GANError (ValueError)          root of the quantum GAN's errors
        │   ├── GANConfigError             a GANConfig setting out of range (shots 0, D:G 0)
        │   ├── GridError                  bounds empty, reversed or not finite; bad bits
        │   ├── GeneratorError             a generator's circuit, weights or shots
        │   ├── DataOutOfBoundsError       data outside the bounds (data_policy="refuse")
        │   ├── DiscriminatorError         a discriminator of the wrong width, or none
        │   └── MonitorError               a bad setting of a long-run monitor
        ├── CommandLineError (ValueError)  an option of a `qdb` command it cannot use
        └── MonitoringError                watching a run: metrics, alerts, dashboards, exports
            ├── QuantumMetricError (ValueError)  a state or subsystem a metric cannot measure
            ├── AlertRuleError (ValueError)      a bad rule, or one on a metric that does not exist
            ├── UnknownMetricError (LookupError, ValueError)  a key the run never logged
            ├── DashboardError                   a dashboard that cannot be written
            ├── UIError                          qdb ui cannot bind its host and port
            └── ExportError                      a run that cannot be exported
                └── ExportUnreachableError       the MLflow tracking server cannot be reached

Errors of the layers below pass through unchanged: a backend's ``BudgetExceededError``
or a registry's ``DatasetNotFoundError`` keeps its own type.
"""

from __future__ import annotations

from backends.errors import QuantumDBError

__all__ = [
    "AlertRuleError",
    "CommandLineError",
    "DashboardError",
    "DataOutOfBoundsError",
    "DiscriminatorError",
    "DistributionError",
    "EncodingError",
    "EncodingMismatchError",
    "ExportError",
    "ExportUnreachableError",
    "GANConfigError",
    "GANError",
    "GeneratorError",
    "GradientError",
    "GradientMethodError",
    "GridError",
    "HPOError",
    "LearningError",
    "ModelError",
    "ModelInputError",
    "MonitorError",
    "MonitoringError",
    "NoTrainableParametersError",
    "OptimizerError",
    "QuantumDBError",
    "QuantumMetricError",
    "ResumeMismatchError",
    "TorchLayerError",
    "TrainingError",
    "UIError",
    "UnknownComponentError",
    "UnknownMetricError",
]


class LearningError(QuantumDBError):
    """Root of the errors raised by the ``quantum_ml`` package."""


class EncodingError(LearningError, ValueError):
    """Data, a contract or settings that an encoder cannot use."""


class ModelError(LearningError, ValueError):
    """A model that cannot be built, frozen, or rebuilt as asked."""


class GradientError(LearningError):
    """Root of the errors raised while computing gradients of circuits."""


class GradientMethodError(GradientError, ValueError):
    """An unknown gradient method, or a method the backend or run mode cannot support."""


class OptimizerError(LearningError, ValueError):
    """Bad optimizer settings, a gradient of the wrong shape, or a state that does not fit."""


class TrainingError(LearningError, ValueError):
    """Bad training settings, or a model, loader or checkpoint the trainer cannot use."""


class UnknownComponentError(TrainingError):
    """A loss, optimizer or LR scheduler named that does not exist."""


class ModelInputError(TrainingError):
    """A model whose input width differs from the width of the dataset's samples."""


class NoTrainableParametersError(TrainingError):
    """A model with no parameter that requires a gradient: there is nothing to train."""


class ResumeMismatchError(TrainingError):
    """A run resumed with a model or settings that do not fit its checkpoints."""


class EncodingMismatchError(LearningError, ValueError):
    """Data whose encoding contract differs from the one the model was trained with."""


class HPOError(LearningError, ValueError):
    """A search space, strategy or setting the hyperparameter search cannot use."""


class TorchLayerError(LearningError, ValueError):
    """A bad argument to :class:`~quantum_ml.torch_layer.TorchQuantumLayer`."""


class GANError(LearningError, ValueError):
    """A quantum GAN given something it cannot train: the root of the QGAN errors."""


class GANConfigError(GANError):
    """A GANConfig setting out of range: a D:G ratio of 0, shots of 0, an unknown loss..."""


class GridError(GANError):
    """Grid bounds that are empty, reversed or not finite, or bits that do not fit."""


class GeneratorError(GANError):
    """A generator circuit, weights or shots a quantum generator cannot use."""


class DataOutOfBoundsError(GANError):
    """Training data outside the generator's bounds (``data_policy="refuse"``)."""


class DiscriminatorError(GANError):
    """A discriminator whose input width differs from the data's, or none where needed."""


class DistributionError(LearningError, ValueError):
    """Probabilities, counts or samples a distribution metric cannot compare."""


class MonitorError(GANError):
    """A bad setting of a long-run monitor: a patience of 0, reversed bounds..."""


class CommandLineError(LearningError, ValueError):
    """An option of a ``qdb`` command it cannot use (one line on stderr, exit status 2)."""


class MonitoringError(LearningError):
    """Watching a run went wrong: metrics, alerts, dashboards, exports."""


class QuantumMetricError(MonitoringError, ValueError):
    """A state, subsystem, gradient array or circuit a quantum metric cannot measure."""


class AlertRuleError(MonitoringError, ValueError):
    """A bad alert rule: an unknown comparison or severity, N < 1, or no such metric."""


class UnknownMetricError(MonitoringError, LookupError, ValueError):
    """A metric key the run never logged; the message lists the keys it has."""


class DashboardError(MonitoringError):
    """A dashboard or plot that cannot be written (an unwritable folder, no data)."""


class UIError(MonitoringError):
    """``qdb ui`` cannot serve: a port that is taken, a host that cannot be bound."""


class ExportError(MonitoringError):
    """A run that cannot be exported (an unknown format, an unwritable target)."""


class ExportUnreachableError(ExportError):
    """The export target (an MLflow tracking server) cannot be reached; nothing of this
    attempt is lost: exporting again later sends what is missing."""
