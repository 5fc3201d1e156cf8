"""Settings: one typed object read from the environment (``QDB_`` prefix) at the edge."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_DATABASE_FILE", "Settings"]

DEFAULT_DATABASE_FILE = "quantum_db.sqlite"


class Settings(BaseSettings):
    """Everything quantum-db reads from its environment, read once and passed in.

    API keys are ``SecretStr``: they never appear in a repr, a log line or the registry.
    Provider keys keep their providers' usual names (``PINECONE_API_KEY``,
    ``IONQ_API_KEY``); the ``QDB_``-prefixed names work too.
    """

    model_config = SettingsConfigDict(env_prefix="QDB_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default: a SQLite file in the cwd"
    )
    vector_store: str = "local"

    pinecone_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QDB_PINECONE_API_KEY", "PINECONE_API_KEY")
    )
    pinecone_index: str | None = None
    pinecone_index_host: str | None = None
    pinecone_controller_host: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QDB_PINECONE_CONTROLLER_HOST", "PINECONE_CONTROLLER_HOST"),
    )
    #: Attempts per Pinecone request before giving up on 429/5xx/connection errors.
    pinecone_max_attempts: int = Field(default=5, ge=1, le=20)
    pinecone_timeout_s: float = Field(default=30.0, gt=0)

    ionq_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("QDB_IONQ_API_KEY", "IONQ_API_KEY")
    )
    ionq_api_url: str = "https://api.ionq.co/v0.4"

    #: Checkpoints kept per run besides the best one.
    checkpoint_keep_last: int = Field(default=3, ge=1)
    #: Metrics are written in batches: at most this many seconds after being logged.
    metrics_flush_interval_s: float = Field(default=0.25, gt=0)

    @field_validator("vector_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value not in ("local", "pinecone"):
            raise ValueError("vector_store must be 'local' or 'pinecone'")
        return value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"
