"""The blob builtins: ``/builtin/put_blob`` and ``/builtin/get_blob``, as in Stepflow 0.13.

* ``/builtin/put_blob``: ``{data, blob_type?: data|flow}`` → ``{blob_id}``, the id
  Stepflow gives the same value (:func:`~pocketbatch.loader._blobs.blob_id`).
* ``/builtin/get_blob``: ``{blob_id}`` → ``{data}``.

Blobs live in the run's store (:attr:`RunServices.blobs
<pocketbatch.loader._services.RunServices.blobs>`: in memory for a local run, in the
server's SQLite database for a remote batch). Outside a run (a component called by
hand, ``ctx.services is None``) a store is made for the one call, so a blob put there
is gone when the call returns.
"""

from __future__ import annotations

from typing import Any

from pocketbatch.loader._blobs import BLOB_TYPES, BlobStore, MemoryBlobStore
from pocketbatch.loader._builtin_base import Builtin
from pocketbatch.loader._component import CallContext

__all__ = ("GetBlob", "PutBlob", "blob_store")


def blob_store(ctx: CallContext) -> BlobStore:
    """The run's blob store, or (outside a run) a store for this call only.

    Example:
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> type(blob_store(ctx)).__name__
        'MemoryBlobStore'
    """
    return ctx.services.blobs if ctx.services is not None else MemoryBlobStore()


class PutBlob(Builtin):
    """``/builtin/put_blob``: store a JSON value, answer its content-addressed id.

    Input ``{data: any, blob_type?: "data" | "flow"}`` (``blob_type`` defaults to
    ``"data"``; a ``"flow"`` blob can be run by ``/builtin/eval`` with ``flow_id``);
    output ``{blob_id}``: the SHA-256 of the value's compact JSON, as in Stepflow.

    Example:
        >>> import asyncio
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={})
        >>> asyncio.run(PutBlob()({"data": {"a": 1}, "blob_type": "data"}, ctx))
        {'blob_id': '015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862'}
    """

    path = "/builtin/put_blob"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        if "data" not in data:
            raise self.invalid("'data' is required")
        kind = self.field(data, "blob_type", "a string") or "data"
        if kind not in BLOB_TYPES:
            raise self.invalid(f"'blob_type' must be one of {', '.join(BLOB_TYPES)}, got {kind!r}")
        return {"blob_id": await blob_store(ctx).put(data["data"], kind)}


class GetBlob(Builtin):
    """``/builtin/get_blob``: the value stored under ``blob_id``.

    Input ``{blob_id: str}``; output ``{data}``. An unknown id fails the step with
    ``COMPONENT_FAILED`` ``"Blob not found: <id>"`` (``data: {blob_id}``).

    Example:
        >>> import asyncio
        >>> from pocketbatch.loader._services import RunServices
        >>> ctx = CallContext(step_id="s", flow_dir=None, variables={}, services=RunServices())
        >>> ref = asyncio.run(PutBlob()({"data": [1, 2]}, ctx))["blob_id"]
        >>> asyncio.run(GetBlob()({"blob_id": ref}, ctx))
        {'data': [1, 2]}
    """

    path = "/builtin/get_blob"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        data = self.mapping(input)
        ref = self.field(data, "blob_id", "a string", required=True)
        value, _kind = await blob_store(ctx).get(ref)
        return {"data": value}
