"""Settings: one typed object read from the environment (``QDB_`` prefix) at the edge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .registry.engine import redact_url

__all__ = [
    "DEFAULT_DATABASE_FILE",
    "PINECONE_KEY_VARIABLES",
    "Settings",
    "environment_variables",
]

DEFAULT_DATABASE_FILE = "quantum_db.sqlite"

#: Where a Pinecone API key is read from, in order of precedence (the second is the
#: Pinecone client's own name).
PINECONE_KEY_VARIABLES = ("QDB_PINECONE_API_KEY", "PINECONE_API_KEY")
_ENV_PREFIX = "QDB_"


class Settings(BaseSettings):
    """Everything quantum-db reads from its environment, read once and passed in.

    API keys are ``SecretStr`` and the database URL's password is redacted: neither
    appears in a repr, a log line or the registry. Provider keys keep their providers'
    usual names (``PINECONE_API_KEY``, ``IONQ_API_KEY``); the ``QDB_``-prefixed names
    work too. A value that cannot be used (``QDB_VECTOR_STORE=foo``, an empty API key)
    raises :class:`~quantum_db.errors.ConfigurationError` naming the variable.
    """

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: a SQLite file in the cwd"
    )
    vector_store: Literal["local", "pinecone"] = "local"

    pinecone_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(*PINECONE_KEY_VARIABLES)
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

    #: A connection's lease lives this long without a heartbeat (renewed every third of
    #: it); after that its reservations, jobs and dataset writes are reclaimed.
    #: At least a second: the heartbeat renews every third of it, and a shorter lease
    #: would lapse between heartbeats and spin the loop.
    lease_ttl_s: float = Field(default=60.0, ge=1.0, allow_inf_nan=False)
    #: Whether connect sweeps what owners that are gone left (``qdb gc`` always does).
    sweep_on_connect: bool = True
    #: At most this long is spent sweeping on connect; the rest waits for the next one.
    sweep_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    #: A job whose submission may have created it stays reserved this long (24 h).
    unknown_job_expiry_s: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            # ``from None``: pydantic's own text quotes the inputs, which may be secrets.
            raise ConfigurationError(_describe(exc)) from None

    @field_validator("pinecone_api_key", "ionq_api_key")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "the API key is empty or only whitespace: set the real key or unset it"
            )
        return value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path.cwd() / DEFAULT_DATABASE_FILE}"

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                value = redact_url(value)
            yield name, value


def environment_variables(field: str) -> tuple[str, ...]:
    """The environment variables a :class:`Settings` field is read from."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(choice) for choice in alias.choices)
    return (f"{_ENV_PREFIX}{field.upper()}",)


def _field_of(location: str) -> str | None:
    if location in Settings.model_fields:
        return location
    for name in Settings.model_fields:
        if location.upper() in environment_variables(name):
            return name
    return None


def _message(text: str) -> str:
    return text.removeprefix("Value error, ")


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = str(error["loc"][0]) if error["loc"] else ""
        field = _field_of(location)
        if field is None:
            problems.append(f"{location or 'a setting'}: {_message(error['msg'])}")
            continue
        variables = " or ".join(environment_variables(field))
        shown = ""
        annotation = str(Settings.model_fields[field].annotation)
        if "SecretStr" not in annotation:
            value = error.get("input")
            if field == "database_url" and isinstance(value, str):
                value = redact_url(value)
            shown = f"={value!r:.80}"
        problems.append(f"{variables}{shown}: {_message(error['msg'])}")
    return (
        "invalid settings: "
        + "; ".join(problems)
        + " (fix the environment variable, or pass a valid value)"
    )
