"""What is kept: the SQL registry, vector stores, datasets and loaders, models, checkpoints.

``quantum_db`` may import ``backends``; it never imports ``quantum_ml``.
"""

from .checkpoints import Checkpoint, CheckpointInfo, CheckpointStore, CheckpointWarning
from .database import QuantumDatabase
from .datasets import Dataset, DatasetInfo
from .errors import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
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
    QuantumDBError,
    RegistryError,
    RunNotFoundError,
    SchemaError,
    SchemaOutOfDateError,
    SerializationError,
    VectorStoreError,
    VectorStoreUnavailableError,
    VectorValidationError,
)
from .loader import MLDataLoader
from .metrics import MetricHistory, MetricsLogger
from .models import ModelRegistry, ModelVersion, SupportsRegistry
from .runs import RunInfo, RunStore
from .settings import Settings

__all__ = [
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
    "EmptyDatasetError",
    "InvalidNameError",
    "MLDataLoader",
    "MetricError",
    "MetricHistory",
    "MetricsLogger",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelVersion",
    "NonFiniteDataError",
    "NotConnectedError",
    "NotFoundError",
    "QuantumDBError",
    "QuantumDatabase",
    "RegistryError",
    "RunInfo",
    "RunNotFoundError",
    "RunStore",
    "SchemaError",
    "SchemaOutOfDateError",
    "SerializationError",
    "Settings",
    "SupportsRegistry",
    "VectorStoreError",
    "VectorStoreUnavailableError",
    "VectorValidationError",
]
