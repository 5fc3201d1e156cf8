"""The Pinecone vector store: the official asyncio client, batched, retried and checked."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np
from numpy.typing import NDArray

from backends.errors import MissingDependencyError
from backends.retry import RetryPolicy, retry_async

from ..errors import (
    ConfigurationError,
    DatabaseError,
    PartialUpsertError,
    VectorStoreError,
    VectorStoreUnavailableError,
    VectorValidationError,
)
from ..settings import PINECONE_KEY_VARIABLES, Settings
from .base import (
    MAX_ID_LENGTH,
    Metric,
    QueryMatch,
    VectorRecord,
    VectorStore,
    validate_ids,
    validate_namespace,
    validate_records,
    validate_top_k,
    validate_vector,
)
from .filters import compile_filter

__all__ = ["PartialUpsertError", "PineconeVectorStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Pinecone's request limits (https://docs.pinecone.io/reference/api/database-limits).
MAX_UPSERT_VECTORS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_IDS_PER_REQUEST = 1000
MAX_LIST_PAGE = 100
MAX_TOP_K = 10_000
#: What one upsert body may take by our estimate: under 2 MB with room for the envelope.
UPSERT_BYTES_BUDGET = 2_000_000
#: Fetch sends its ids in the URL; long ids would make a URL servers refuse (414).
FETCH_QUERY_BUDGET = 32 * 1024
#: Statuses worth another attempt: throttling, timeouts, server-side failures.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _pinecone() -> Any:
    try:
        import pinecone
    except ImportError as exc:
        raise MissingDependencyError(
            "the Pinecone vector store needs the pinecone client: "
            "pip install 'quantum-db[pinecone]'"
        ) from exc
    return pinecone


def _single_attempt(index: Any, pinecone: Any) -> None:
    """Switch off the client's own data-plane retries, so that ours are the only ones.

    ``AsyncIndex`` retries 429/5xx by itself (3 retries, jittered from 0.25 s, under a
    process-wide retry budget) and, unlike ``AsyncPinecone``, takes no ``retry_config``.
    Stacked under our retries every attempt would become up to four, with timing we do
    not control. Its HTTP client is built lazily from ``_config``, so replacing the config
    before the first request is enough. Should the SDK's internals move, both layers
    retry, which is slower but still correct.
    """
    http = getattr(index, "_http", None)
    config: Any = getattr(http, "_config", None)
    if http is None or getattr(http, "_client", True) is not None:
        logger.debug("pinecone client internals changed: its own retries stay on")
        return
    try:
        http._config = dataclasses.replace(config, retry_config=pinecone.RetryConfig(max_retries=0))
    except TypeError:
        logger.debug("pinecone client internals changed: its own retries stay on")


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None)
    return text if isinstance(text, str) and text else (str(exc) or type(exc).__name__)


class _RetryableFailure(VectorStoreUnavailableError):
    """A failure worth another attempt; ``retry_after`` is the server's wish, if any."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)  # the client parses it on a 429
    if value is None:
        headers = getattr(exc, "headers", None) or {}
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):  # an HTTP date: fall back to our own backoff
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _translate(exc: Exception, what: str) -> tuple[bool, DatabaseError]:
    """(whether to try again, the error to raise) for a failure of the Pinecone client."""
    pinecone = _pinecone()
    status = getattr(exc, "status_code", None)
    detail = f"{type(exc).__name__}: {_message(exc)}"
    if isinstance(exc, pinecone.PineconeTimeoutError | pinecone.PineconeConnectionError):
        return True, VectorStoreUnavailableError(detail)
    if isinstance(exc, pinecone.ApiError):
        if status in RETRYABLE_STATUSES:
            return True, VectorStoreUnavailableError(f"HTTP {status} {detail}")
        if status in (401, 403):
            return False, ConfigurationError(
                f"Pinecone refused the API key ({status}) during {what}: check PINECONE_API_KEY "
                "and that the key belongs to the index's project"
            )
        if status in (400, 422):
            return False, VectorValidationError(f"Pinecone rejected the {what}: {detail}")
        return False, VectorStoreError(f"Pinecone {what} failed: HTTP {status} {detail}")
    if isinstance(exc, pinecone.PineconeValueError | pinecone.PineconeTypeError):
        return False, VectorValidationError(f"Pinecone client refused the {what}: {detail}")
    return False, VectorStoreError(f"Pinecone {what} failed: {detail}")


