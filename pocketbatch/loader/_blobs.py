"""Blobs: content-addressed JSON values a run can store and fetch by id.

Stepflow's ``/builtin/put_blob`` stores a JSON value and answers its id; ``/builtin/get_blob``
and a worker's ``get_blob`` fetch it back; a blob of type ``"flow"`` can be run by its id
(``/builtin/eval`` with ``flow_id``). The id is Stepflow's: the SHA-256 of the value's
compact JSON (keys in their given order, integers kept), as a lowercase hex string.

A run keeps its blobs in memory (:class:`MemoryBlobStore`, made by the run's
:class:`~pocketbatch.loader._services.RunServices`); the server passes a store of its own
that keeps them in its SQLite database, so a remote batch's blobs outlive the run.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Protocol

import orjson

from pocketbatch._errors import ComponentError

__all__ = (
    "BlobStore",
    "BlobType",
    "MemoryBlobStore",
    "blob_id",
    "blob_not_found",
    "check_blob_type",
    "encoded",
)

BlobType = Literal["data", "flow", "binary"]
"""What a blob holds: a JSON value, a flow (runnable by id), or raw bytes (base64 text)."""

BLOB_TYPES: tuple[BlobType, ...] = ("data", "flow", "binary")


def blob_id(data: Any) -> str:
    """The id Stepflow gives a blob: SHA-256 of its compact JSON.

    Example:
        >>> blob_id({"a": 1})
        '015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862'
        >>> blob_id({"a": 1}) == blob_id({"a": 1.0})
        False
    """
    return encoded(data)[0]


def encoded(data: Any) -> tuple[str, bytes]:
    """``(blob_id(data), the compact JSON it hashes)``, for a store that keeps the JSON.

    Example:
        >>> encoded([1, "a"])[1]
        b'[1,"a"]'
    """
    payload = orjson.dumps(data, option=orjson.OPT_PASSTHROUGH_DATACLASS)
    return hashlib.sha256(payload).hexdigest(), payload


def check_blob_type(blob_type: str) -> None:
    """Raise ``INVALID_INPUT`` unless ``blob_type`` is one of :data:`BLOB_TYPES`.

    Example:
        >>> check_blob_type("flow")
    """
    if blob_type not in BLOB_TYPES:
        allowed = ", ".join(BLOB_TYPES)
        message = f"blob_type must be one of {allowed}, not {blob_type!r}"
        raise ComponentError("INVALID_INPUT", message)


def blob_not_found(blob: str) -> ComponentError:
    """The error a missing blob gives (Stepflow's code and wording).

    Example:
        >>> blob_not_found("abc").code
        'COMPONENT_FAILED'
    """
    return ComponentError("COMPONENT_FAILED", f"Blob not found: {blob}", data={"blob_id": blob})


class BlobStore(Protocol):
    """Where a run's blobs live. Implementations must be safe to share by every item of
    a run (one event loop); ``put`` of the same value twice is one blob."""

    async def put(self, data: Any, blob_type: BlobType = "data") -> str:
        """Store ``data`` and answer its :func:`blob_id`."""
        ...

    async def get(self, blob: str) -> tuple[Any, BlobType]:
        """The value and type stored under ``blob``; raises :func:`blob_not_found`'s error."""
        ...


class MemoryBlobStore:
    """Blobs kept in memory for the life of a run.

    Example:
        >>> import asyncio
        >>> store = MemoryBlobStore()
        >>> ref = asyncio.run(store.put({"k": [1, 2]}))
        >>> asyncio.run(store.get(ref))
        ({'k': [1, 2]}, 'data')
        >>> len(store)
        1
    """

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[Any, BlobType]] = {}

    async def put(self, data: Any, blob_type: BlobType = "data") -> str:
        check_blob_type(blob_type)
        ref = blob_id(data)
        self._blobs.setdefault(ref, (data, blob_type))
        return ref

    async def get(self, blob: str) -> tuple[Any, BlobType]:
        found = self._blobs.get(blob)
        if found is None:
            raise blob_not_found(blob)
        return found

    def __len__(self) -> int:
        return len(self._blobs)

    def __repr__(self) -> str:
        return f"<MemoryBlobStore {len(self._blobs)} blobs>"
