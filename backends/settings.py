"""What the backends read from the environment: provider credentials and endpoints."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import BackendError

__all__ = ["IONQ_KEY_VARIABLES", "IONQ_URL_VARIABLES", "IonQSettings"]

#: The variables an IonQ API key is read from, in order of precedence; the same names
#: ``quantum_db.Settings`` reads, and the unprefixed one is the IonQ clients' own.
IONQ_KEY_VARIABLES = ("QDB_IONQ_API_KEY", "IONQ_API_KEY")
#: The variable the IonQ API root is read from.
IONQ_URL_VARIABLES = ("QDB_IONQ_API_URL",)


class IonQSettings(BaseSettings):
    """IonQ's key and API root from the environment, read when a backend is built.

    ``backends`` cannot import ``quantum_db`` (whose ``Settings`` reads the same
    variables), so a standalone :class:`~backends.ionq.IonQBackend` reads them here.
    The key is a :class:`SecretStr`: no repr, log line or error shows it.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices(*IONQ_KEY_VARIABLES)
    )
    api_url: str | None = Field(default=None, validation_alias=AliasChoices(*IONQ_URL_VARIABLES))

    @classmethod
    def from_environment(cls) -> IonQSettings:
        """The current environment's values, or a :class:`BackendError` naming the variable."""
        try:
            return cls()
        except ValidationError as exc:
            # Only the field names and messages: the input could be the key itself.
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
            )
            raise BackendError(f"invalid IonQ settings in the environment: {problems}") from None