def _dense_field(description: Any) -> tuple[str | None, int | None]:
    """(metric, dimension) of an index description's single dense vector field."""
    fields = getattr(getattr(description, "schema", None), "fields", None) or {}
    dense = [f for f in fields.values() if type(f).__name__ == "DenseVectorField"]
    if len(dense) != 1:
        return None, None
    return getattr(dense[0], "metric", None), getattr(dense[0], "dimension", None)


class PineconeVectorStore(VectorStore):
    """A Pinecone index behind the :class:`VectorStore` interface.

    The index is named (its host is resolved through the control plane, which honours
    ``PINECONE_CONTROLLER_HOST``) or given by its data-plane host. Requests are split under
    Pinecone's limits, retried with exponential backoff on 429, 5xx and connection errors
    (``settings.pinecone_max_attempts`` attempts, then
    :class:`~quantum_db.errors.VectorStoreUnavailableError`), and an upsert that Pinecone
    acknowledges only in part raises :class:`PartialUpsertError`.

    The client's connections belong to the event loop that opened the store: open, use
    and close it in one loop (``async with store:``); a closed store cannot be reopened.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        index_name: str | None = None,
        index_host: str | None = None,
        dim: int | None = None,
        retry_base_delay_s: float = 0.25,
        retry_max_delay_s: float = 8.0,
    ) -> None:
        if settings is None:
            settings = Settings()  # the environment, as the pinecone client itself reads it
        key = settings.pinecone_api_key
        if key is None or not key.get_secret_value().strip():
            raise ConfigurationError(
                "the Pinecone vector store needs an API key: set "
                + " or ".join(reversed(PINECONE_KEY_VARIABLES))
                + " (or pass settings=Settings(pinecone_api_key=...))"
            )
        if index_name is None and index_host is None:
            index_name, index_host = settings.pinecone_index, settings.pinecone_index_host
        if not index_name and not index_host:
            raise ConfigurationError(
                "no Pinecone index: set QDB_PINECONE_INDEX (a name) or QDB_PINECONE_INDEX_HOST "
                "(its data-plane host), or pass index_name= / index_host="
            )
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigurationError(f"dim must be a positive int or None, got {dim!r}")
        if retry_base_delay_s < 0 or retry_max_delay_s < retry_base_delay_s:
            raise ConfigurationError("retry delays must satisfy 0 <= base <= max")
        self._api_key = key  # a SecretStr: never in a repr or a log
        self._controller_host = settings.pinecone_controller_host
        self._timeout_s = settings.pinecone_timeout_s
        self._retry = RetryPolicy(
            attempts=settings.pinecone_max_attempts,
            base_delay_s=retry_base_delay_s,
            max_delay_s=retry_max_delay_s,
        )
        self.index_name = index_name or None
        self.index_host = index_host or None
        self._expected_dim = dim
        #: The index's dimension, known once the store is open.
        self.dim: int | None = None
        self._metric: Metric | None = None
        self._client: Any = None
        self._index: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # Read-only here (hence the ignore): the index decides its metric, not the caller.
    @property
    def metric(self) -> Metric:  # type: ignore[override]
        """The index's metric, learnt from Pinecone when the store opens."""
        if self._metric is None:
            raise VectorStoreError("the index's metric is known once the store is open")
        return self._metric

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._index is not None else "new")
        return (
            f"PineconeVectorStore(index_name={self.index_name!r}, "
            f"index_host={self.index_host!r}, metric={self._metric!r}, {state})"
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._closed:
            raise VectorStoreError("this PineconeVectorStore was closed; create a new one")
        if self._index is not None:
            self._check_loop()
            return
        pinecone = _pinecone()
        self._loop = asyncio.get_running_loop()
        client = pinecone.AsyncPinecone(
            api_key=self._api_key.get_secret_value(),
            host=self._controller_host or None,
            timeout=self._timeout_s,
            # One retry policy, ours: the control plane's is switched off here.
            retry_config=pinecone.RetryConfig(max_retries=0),
        )
        index: Any = None
        try:
            metric, dim = None, None
            host = self.index_host
            if host is None:
                description = await self._describe_index(client)
                host = description.host
                if not host:
                    raise ConfigurationError(
                        f"the Pinecone index {self.index_name!r} has no host yet: it is still "
                        "initializing; wait until it is Ready"
                    )
                metric, dim = _dense_field(description)
            index = client.IndexAsyncio(host=host)
            _single_attempt(index, pinecone)
            if metric is None or dim is None:
                stats = await self._retrying("describe_index_stats", index.describe_index_stats)
                metric, dim = metric or stats.metric, dim or stats.dimension
            if metric is None and self.index_name is not None:
                metric, _ = _dense_field(await self._describe_index(client))
            self._adopt(metric, dim)
        except BaseException:
            if index is not None:
                await index.close()
            await client.close()
            raise
        self.index_host = host
        self._client, self._index = client, index
        logger.info(
            "opened Pinecone index %s at %s (%s, dimension %s)",
            self.index_name or "?",
            host,
            self._metric,
            self.dim,
        )

    async def _describe_index(self, client: Any) -> Any:
        try:
            return await self._retrying(
                "describe_index", functools.partial(client.describe_index, self.index_name)
            )
        except VectorStoreUnavailableError:
            raise
        except VectorStoreError as exc:
            raise ConfigurationError(
                f"cannot resolve the Pinecone index {self.index_name!r} through the control "
                f"plane at {self._controller_host or 'api.pinecone.io'}: {exc}"
            ) from exc

    def _adopt(self, metric: object, dim: object) -> None:
        if metric not in ("cosine", "dotproduct"):
            raise ConfigurationError(
                f"the Pinecone index uses the metric {metric!r}; quantum-db supports cosine "
                "and dotproduct indexes"
            )
        if not isinstance(dim, int) or dim < 1:
            raise ConfigurationError(f"Pinecone did not report the index's dimension ({dim!r})")
        if self._expected_dim is not None and dim != self._expected_dim:
            raise ConfigurationError(
                f"the Pinecone index has dimension {dim}, but dim={self._expected_dim} was asked"
            )
        self._metric = "cosine" if metric == "cosine" else "dotproduct"
        self.dim = dim

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        index, client, self._index, self._client = self._index, self._client, None, None
        if index is None:
            return
        if asyncio.get_running_loop() is not self._loop:
            # Its connections belong to the other loop; awaiting them here could hang.
            logger.warning("PineconeVectorStore closed from another event loop: connections left")
            return
        try:
            await index.close()
        finally:
            await client.close()

    def _ready(self) -> Any:
        if self._closed:
            raise VectorStoreError(
                "this PineconeVectorStore is closed; its client cannot be reused: create a new "
                "store (async with PineconeVectorStore(...) as store:)"
            )
        if self._index is None:
            raise VectorStoreError(
                "the PineconeVectorStore is not open: use `async with store:` or "
                "`await store.open()` first"
            )
        self._check_loop()
        return self._index

    def _check_loop(self) -> None:
        if asyncio.get_running_loop() is not self._loop:
            raise VectorStoreError(
                "this PineconeVectorStore was opened in another event loop and its "
                "connections belong to that loop; open a new store in this one"
            )

    # -- retries -------------------------------------------------------------------------

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation`` under the project's retry policy, its failures typed.

        429, 408, 5xx, timeouts and dropped connections are tried again (``Retry-After``
        honoured) up to ``settings.pinecone_max_attempts`` times, then raise
        :class:`VectorStoreUnavailableError`; anything else raises at once. The typed
        error's ``__cause__`` is the client's own exception.
        """

        async def attempt() -> T:
            if self._closed:
                raise VectorStoreError(f"the store was closed during {what}")
            try:
                return await operation()
            except Exception as exc:
                retry, error = _translate(exc, what)
                if retry:
                    raise _RetryableFailure(str(error), _retry_after(exc)) from exc
                raise error from exc

        try:
            return await retry_async(
                attempt,
                policy=self._retry,
                service="pinecone",
                operation=what,
                retryable=lambda exc: isinstance(exc, _RetryableFailure),
            )
        except _RetryableFailure as exc:
            raise VectorStoreUnavailableError(
                f"Pinecone {what} failed {self._retry.attempts} times, giving up: {exc}"
            ) from exc.__cause__

    # -- writing -------------------------------------------------------------------------

    async def upsert(self, records: Sequence[VectorRecord], *, namespace: str = "") -> int:
        index = self._ready()
        namespace = validate_namespace(namespace)
        ids, matrix, metadata = validate_records(records, dim=self.dim)
        if not ids:
            return 0
        payloads: list[dict[str, Any]] = []
        for id_, row, meta in zip(ids, matrix, metadata, strict=True):
            payload: dict[str, Any] = {"id": id_, "values": row.tolist()}
            if meta:
                payload["metadata"] = meta
            payloads.append(payload)
        batches = _upsert_batches(payloads, namespace)
        written = 0
        unconfirmed: list[str] = []
        for number, batch in enumerate(batches):
            try:
                response = await self._retrying(
                    "upsert",
                    functools.partial(index.upsert, vectors=batch, namespace=namespace),
                )
            except VectorStoreError as exc:
                if len(batches) == 1:
                    raise
                pending = sum(len(b) for b in batches[number:])
                raise type(exc)(
                    f"{exc} (batch {number + 1} of {len(batches)}: {written} of {len(ids)} "
                    f"vectors were written before it, {pending} were not sent"
                    + (f", {len(unconfirmed)} are unconfirmed" if unconfirmed else "")
                    + ")"
                ) from exc
            confirmed = int(response.upserted_count)
            if confirmed == len(batch):
                written += confirmed
            else:
                unconfirmed.extend(p["id"] for p in batch)
                logger.error(
                    "Pinecone confirmed %d of %d vectors of an upsert batch", confirmed, len(batch)
                )
        if unconfirmed:
            shown = ", ".join(map(repr, unconfirmed[:50]))
            more = f" and {len(unconfirmed) - 50} more" if len(unconfirmed) > 50 else ""
            raise PartialUpsertError(
                f"Pinecone acknowledged fewer vectors than were sent: {len(unconfirmed)} of "
                f"{len(ids)} are not confirmed as written (upsert them again): {shown}{more}",
                unconfirmed_ids=unconfirmed,
                written=written,
            )
        return written

    async def delete(
        self, ids: Sequence[str] | None = None, *, namespace: str = "", delete_all: bool = False
    ) -> None:
        index = self._ready()
        namespace = validate_namespace(namespace)
        if delete_all and ids is not None:
            raise VectorValidationError("pass either ids or delete_all=True, not both")
        if not delete_all and ids is None:
            raise VectorValidationError("pass the ids to delete, or delete_all=True")
        if delete_all:
            try:
                await self._retrying(
                    "delete", functools.partial(index.delete, delete_all=True, namespace=namespace)
                )
            except VectorStoreError as exc:
                # Serverless indexes answer 404 for a namespace that holds nothing.
                if getattr(exc.__cause__, "status_code", None) != 404:
                    raise
            return
        unique = sorted(set(validate_ids(ids)))
        for start in range(0, len(unique), MAX_IDS_PER_REQUEST):
            chunk = unique[start : start + MAX_IDS_PER_REQUEST]
            await self._retrying(
                "delete", functools.partial(index.delete, ids=chunk, namespace=namespace)
            )

    # -- reading -------------------------------------------------------------------------

    async def fetch(self, ids: Sequence[str], *, namespace: str = "") -> dict[str, VectorRecord]:
        index = self._ready()
        namespace = validate_namespace(namespace)
        found: dict[str, VectorRecord] = {}
        for chunk in _fetch_batches(sorted(set(validate_ids(ids)))):
            response = await self._retrying(
                "fetch", functools.partial(index.fetch, ids=chunk, namespace=namespace)
            )
            for id_, vector in response.vectors.items():
                found[id_] = VectorRecord(
                    id=id_, values=_as_float64(vector.values), metadata=dict(vector.metadata or {})
                )
        return found

    async def query(
        self,
        vector: Sequence[float] | NDArray[np.float64],
        *,
        top_k: int = 10,
        namespace: str = "",
        filter: Mapping[str, Any] | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        index = self._ready()
        namespace = validate_namespace(namespace)
        query = validate_vector(vector, what="query vector")
        k = validate_top_k(top_k)
        if k > MAX_TOP_K:
            raise VectorValidationError(f"top_k is at most {MAX_TOP_K} on Pinecone, got {k}")
        if query.size != self.dim:
            raise VectorValidationError(
                f"the query vector has dimension {query.size}; the index has {self.dim}"
            )
        if filter is not None:
            compile_filter(filter)  # refuse a bad filter before anything is sent
        response = await self._retrying(
            "query",
            functools.partial(
                index.query,
                vector=query.tolist(),
                top_k=k,
                namespace=namespace,
                filter=dict(filter) if filter else None,
                include_values=include_values,
                include_metadata=True,
            ),
        )
        return [
            QueryMatch(
                id=match.id,
                score=float(match.score),
                values=_as_float64(match.values) if include_values else None,
                metadata=dict(match.metadata or {}),
            )
            for match in response.matches
        ]

    async def list_ids(self, *, namespace: str = "", prefix: str | None = None) -> list[str]:
        index = self._ready()
        namespace = validate_namespace(namespace)
        if prefix is not None and (
            not isinstance(prefix, str)
            or len(prefix) > MAX_ID_LENGTH
            or not prefix.isascii()
            or "\x00" in prefix
        ):
            # Pinecone holds a prefix to the rules of ids.
            raise VectorValidationError(
                f"prefix must be an ASCII str of at most {MAX_ID_LENGTH} characters, "
                f"got {prefix!r:.80}"
            )
        ids: list[str] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = await self._retrying(
                "list",
                functools.partial(
                    index.list_paginated,
                    prefix=prefix or None,
                    limit=MAX_LIST_PAGE,
                    pagination_token=token,
                    namespace=namespace,
                ),
            )
            ids.extend(item.id for item in page.vectors if item.id is not None)
            token = page.pagination.next if page.pagination is not None else None
            if not token:
                return ids
            if token in seen:
                raise VectorStoreError("Pinecone returned a pagination token twice; giving up")
            seen.add(token)

    async def namespaces(self) -> list[str]:
        index = self._ready()
        stats = await self._retrying("describe_index_stats", index.describe_index_stats)
        return sorted(name for name, ns in stats.namespaces.items() if ns.vector_count > 0)

    async def count(self, *, namespace: str | None = None) -> int:
        index = self._ready()
        if namespace is not None:
            namespace = validate_namespace(namespace)
        stats = await self._retrying("describe_index_stats", index.describe_index_stats)
        if namespace is None:
            return int(stats.total_vector_count)
        summary = stats.namespaces.get(namespace)
        return 0 if summary is None else int(summary.vector_count)


def _as_float64(values: Any) -> NDArray[np.float64]:
    # Pinecone stores float32; callers get float64 like every other store returns.
    return np.asarray(values, dtype=np.float64)


def _upsert_batches(payloads: list[dict[str, Any]], namespace: str) -> list[list[dict[str, Any]]]:
    """Split under both limits: 1000 vectors and 2 MB of JSON per request.

    The size is estimated with ``json.dumps``, which never writes less than the client's
    orjson does for the same data (it escapes non-ASCII and spells exponents longer).
    """
    envelope = len(json.dumps({"vectors": [], "namespace": namespace}, separators=(",", ":")))
    budget = UPSERT_BYTES_BUDGET - envelope
    batches: list[list[dict[str, Any]]] = []
    batch: list[dict[str, Any]] = []
    size = 0
    for payload in payloads:
        item = len(json.dumps(payload, separators=(",", ":"))) + 1  # and its comma
        if item > budget:
            raise VectorValidationError(
                f"vector {payload['id']!r} alone is {item} bytes of JSON, over Pinecone's "
                f"{MAX_REQUEST_BYTES}-byte request limit"
            )
        if batch and (len(batch) == MAX_UPSERT_VECTORS or size + item > budget):
            batches.append(batch)
            batch, size = [], 0
        batch.append(payload)
        size += item
    if batch:
        batches.append(batch)
    return batches


def _fetch_batches(ids: list[str]) -> list[list[str]]:
    """Split ids under 1000 per request and a URL of bounded length."""
    batches: list[list[str]] = []
    batch: list[str] = []
    size = 0
    for id_ in ids:
        item = len("&ids=") + len(quote(id_, safe=""))
        if batch and (len(batch) == MAX_IDS_PER_REQUEST or size + item > FETCH_QUERY_BUDGET):
            batches.append(batch)
            batch, size = [], 0
        batch.append(id_)
        size += item
    if batch:
        batches.append(batch)
    return batches
