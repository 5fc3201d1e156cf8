"""The exception hierarchy of the ``quantum_db`` package.

QuantumDBError                         root of every quantum-db error (from ``backends``)
└── DatabaseError                      root of this package
    ├── ConfigurationError             bad settings or missing credentials
    ├── NotConnectedError              used outside ``async with db.connect()``
    ├── SchemaError                    the database schema cannot be used
    │   └── SchemaOutOfDateError       behind the code: run ``qdb init``
    ├── RegistryError                  the SQL database refused or failed an operation
    │   └── RegistryUnavailableError   the database server cannot be reached
    ├── DataValidationError (ValueError)   data or labels that cannot be stored
    │   ├── EmptyDatasetError
    │   ├── NonFiniteDataError
    │   ├── DataShapeError             ragged, 1-D, wrong label count, wrong dimension
    │   ├── InvalidNameError           a dataset/model/alias name that is not allowed
    │   └── RunExistsError             a run created under an id that is taken
    ├── NotFoundError (LookupError)    something asked for does not exist
    │   ├── DatasetNotFoundError
    │   ├── ModelNotFoundError
    │   ├── RunNotFoundError
    │   └── CheckpointNotFoundError
    ├── CheckpointError                a checkpoint that cannot be written or read
    │   └── CheckpointCorruptError     its content hash does not match
    ├── SerializationError (ValueError)  state that cannot be stored without pickling
    ├── MetricError (ValueError)       a metric that cannot be logged
    └── VectorStoreError               a vector store refused or failed an operation
        ├── VectorValidationError (ValueError)  bad ids, values, metadata or filters
        ├── VectorStoreUnavailableError         retries exhausted / service down
        └── PartialUpsertError         fewer vectors acknowledged than sent (safe to resend)

Warnings (not errors; see :mod:`warnings`):

UserWarning
└── CheckpointWarning                  a corrupt checkpoint was skipped for an earlier one
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.errors import QuantumDBError

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWarning",
    "ConfigurationError",
    "DataShapeError",
    "DataValidationError",
    "DatabaseError",
    "DatasetNotFoundError",
    "EmptyDatasetError",
    "InvalidNameError",
    "MetricError",
    "ModelNotFoundError",
    "NonFiniteDataError",
    "NotConnectedError",
    "NotFoundError",
    "PartialUpsertError",
    "QuantumDBError",
    "RegistryError",
    "RegistryUnavailableError",
    "RunExistsError",
    "RunNotFoundError",
    "SchemaError",
    "SchemaOutOfDateError",
    "SerializationError",
    "VectorStoreError",
    "VectorStoreUnavailableError",
    "VectorValidationError",
]


class DatabaseError(QuantumDBError):
    """Root of the errors raised by the ``quantum_db`` package."""


class ConfigurationError(DatabaseError):
    """Settings that cannot work (a bad URL, a missing API key, ...)."""


class NotConnectedError(DatabaseError):
    """The database was used outside ``async with db.connect():``."""


class SchemaError(DatabaseError):
    """The database's schema cannot be used by this version of quantum-db."""


class SchemaOutOfDateError(SchemaError):
    """The database's schema is behind the code; ``qdb init`` upgrades it."""


class RegistryError(DatabaseError):
    """The SQL database refused or failed an operation; nothing was changed."""


class RegistryUnavailableError(RegistryError):
    """The database server could not be reached (refused, unknown host, timed out)."""


class DataValidationError(DatabaseError, ValueError):
    """Training data or labels that cannot be stored; nothing was written."""


class EmptyDatasetError(DataValidationError):
    """A dataset without samples or without features."""


class NonFiniteDataError(DataValidationError):
    """NaN or infinity in data or labels."""


class DataShapeError(DataValidationError):
    """Ragged or 1-D data, a label count that differs, or a dimension that changed."""


class InvalidNameError(DataValidationError):
    """A name that is empty, too long, or has characters outside ``[A-Za-z0-9_.-]``."""


class RunExistsError(DataValidationError):
    """``runs.create`` of a run id that already exists (resume it, or pick another id)."""


class NotFoundError(DatabaseError, LookupError):
    """Something that was asked for does not exist."""


class DatasetNotFoundError(NotFoundError):
    """No dataset (or dataset version) of that name."""


class ModelNotFoundError(NotFoundError):
    """No model, model version or alias of that name."""


class RunNotFoundError(NotFoundError):
    """No run with that id."""


class CheckpointNotFoundError(NotFoundError):
    """No usable checkpoint for that run and step."""


class CheckpointError(DatabaseError):
    """A checkpoint that cannot be written or read."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint whose content hash does not match what was stored."""


class SerializationError(DatabaseError, ValueError):
    """State with a value that cannot be stored as arrays and JSON."""


class MetricError(DatabaseError, ValueError):
    """A metric key, value or step that cannot be logged."""


class VectorStoreError(DatabaseError):
    """A vector store refused or failed an operation."""


class VectorValidationError(VectorStoreError, ValueError):
    """Bad vector ids, values, metadata or filters; nothing was written."""


class VectorStoreUnavailableError(VectorStoreError):
    """The vector store did not answer (retries exhausted)."""


class PartialUpsertError(VectorStoreError):
    """Pinecone acknowledged fewer vectors than were sent; ``unconfirmed_ids`` lists them.

    Upserting the unconfirmed ids again is safe (upsert overwrites by id).
    """

    def __init__(self, message: str, *, unconfirmed_ids: Sequence[str], written: int) -> None:
        super().__init__(message)
        self.unconfirmed_ids = tuple(unconfirmed_ids)
        self.written = written


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it is corrupt; an earlier one was used instead."""
