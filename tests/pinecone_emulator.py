"""A loopback emulator of Pinecone's REST API (control and data plane) for tests.

It speaks the JSON the official client sends and parses (API version 2026-07): the control
plane's ``GET /indexes/{name}`` and each index's data plane, ``POST /vectors/upsert``,
``POST /query``, ``GET /vectors/fetch``, ``POST /vectors/delete``, ``GET /vectors/list`` and
``POST /describe_index_stats``. Pinecone's limits are enforced the way the service does
(400 for more than 1000 vectors or 2 MB in one upsert, more than 1000 ids in a fetch, a
dimension that does not match), values are kept as float32, numbers in metadata become
floats and null metadata values are stripped.

Each index is served under its own path prefix (``http://127.0.0.1:PORT/data/NAME``),
which the client treats as the index's host. Faults can be injected (``fail_next``,
``disconnect_next``, ``drop_from_next_upsert``) and every request is logged, so tests can
assert retries and batching. The metadata filter evaluator here is written independently
of ``quantum_db``'s: it is the reference the stores are checked against.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

__all__ = ["EmulatedIndex", "LoggedRequest", "PineconeEmulator"]

MAX_UPSERT_VECTORS = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_FETCH_IDS = 1000
MAX_DELETE_IDS = 1000
MAX_LIST_LIMIT = 100
MAX_TOP_K = 10_000
MAX_METADATA_BYTES = 40 * 1024
DATA_PREFIX = "/data/"


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it."""

    method: str
    #: The index addressed, or None for the control plane.
    index: str | None
    #: The path within the index's host ("/vectors/upsert") or on the control plane.
    path: str
    status: int
    body_bytes: int
    #: Vectors in an upsert, ids in a fetch or delete; 0 otherwise.
    count: int
    namespace: str | None


@dataclass
class _Fault:
    status: int | None  # None: drop the connection without answering
    remaining: int
    path: str | None
    retry_after: float | None


@dataclass
class EmulatedIndex:
    name: str
    dimension: int
    metric: str
    #: namespace -> id -> (float32 values, metadata)
    namespaces: dict[str, dict[str, tuple[np.ndarray[Any, Any], dict[str, Any]]]] = field(
        default_factory=dict
    )


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, control: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.control = control

    def body(self) -> dict[str, Any]:
        if self.control:
            code = {404: "NOT_FOUND", 401: "UNAUTHENTICATED"}.get(self.status, "INVALID_ARGUMENT")
            return {"error": {"code": code, "message": self.message}, "status": self.status}
        grpc = {400: 3, 401: 16, 404: 5, 429: 8}.get(self.status, 13)
        return {"code": grpc, "message": self.message, "details": []}


