"""The SQL registry: ORM schema, engine and session scope, Alembic migrations."""

from .engine import Registry, async_database_url, connect_error, redact_url, sqlite_path
from .migrate import check_schema, current_revision, head_revision, upgrade

__all__ = [
    "Registry",
    "async_database_url",
    "check_schema",
    "connect_error",
    "current_revision",
    "head_revision",
    "redact_url",
    "sqlite_path",
    "upgrade",
]
