"""What is kept: the SQL registry, vector stores, datasets and loaders, models, checkpoints.

``quantum_db`` may import ``backends``; it never imports ``quantum_ml``.
"""

from .accounting import SqlAccounting
from .alerts import MAX_ALERT_MESSAGE_LENGTH, Alert, AlertStore
from .checkpoints import Checkpoint, CheckpointInfo, CheckpointStore
from .database import QuantumDatabase
from .datasets import DEFAULT_SPLITS, Dataset, DatasetInfo, DatasetStore
from .errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointWarning,
    ConfigurationError,
    DatabaseError,
    DatasetNotFoundError,
    DataShapeError,
    DataValidationError,
    EmptyDatasetError,
    InvalidNameError,
    MetricError,
    ModelNotFoundError,
    NonFiniteDataError,
    NotConnectedError,
    NotFoundError,
    PartialUpsertError,
    QuantumDBError,
    RegistryError,
    RegistryUnavailableError,
    RunNotFoundError,
    SchemaError,
    SchemaOutOfDateError,
    SerializationError,
    VectorStoreError,
    VectorStoreUnavailableError,
    VectorValidationError,
)
from .loader import MLDataLoader
from .metrics import MetricHistory, MetricsLogger, RejectedMetric
from .models import ModelRegistry, ModelVersion, SupportsRegistry
from .runs import ENDED_RUN_STATUSES, MAX_REASON_LENGTH, RUN_STATUSES, RunInfo, RunStore
from .settings import DEFAULT_DATABASE_FILE, Settings
from .vectorstores import (
    LocalVectorStore,
    Metric,
    PineconeVectorStore,
    QueryMatch,
    VectorRecord,
    VectorStore,
)

__all__ = [
    "DEFAULT_DATABASE_FILE",
    "DEFAULT_SPLITS",
    "ENDED_RUN_STATUSES",
    "MAX_ALERT_MESSAGE_LENGTH",
    "MAX_REASON_LENGTH",
    "RUN_STATUSES",
    "Alert",
    "AlertStore",
    "Checkpoint",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointStore",
    "CheckpointWarning",
    "ConfigurationError",
    "DataShapeError",
    "DataValidationError",
    "DatabaseError",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetStore",
    "EmptyDatasetError",
    "InvalidNameError",
    "LocalVectorStore",
    "MLDataLoader",
    "Metric",
    "MetricError",
    "MetricHistory",
    "MetricsLogger",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersion",
    "NonFiniteDataError",
    "NotConnectedError",
    "NotFoundError",
    "PartialUpsertError",
    "PineconeVectorStore",
    "QuantumDBError",
    "QuantumDatabase",
    "QueryMatch",
    "RegistryError",
    "RegistryUnavailableError",
    "RejectedMetric",
    "RunInfo",
    "RunNotFoundError",
    "RunStore",
    "SchemaError",
    "SchemaOutOfDateError",
    "SerializationError",
    "Settings",
    "SqlAccounting",
    "SupportsRegistry",
    "VectorRecord",
    "VectorStore",
    "VectorStoreError",
    "VectorStoreUnavailableError",
    "VectorValidationError",
]