class PineconeEmulator:
    """Pinecone's REST API on 127.0.0.1, in a background thread; use as a context manager."""

    def __init__(self, api_key: str = "emulator-key") -> None:
        self.api_key = api_key
        self._indexes: dict[str, EmulatedIndex] = {}
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        self._drops: list[int] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # Join request threads on close, so that a stopped emulator leaves none behind.
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="pinecone-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The control plane's address: what PINECONE_CONTROLLER_HOST points at."""
        assert self._server is not None, "start the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- indexes -------------------------------------------------------------------------

    def create_index(self, name: str, *, dimension: int, metric: str = "cosine") -> str:
        """Create an index; returns its data-plane host."""
        with self._lock:
            self._indexes[name] = EmulatedIndex(name, dimension, metric)
        return self.host_of(name)

    def host_of(self, name: str) -> str:
        return f"{self.url}{DATA_PREFIX}{name}"

    def index(self, name: str) -> EmulatedIndex:
        return self._indexes[name]

    def stored(
        self, name: str, namespace: str = ""
    ) -> dict[str, tuple[list[float], dict[str, Any]]]:
        """A copy of what an index holds in a namespace, as the server sees it."""
        with self._lock:
            vectors = self._indexes[name].namespaces.get(namespace, {})
            return {i: (v.tolist(), dict(m)) for i, (v, m) in vectors.items()}

    # -- faults and the log ----------------------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        count: int = 1,
        *,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``count`` requests (to ``path`` only, if given) with ``status``."""
        with self._lock:
            self._faults.append(_Fault(status, count, path, retry_after))

    def disconnect_next(self, count: int = 1, *, path: str | None = None) -> None:
        """Close the connection of the next ``count`` requests without answering."""
        with self._lock:
            self._faults.append(_Fault(None, count, path, None))

    def drop_from_next_upsert(self, n: int) -> None:
        """The next upsert keeps all but its last ``n`` vectors and reports only those."""
        with self._lock:
            self._drops.append(n)

    def clear_faults(self) -> None:
        """Forget every fault not yet served."""
        with self._lock:
            self._faults.clear()
            self._drops.clear()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (fault.path is None or fault.path == path):
                    fault.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    return fault
        return None

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- control plane -----------------------------------------------------------------

    def describe_index(self, name: str) -> dict[str, Any]:
        index = self._indexes.get(name)
        if index is None:
            raise _ApiError(404, f"Resource {name} not found", control=True)
        return {
            "name": name,
            "host": self.host_of(name),
            "status": {"ready": True, "state": "Ready"},
            "schema": {
                "fields": {
                    "_values": {
                        "type": "dense_vector",
                        "dimension": index.dimension,
                        "metric": index.metric,
                    }
                }
            },
            "deployment": {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
            "deletion_protection": "disabled",
            "tags": None,
        }

    # -- data plane ----------------------------------------------------------------------

    def upsert(self, index: EmulatedIndex, body: dict[str, Any]) -> dict[str, Any]:
        vectors = body.get("vectors")
        namespace = _namespace(body.get("namespace"))
        if not isinstance(vectors, list) or not vectors:
            raise _ApiError(400, "vectors must be a non-empty list")
        if len(vectors) > MAX_UPSERT_VECTORS:
            raise _ApiError(
                400,
                f"Batch size exceeds the maximum of {MAX_UPSERT_VECTORS} vectors "
                f"({len(vectors)} given)",
            )
        checked: list[tuple[str, np.ndarray[Any, Any], dict[str, Any]]] = []
        for vector in vectors:  # all of them are checked before anything is stored
            if not isinstance(vector, dict):
                raise _ApiError(400, "each vector must be an object")
            vector_id = vector.get("id")
            if not isinstance(vector_id, str) or not 1 <= len(vector_id) <= 512:
                raise _ApiError(400, f"Invalid vector id {vector_id!r}")
            values = vector.get("values")
            if not isinstance(values, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in values
            ):
                raise _ApiError(400, f"Vector {vector_id} has invalid values")
            if len(values) != index.dimension:
                raise _ApiError(
                    400,
                    f"Vector dimension {len(values)} does not match the dimension of the "
                    f"index {index.dimension}",
                )
            checked.append(
                (vector_id, np.asarray(values, dtype=np.float32), _metadata(vector, vector_id))
            )
        with self._lock:
            drop = self._drops.pop(0) if self._drops else 0
            kept = checked[: max(0, len(checked) - drop)]
            space = index.namespaces.setdefault(namespace, {})
            for vector_id, values, metadata in kept:
                space[vector_id] = (values, metadata)
        return {"upsertedCount": len(kept)}

    def query(self, index: EmulatedIndex, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(body.get("namespace"))
        top_k = body.get("topK")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise _ApiError(400, f"topK must be between 1 and {MAX_TOP_K}, got {top_k!r}")
        condition = body.get("filter")
        if condition is not None:
            check_filter(condition)
        with self._lock:
            space = dict(index.namespaces.get(namespace, {}))
        if "id" in body:
            stored = space.get(body["id"])
            query = None if stored is None else stored[0].astype(np.float64)
        else:
            query = np.asarray(body.get("vector") or [], dtype=np.float64)
            if query.size != index.dimension:
                raise _ApiError(
                    400,
                    f"Query vector dimension {query.size} does not match the dimension of the "
                    f"index {index.dimension}",
                )
        matches: list[tuple[float, str]] = []
        if query is not None:
            for vector_id, (values, metadata) in space.items():
                if condition is not None and not evaluate(condition, metadata):
                    continue
                matches.append((_score(index.metric, values.astype(np.float64), query), vector_id))
        # Best first; ties by id, so that answers are reproducible.
        matches.sort(key=lambda m: (-m[0], m[1]))
        out = []
        for score, vector_id in matches[:top_k]:
            values, metadata = space[vector_id]
            match: dict[str, Any] = {"id": vector_id, "score": score, "values": []}
            if body.get("includeValues"):
                match["values"] = [float(v) for v in values]
            if body.get("includeMetadata") and metadata:
                match["metadata"] = metadata
            out.append(match)
        return {"matches": out, "namespace": namespace, "usage": {"readUnits": 5}}

    def fetch(self, index: EmulatedIndex, query: dict[str, list[str]]) -> dict[str, Any]:
        ids = query.get("ids", [])
        namespace = _namespace((query.get("namespace") or [""])[0])
        if not ids:
            raise _ApiError(400, "ids must contain at least one id")
        if len(ids) > MAX_FETCH_IDS:
            raise _ApiError(400, f"Fetch accepts at most {MAX_FETCH_IDS} ids ({len(ids)} given)")
        with self._lock:
            space = index.namespaces.get(namespace, {})
            found = {i: space[i] for i in ids if i in space}
        vectors = {}
        for vector_id, (values, metadata) in found.items():
            entry: dict[str, Any] = {"id": vector_id, "values": [float(v) for v in values]}
            if metadata:
                entry["metadata"] = metadata
            vectors[vector_id] = entry
        return {"vectors": vectors, "namespace": namespace, "usage": {"readUnits": 1}}

    def delete(self, index: EmulatedIndex, body: dict[str, Any]) -> dict[str, Any]:
        namespace = _namespace(body.get("namespace"))
        ids = body.get("ids")
        delete_all = body.get("deleteAll", False)
        condition = body.get("filter")
        if sum(x is not None and x is not False for x in (ids, condition, delete_all)) != 1:
            raise _ApiError(400, "Exactly one of ids, deleteAll or filter must be given")
        if ids is not None and len(ids) > MAX_DELETE_IDS:
            raise _ApiError(400, f"Delete accepts at most {MAX_DELETE_IDS} ids ({len(ids)} given)")
        if condition is not None:
            check_filter(condition)
        with self._lock:
            space = index.namespaces.get(namespace)
            if space is None:
                if delete_all:
                    raise _ApiError(404, "Namespace not found")
                return {}
            if delete_all:
                del index.namespaces[namespace]
            elif ids is not None:
                for vector_id in ids:
                    space.pop(vector_id, None)
            else:
                assert isinstance(condition, dict)
                for vector_id in [i for i, (_, m) in space.items() if evaluate(condition, m)]:
                    del space[vector_id]
            if not space:
                index.namespaces.pop(namespace, None)
        return {}

    def list_ids(self, index: EmulatedIndex, query: dict[str, list[str]]) -> dict[str, Any]:
        namespace = _namespace((query.get("namespace") or [""])[0])
        prefix = (query.get("prefix") or [""])[0]
        raw_limit = (query.get("limit") or [str(MAX_LIST_LIMIT)])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
            raise _ApiError(400, f"limit must be between 1 and {MAX_LIST_LIMIT}")
        limit = int(raw_limit)
        tokens = query.get("paginationToken")
        token = tokens[0] if tokens else None
        after = "" if token is None else base64.urlsafe_b64decode(token.encode()).decode()
        with self._lock:
            ids = sorted(i for i in index.namespaces.get(namespace, {}) if i.startswith(prefix))
        if token is not None:
            ids = [i for i in ids if i > after]
        page = ids[:limit]
        response: dict[str, Any] = {
            "vectors": [{"id": i} for i in page],
            "namespace": namespace,
            "usage": {"readUnits": 1},
        }
        if len(ids) > limit:
            response["pagination"] = {"next": base64.urlsafe_b64encode(page[-1].encode()).decode()}
        return response

    def stats(self, index: EmulatedIndex, body: dict[str, Any]) -> dict[str, Any]:
        condition = body.get("filter")
        if condition is not None:
            check_filter(condition)
        with self._lock:
            counts = {
                ns: sum(1 for _, m in space.values() if condition is None or evaluate(condition, m))
                for ns, space in index.namespaces.items()
            }
        return {
            "namespaces": {ns: {"vectorCount": n} for ns, n in sorted(counts.items()) if n},
            "dimension": index.dimension,
            "indexFullness": 0.0,
            "totalVectorCount": sum(counts.values()),
            "metric": index.metric,
            "vectorType": "dense",
        }


def _namespace(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _ApiError(400, "namespace must be a string")
    return value


def _metadata(vector: dict[str, Any], vector_id: str) -> dict[str, Any]:
    raw = vector.get("metadata")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _ApiError(400, f"Metadata of vector {vector_id} must be an object")
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue  # Pinecone strips null values rather than refusing them
        if isinstance(value, bool | str):
            kept[key] = value
        elif isinstance(value, int | float):
            kept[key] = float(value)  # every number is a 64-bit float to Pinecone
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            kept[key] = list(value)
        else:
            raise _ApiError(
                400,
                f"Metadata value must be a string, number, boolean or list of strings, got "
                f"'{json.dumps(value)}' for field '{key}'",
            )
    if len(json.dumps(kept).encode()) > MAX_METADATA_BYTES:
        raise _ApiError(400, f"Metadata size exceeds the limit of {MAX_METADATA_BYTES} bytes")
    return kept


def _score(metric: str, values: np.ndarray[Any, Any], query: np.ndarray[Any, Any]) -> float:
    if metric == "dotproduct":
        return float(values @ query)
    if metric == "euclidean":
        return float(np.sum((values - query) ** 2))
    norm = float(np.linalg.norm(values) * np.linalg.norm(query))
    return 0.0 if norm == 0.0 else float(values @ query) / norm


# -- the reference filter evaluator ------------------------------------------------------

_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists")


def check_filter(condition: Any) -> None:
    """Raise a 400 for a filter Pinecone would refuse."""
    if not isinstance(condition, dict):
        raise _ApiError(400, f"Invalid filter: expected an object, got {condition!r}")
    for key, value in condition.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise _ApiError(400, f"Invalid filter: {key} needs a non-empty array")
            for part in value:
                check_filter(part)
        elif key.startswith("$"):
            raise _ApiError(400, f"Invalid filter: unknown operator {key}")
        elif isinstance(value, dict):
            if not value:
                raise _ApiError(400, f"Invalid filter: no operator for field {key}")
            for op, operand in value.items():
                _check_operand(op, operand)
        else:
            _check_operand("$eq", value)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_operand(op: str, operand: Any) -> None:
    if op not in _OPERATORS:
        raise _ApiError(400, f"Invalid filter: unknown operator {op}")
    if op == "$exists":
        ok = isinstance(operand, bool)
    elif op in ("$in", "$nin"):
        ok = isinstance(operand, list) and all(
            isinstance(x, str | bool) or _is_number(x) for x in operand
        )
    elif op in ("$eq", "$ne"):
        ok = isinstance(operand, str | bool) or _is_number(operand)
    else:
        ok = _is_number(operand)
    if not ok:
        raise _ApiError(400, f"Invalid filter: bad operand {operand!r} for {op}")


def _same(a: Any, b: Any) -> bool:
    """Pinecone's equality: booleans, strings and numbers never equal one another."""
    kinds = (type(a) is bool, type(b) is bool, isinstance(a, str), isinstance(b, str))
    if kinds[0] != kinds[1] or kinds[2] != kinds[3]:
        return False
    if kinds[0] or kinds[2]:
        return bool(a == b)
    return _is_number(a) and _is_number(b) and float(a) == float(b)


