"""Nested state (dicts, lists, numbers, strings, arrays) to bytes and back, never pickling.

The format is an ``.npz`` archive written with ``allow_pickle=False``: each array is one
entry, and a JSON skeleton (entry ``__state__.json``) holds everything else with
``{"__array__": key}`` placeholders. It stores parameters, optimizer state, NumPy RNG
states, metric histories and configs, and reads back exactly (bit for bit).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import SerializationError

__all__ = ["content_hash", "pack_state", "unpack_state"]

_SKELETON = "__state__.json"
_FORMAT = 1


def content_hash(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _encode(value: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise SerializationError(f"{path}: object arrays cannot be stored without pickling")
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return _encode(value.item(), arrays, path)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else {"__int__": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"__float__": repr(value)}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SerializationError(f"{path}: dictionary keys must be strings, got {k!r}")
            if k.startswith("__") and k.endswith("__"):
                raise SerializationError(f"{path}: key {k!r} is reserved")
            out[k] = _encode(v, arrays, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        items = [_encode(v, arrays, f"{path}[{i}]") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return _encode(value.detach().cpu().numpy(), arrays, path)
    raise SerializationError(
        f"{path}: a {type(value).__name__} cannot be stored; use arrays, numbers, strings, "
        "lists and dicts (live objects are never pickled)"
    )


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__int__" in value:
            return int(value["__int__"])
        if "__float__" in value:
            return float(value["__float__"])
        if "__tuple__" in value:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def pack_state(state: Mapping[str, Any]) -> bytes:
    """Serialize ``state``; raises :class:`SerializationError` for anything not storable."""
    arrays: dict[str, np.ndarray] = {}
    skeleton = _encode(state, arrays, "state")
    text = json.dumps({"format": _FORMAT, "state": skeleton}, sort_keys=True)
    buffer = io.BytesIO()
    entries: dict[str, np.ndarray] = {_SKELETON: np.frombuffer(text.encode(), dtype=np.uint8)}
    entries.update(arrays)
    np.savez(buffer, allow_pickle=False, **entries)
    return buffer.getvalue()


def unpack_state(payload: bytes) -> dict[str, Any]:
    """The state :func:`pack_state` wrote; :class:`SerializationError` if unreadable."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(bytes(arrays.pop(_SKELETON)).decode())
    except (ValueError, OSError, KeyError, EOFError, json.JSONDecodeError) as exc:
        raise SerializationError(f"not a quantum-db state archive: {exc}") from exc
    if meta.get("format") != _FORMAT:
        raise SerializationError(f"unknown state format {meta.get('format')!r}")
    state = _decode(meta["state"], arrays)
    if not isinstance(state, dict):
        raise SerializationError("the archive does not hold a state dictionary")
    return state
