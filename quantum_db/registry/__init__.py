"""The SQL registry: ORM schema, engine and session scope, Alembic migrations."""

from .engine import Registry, redact_url
from .migrate import check_schema, head_revision, upgrade

__all__ = ["Registry", "check_schema", "head_revision", "redact_url", "upgrade"]