def _candidates(value: Any) -> Iterator[Any]:
    """A list of strings matches through any of its elements."""
    if isinstance(value, list):
        yield from value
    else:
        yield value


def evaluate(condition: dict[str, Any], metadata: dict[str, Any]) -> bool:
    """Whether ``metadata`` satisfies the (already checked) filter ``condition``."""
    for key, value in condition.items():
        if key == "$and":
            ok = all(evaluate(part, metadata) for part in value)
        elif key == "$or":
            ok = any(evaluate(part, metadata) for part in value)
        else:
            ops = value if isinstance(value, dict) else {"$eq": value}
            ok = all(_apply(op, operand, key, metadata) for op, operand in ops.items())
        if not ok:
            return False
    return True


def _apply(op: str, operand: Any, key: str, metadata: dict[str, Any]) -> bool:
    present = key in metadata
    if op == "$exists":
        return present is operand
    if not present:
        # MongoDB's rule, which Pinecone's filter language follows: a missing field is
        # "not equal" to anything and "not in" any list, and matches nothing else.
        return op in ("$ne", "$nin")
    value = metadata[key]
    if op == "$eq":
        return any(_same(v, operand) for v in _candidates(value))
    if op == "$ne":
        return not any(_same(v, operand) for v in _candidates(value))
    if op == "$in":
        return any(_same(v, o) for v in _candidates(value) for o in operand)
    if op == "$nin":
        return not any(_same(v, o) for v in _candidates(value) for o in operand)
    if not _is_number(value):
        return False
    number, bound = float(value), float(operand)
    return {
        "$gt": number > bound,
        "$gte": number >= bound,
        "$lt": number < bound,
        "$lte": number <= bound,
    }[op]


