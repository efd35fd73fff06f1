"""The HTTP routes: module-level handlers, with the settings, store, manager and
token check as typed dependencies taken from ``app.state`` (set by
:func:`pocketbatch.server.create_app`).

Three routers: :data:`public` (health: no token), :data:`api` (everything else
under ``/api/v1``: the token when one is set) and :data:`protected_docs` (the
schema behind the token, mounted only when a token is set).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from pocketbatch import __version__
from pocketbatch._errors import LoadError
from pocketbatch.batch._jsonl import encode_record
from pocketbatch.loader import LoadedFlow
from pocketbatch.server._bodies import (
    JSONL_TYPES,
    body_bytes,
    body_json,
    flow_text,
    jsonl_submission,
    lines_of,
    max_concurrent_of,
)
from pocketbatch.server._manager import BatchManager
from pocketbatch.server._models import (
    BatchCreated,
    BatchList,
    BatchSubmission,
    BatchView,
    Health,
    RunRequest,
    StorageProblemView,
    UsageView,
    inline_schema,
    request_body,
)
from pocketbatch.server._settings import ServerSettings
from pocketbatch.server._store import BatchRow, Store

__all__ = ("API", "api", "protected_docs", "public")

API = "/api/v1"


# -- dependencies ----------------------------------------------------------------------


def settings_of(request: Request) -> ServerSettings:
    """The settings the app was created with."""
    settings: ServerSettings = request.app.state.settings
    return settings


def store_of(request: Request) -> Store:
    """The running app's store (set while the app runs)."""
    store: Store = request.app.state.store
    return store


def manager_of(request: Request) -> BatchManager:
    """The running app's batch manager (set while the app runs)."""
    manager: BatchManager = request.app.state.manager
    return manager


Settings = Annotated[ServerSettings, Depends(settings_of)]
Storage = Annotated[Store, Depends(store_of)]
Manager = Annotated[BatchManager, Depends(manager_of)]


def authorize(request: Request, settings: Settings) -> None:
    """401 unless the request carries ``Authorization: Bearer <token>`` (when a token is set)."""
    if settings.token is None:
        return
    given = request.headers.get("authorization", "")
    expected = f"Bearer {settings.token}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>'")


public = APIRouter(prefix=API)
api = APIRouter(prefix=API, dependencies=[Depends(authorize)])
protected_docs = APIRouter(dependencies=[Depends(authorize)])


# -- helpers -----------------------------------------------------------------------------


async def load_or_422(manager: BatchManager, text: str) -> LoadedFlow:
    """The compiled flow (in a worker thread); 422 when it does not load."""
    try:
        return await run_in_threadpool(manager.load, text)
    except LoadError as exc:
        raise HTTPException(422, f"the flow does not load: {exc}") from None


def batch_or_404(store: Store, batch_id: str) -> BatchRow:
    """The stored batch; 404 when there is none."""
    row = store.get_batch(batch_id)
    if row is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    return row


def described(row: BatchRow, store: Store, manager: BatchManager) -> BatchView:
    """A batch's view: its counts, what runs now, and a storage problem it waits on."""
    problem = store.storage_problem  # a running batch waits for it
    waits = problem is not None and manager.running(row.id)
    return BatchView(
        **row.to_dict(),
        running=manager.in_flight.get(row.id, 0),
        storage_error=StorageProblemView(**problem.to_dict()) if problem and waits else None,
        usage=_usage(manager.usage_of(row.id, row.usage)),
    )


def _usage(spent: dict[str, int] | None) -> UsageView | None:
    return UsageView(**spent) if spent and any(spent.values()) else None


_NO_SPACE: dict[int | str, dict[str, Any]] = {
    507: {"description": "the server's disk is full: nothing was stored"}
}
# The status schema in place (not a $ref), so that storage_error reads where it is.
_STATUS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": inline_schema(BatchView)}}}
}


# -- routes ------------------------------------------------------------------------------


@protected_docs.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    """The schema, behind the token."""
    return JSONResponse(request.app.openapi())


@public.get("/health")
async def health() -> Health:
    """Whether the server is up (no token needed)."""
    return Health(status="ok", version=__version__)


@api.post(
    "/batches",
    status_code=201,
    openapi_extra={"requestBody": request_body(BatchSubmission)},
    responses=_NO_SPACE,
)
async def submit(request: Request, settings: Settings, manager: Manager) -> BatchCreated:
    """Accept a batch: stored durably before this returns, then run in the background.

    The body is JSON ``{flow, inputs | inputs_jsonl, max_concurrent}``, or JSONL
    (``Content-Type: application/x-ndjson``) whose first line is
    ``{flow, max_concurrent}`` and whose other lines are the inputs.
    """
    limits = settings.limits
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    jsonl: bytes | None = None
    if kind in JSONL_TYPES:
        data, jsonl = await run_in_threadpool(jsonl_submission, await body_bytes(request, limits))
    else:
        data = await body_json(request, limits)
    text = flow_text(data, limits)
    flow = await load_or_422(manager, text)
    lines = await run_in_threadpool(lines_of, data, jsonl, limits)
    limit = max_concurrent_of(data, limits)
    batch_id = await manager.submit(text, lines, max_concurrent=limit)
    return BatchCreated(batch_id=batch_id, warnings=[str(w) for w in flow.warnings])


@api.get("/batches")
async def list_batches(
    store: Storage, manager: Manager, limit: int = 50, offset: int = 0
) -> BatchList:
    """Batches, newest first."""
    if not 1 <= limit <= 1000 or offset < 0:
        raise HTTPException(422, "limit must be 1..1000 and offset >= 0")
    rows, total = store.list_batches(limit=limit, offset=offset)
    return BatchList(batches=[described(r, store, manager) for r in rows], total=total)


@api.get("/batches/{batch_id}", response_model=None, responses=_STATUS)
async def get_batch(batch_id: str, store: Storage, manager: Manager) -> BatchView:
    """A batch's status and counts."""
    return described(batch_or_404(store, batch_id), store, manager)


@api.get("/batches/{batch_id}/outputs", response_model=None)
async def outputs(
    batch_id: str, store: Storage, manager: Manager, wait: bool = False
) -> StreamingResponse:
    """The output records in input order, as JSONL (``?wait=true``: once finished)."""
    batch_or_404(store, batch_id)
    if wait:
        await manager.wait(batch_id)

    def lines() -> Iterator[bytes]:
        for record in store.outputs(batch_id):
            yield record + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@api.post("/batches/{batch_id}/cancel")
async def cancel(batch_id: str, store: Storage, manager: Manager) -> BatchView:
    """Stop a running batch; the records already made are kept."""
    batch_or_404(store, batch_id)
    await manager.cancel(batch_id)
    return described(batch_or_404(store, batch_id), store, manager)


@api.post("/runs", response_model=None, openapi_extra={"requestBody": request_body(RunRequest)})
async def run(request: Request, settings: Settings, manager: Manager) -> Response:
    """Run a flow once on one input; the FlowResult (a result that is not JSON is
    an ``INVALID_OUTPUT`` failure, as in a batch's record)."""
    data = await body_json(request, settings.limits)
    flow = await load_or_422(manager, flow_text(data, settings.limits))
    # The server's provider limiters, a client pool for this run (closed as it ends).
    async with manager.run_services() as services:
        result = await flow.run_async(data.get("input"), services=services)
    # As a batch record: a result JSON cannot hold is an INVALID_OUTPUT failure.
    body, _ = await run_in_threadpool(encode_record, result.to_dict())
    return Response(body, media_type="application/json")