# -- HTTP --------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    emulator: PineconeEmulator
    # One request per connection (HTTP/1.0): no keep-alive thread outlives a response.
    protocol_version = "HTTP/1.0"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator keeps its own log."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        index_name: str | None = None
        path = url.path
        if path.startswith(DATA_PREFIX):
            index_name, _, rest = path[len(DATA_PREFIX) :].partition("/")
            index_name = unquote(index_name)
            path = "/" + rest
        query = parse_qs(url.query, keep_blank_values=True)
        count, namespace = _summary(path, raw, query)
        emulator = self.emulator

        fault = emulator._take_fault(path)
        if fault is not None and fault.status is None:
            emulator._record(LoggedRequest(method, index_name, path, 0, len(raw), count, namespace))
            self.close_connection = True
            return  # nothing is written: the client sees the connection drop
        try:
            if fault is not None:
                assert fault.status is not None
                raise _ApiError(fault.status, f"injected fault {fault.status}")
            if self.headers.get("Api-Key") != emulator.api_key:
                raise _ApiError(401, "Invalid API Key", control=index_name is None)
            payload = self._route(method, index_name, path, raw, query)
            status = 200
        except _ApiError as exc:
            status, payload = exc.status, exc.body()
        emulator._record(
            LoggedRequest(method, index_name, path, status, len(raw), count, namespace)
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fault is not None and fault.retry_after is not None:
            self.send_header("Retry-After", str(fault.retry_after))
        self.end_headers()
        self.wfile.write(data)

    def _route(
        self,
        method: str,
        index_name: str | None,
        path: str,
        raw: bytes,
        query: dict[str, list[str]],
    ) -> dict[str, Any]:
        emulator = self.emulator
        if index_name is None:
            if method == "GET" and path.startswith("/indexes/"):
                return emulator.describe_index(unquote(path[len("/indexes/") :]))
            raise _ApiError(404, f"No route for {method} {path}", control=True)
        index = emulator._indexes.get(index_name)
        if index is None:
            raise _ApiError(404, f"Index {index_name} not found")
        if method == "POST" and path == "/vectors/upsert" and len(raw) > MAX_REQUEST_BYTES:
            raise _ApiError(
                400,
                f"Request size {len(raw) / 1e6:.1f}MB exceeds the maximum supported size of 2MB",
            )
        body: dict[str, Any] = {}
        if method == "POST":
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                raise _ApiError(400, f"Invalid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise _ApiError(400, "The request body must be a JSON object")
        routes = {
            ("POST", "/vectors/upsert"): lambda: emulator.upsert(index, body),
            ("POST", "/query"): lambda: emulator.query(index, body),
            ("GET", "/vectors/fetch"): lambda: emulator.fetch(index, query),
            ("POST", "/vectors/delete"): lambda: emulator.delete(index, body),
            ("GET", "/vectors/list"): lambda: emulator.list_ids(index, query),
            ("POST", "/describe_index_stats"): lambda: emulator.stats(index, body),
        }
        route = routes.get((method, path))
        if route is None:
            raise _ApiError(404, f"No route for {method} {path}")
        return route()


def _summary(path: str, raw: bytes, query: dict[str, list[str]]) -> tuple[int, str | None]:
    """(vectors or ids the request carries, its namespace), for the log."""
    if path == "/vectors/fetch":
        return len(query.get("ids", [])), (query.get("namespace") or [""])[0]
    if path == "/vectors/list":
        return 0, (query.get("namespace") or [""])[0]
    try:
        body = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return 0, None
    if not isinstance(body, dict):
        return 0, None
    items = body.get("vectors") if path == "/vectors/upsert" else body.get("ids")
    return (len(items) if isinstance(items, list) else 0), body.get("namespace", "")
