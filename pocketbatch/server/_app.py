"""The HTTP API (FastAPI): batches in, JSONL records out, all durable in SQLite.

Endpoints, under ``/api/v1``::

    POST /batches                 {flow, inputs | inputs_jsonl, max_concurrent} -> 201 {batch_id}
    GET  /batches                 ?limit&offset -> {batches, total}
    GET  /batches/{id}            status and counts
    GET  /batches/{id}/outputs    JSONL records in input order (?wait=true: when done)
    POST /batches/{id}/cancel
    POST /runs                    {flow, input} -> the FlowResult
    GET  /health                  (no token needed)

Security: with a token, every endpoint but health needs ``Authorization: Bearer
<token>``; submitted flows can use only the server's registered components,
builtins and mocks (``/python`` imports only from ``--allow-module`` modules;
``load_file`` only inside the data folder; HTTP only to public addresses or the
``--allow-host``/``--allow-network`` ones, and the server's ``OPENAI_API_KEY`` only
to its configured base URL); request, flow and batch sizes are limited (413/422
with a message).

Storage: when the disk is full, a submission answers 507 with a message, and
running batches pause (their records are retried until stored) with a
``storage_error`` ``{message, retries, since}`` in their status until writes
succeed again; they then continue where they were.
"""

import hmac
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocketbatch._errors import LoadError, MissingExtraError

__all__ = ("Limits", "ServerSettings", "create_app")


@dataclass(frozen=True)
class Limits:
    """Sizes a request may not exceed, and how long and how many clients may take.

    Attributes:
        max_request_bytes: the whole request body (413 beyond).
        max_flow_bytes: the flow text (413 beyond).
        max_batch_items: inputs in one batch (422 beyond).
        max_concurrent: a batch's ``max_concurrent`` (422 beyond); the server's own
            ``--max-concurrent`` still caps what runs at once.
        header_timeout: seconds a client has to send a request's line and headers
            (the connection is closed after; ``pocketbatch serve`` only).
        body_timeout: seconds a request body may go without a byte (closed after).
        max_connections: connections open at once; one more gets 503 and is closed.

    Example:
        >>> Limits(max_request_bytes=1024).max_connections
        1000
    """

    max_request_bytes: int = 256 * 1024 * 1024
    max_flow_bytes: int = 1024 * 1024
    max_batch_items: int = 1_000_000
    max_concurrent: int = 10_000
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000


@dataclass(frozen=True)
class ServerSettings:
    """What ``pocketbatch serve`` was started with."""

    db: Path
    token: str | None = None
    config: Path | None = None
    allow_modules: frozenset[str] = frozenset()
    data_dir: Path = field(default_factory=Path.cwd)
    max_concurrent: int = 64
    limits: Limits = Limits()
    registry: Any = None
    executor: str = "async"
    max_workers: int | None = None
    # Outbound HTTP of submitted flows: denied to loopback, link-local, private, ...
    # addresses but for these (HOST[:PORT] and CIDR strings; ``--allow-host``,
    # ``--allow-network``). See pocketbatch.loader.NetworkPolicy.for_server.
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: frozenset[str] = frozenset()


def create_app(settings: ServerSettings) -> Any:
    """The ASGI app serving ``settings`` (needs the ``server`` extra).

    Raises:
        MissingExtraError: FastAPI is not installed.
        ValueError: an ``allow_hosts`` or ``allow_networks`` entry does not parse.
    """
    try:
        from fastapi import Depends, FastAPI, HTTPException, Request
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import JSONResponse, Response, StreamingResponse
    except ImportError:
        raise MissingExtraError("pocketbatch serve", "server") from None

    from pocketbatch import __version__
    from pocketbatch.batch._jsonl import encode_record, loads_json
    from pocketbatch.batch._lines import encode_input, input_lines
    from pocketbatch.loader import LoaderOptions, NetworkPolicy, load_flow
    from pocketbatch.server._guard import BodyLimit
    from pocketbatch.server._manager import BatchManager
    from pocketbatch.server._store import StorageError, Store

    options = LoaderOptions(
        allow_python_imports=bool(settings.allow_modules),
        python_modules=settings.allow_modules,
        load_file_root=settings.data_dir,
        network=NetworkPolicy.for_server(settings.allow_hosts, settings.allow_networks),
    )

    def compile_flow(text: str) -> Any:
        return load_flow(
            text if "\n" in text or text.lstrip().startswith("{") else text + "\n",
            registry=settings.registry,
            config=settings.config,
            options=options,
        )

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        store = Store(settings.db)
        manager = BatchManager(
            store,
            compile_flow,
            max_concurrent=settings.max_concurrent,
            executor=settings.executor,
            max_workers=settings.max_workers,
        )
        await manager.start()
        state["store"], state["manager"] = store, manager
        app.state.store = store  # for in-process tests (e.g. Store.max_pages: a full disk)
        try:
            yield
        finally:
            await manager.close()
            store.close()

    protected = settings.token is not None
    app = FastAPI(
        title="pocketbatch",
        version=__version__,
        lifespan=lifespan,
        description="Run flows over batches of inputs; results as JSONL.",
        # With a token, the schema and docs need it too (served below).
        openapi_url=None if protected else "/openapi.json",
        docs_url=None if protected else "/docs",
        redoc_url=None,
    )
    # The body limit holds while the body streams in, chunked or not (413 at once).
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_request_bytes)

    def authorize(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer <token>'")

    async def body_bytes(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > settings.limits.max_request_bytes:
            raise HTTPException(
                413, f"request larger than {settings.limits.max_request_bytes} bytes"
            )
        raw = await request.body()
        if len(raw) > settings.limits.max_request_bytes:
            raise HTTPException(
                413, f"request larger than {settings.limits.max_request_bytes} bytes"
            )
        return raw

    def jsonl_submission(raw: bytes) -> tuple[dict[str, Any], bytes]:
        """A JSONL body: the first line holds the settings ({flow, max_concurrent}),
        each following line is one input (numbered from 1, as in the inputs file).
        The settings, and the input lines as bytes (read as run-batch reads a file)."""
        head, _, rest = raw.partition(b"\n")
        try:
            data = loads_json(head)
        except ValueError as exc:
            raise HTTPException(
                400, f"line 1 of the JSONL body must be the batch settings as JSON: {exc}"
            ) from None
        if not isinstance(data, dict) or "inputs" in data or "inputs_jsonl" in data:
            raise HTTPException(
                422, "line 1 of the JSONL body must be {flow, max_concurrent}; inputs follow"
            )
        return data, rest

    def json_submission(raw: bytes) -> dict[str, Any]:
        try:
            data = loads_json(raw)  # integers beyond 64 bits stay exact
        except ValueError as exc:
            raise HTTPException(400, f"the request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "the request body must be a JSON object")
        return data

    async def body_json(request: Request) -> Any:
        # Parsing, compiling and splitting run in worker threads: a big body or flow
        # must not stall the event loop (and every other request) while it is read.
        return await run_in_threadpool(json_submission, await body_bytes(request))

    def flow_text(data: dict[str, Any]) -> str:
        text = data.get("flow")
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(422, "'flow' is required: the flow file's text (YAML or JSON)")
        if len(text.encode()) > settings.limits.max_flow_bytes:
            raise HTTPException(
                413, f"the flow is larger than {settings.limits.max_flow_bytes} bytes"
            )
        return text

    async def load_or_422(text: str) -> Any:
        try:
            return await run_in_threadpool(state["manager"].load, text)
        except LoadError as exc:
            raise HTTPException(422, f"the flow does not load: {exc}") from None

    def lines_of(data: dict[str, Any], jsonl: bytes | None = None) -> list[tuple[int, bytes]]:
        """The inputs as (line number, JSON bytes): ``jsonl`` (a JSONL body's lines),
        ``inputs_jsonl`` or ``inputs``. Lines are split and numbered as run-batch does."""
        if "inputs" in data and "inputs_jsonl" in data:
            raise HTTPException(422, "give 'inputs' (a list) or 'inputs_jsonl' (text), not both")
        lines: list[tuple[int, bytes]] = []
        if jsonl is not None:
            lines = list(input_lines(jsonl))
        elif "inputs_jsonl" in data:
            text = data["inputs_jsonl"]
            if not isinstance(text, str):
                raise HTTPException(422, "'inputs_jsonl' must be a string of JSON lines")
            lines = list(input_lines(text.encode()))
        else:
            inputs = data.get("inputs")
            if not isinstance(inputs, list):
                raise HTTPException(422, "'inputs' is required: a list of inputs (or inputs_jsonl)")
            # (an input too deep to store whole is cut so that it fails its own record)
            lines = [(i + 1, encode_input(item)) for i, item in enumerate(inputs)]
        if len(lines) > settings.limits.max_batch_items:
            raise HTTPException(
                422, f"{len(lines)} inputs; a batch may hold {settings.limits.max_batch_items}"
            )
        return lines

    def batch_or_404(batch_id: str) -> Any:
        row = state["store"].get_batch(batch_id)
        if row is None:
            raise HTTPException(404, f"no batch {batch_id!r}")
        return row

    def described(row: Any) -> dict[str, Any]:
        out = dict(row.to_dict())
        out["running"] = state["manager"].in_flight.get(row.id, 0)
        problem = state["store"].storage_problem  # a running batch waits for it
        running = problem is not None and state["manager"].running(row.id)
        out["storage_error"] = problem.to_dict() if running else None
        return out

    api = "/api/v1"

    @app.exception_handler(StorageError)
    async def no_storage(request: Request, exc: StorageError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"{exc}; the server is out of storage: free space, then submit again"},
            status_code=507,
            headers={"Retry-After": "30"},
        )

    if protected:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorize)])
        async def openapi() -> Any:
            return JSONResponse(app.openapi())

    @app.get(f"{api}/health")
    async def health() -> dict[str, Any]:
        """Whether the server is up (no token needed)."""
        return {"status": "ok", "version": __version__}

    batch_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["flow"],
                    "properties": {
                        "flow": {"type": "string", "description": "the flow file's text"},
                        "inputs": {"type": "array", "items": {}},
                        "inputs_jsonl": {"type": "string", "description": "inputs as JSONL"},
                        "max_concurrent": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
    run_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["flow"],
                    "properties": {"flow": {"type": "string"}, "input": {}},
                }
            }
        },
    }

    status_schema = {
        "type": "object",
        "properties": {
            "storage_error": {
                "description": "writes are failing (a full disk): the batch waits and "
                "retries; null once they succeed",
                "anyOf": [
                    {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "retries": {"type": "integer", "description": "failed attempts"},
                            "since": {"type": "number", "description": "Unix time"},
                        },
                    },
                    {"type": "null"},
                ],
            },
        },
        "additionalProperties": True,
    }
    status_doc: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/json": {"schema": status_schema}}}
    }
    no_space_doc: dict[int | str, dict[str, Any]] = {
        507: {"description": "the server's disk is full: nothing was stored"}
    }

    @app.post(
        f"{api}/batches",
        status_code=201,
        dependencies=[Depends(authorize)],
        openapi_extra={"requestBody": batch_body},
        responses=no_space_doc,
    )
    async def submit(request: Request) -> dict[str, Any]:
        """Accept a batch: stored durably before this returns, then run in the background.

        The body is JSON ``{flow, inputs | inputs_jsonl, max_concurrent}``, or JSONL
        (``Content-Type: application/x-ndjson``) whose first line is
        ``{flow, max_concurrent}`` and whose other lines are the inputs.
        """
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        jsonl: bytes | None = None
        if kind in ("application/x-ndjson", "application/jsonl", "application/x-jsonlines"):
            data, jsonl = await run_in_threadpool(jsonl_submission, await body_bytes(request))
        else:
            data = await body_json(request)
        text = flow_text(data)
        await load_or_422(text)
        lines = await run_in_threadpool(lines_of, data, jsonl)
        limit = data.get("max_concurrent", 16)
        top = settings.limits.max_concurrent
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= top:
            raise HTTPException(422, f"'max_concurrent' must be a whole number from 1 to {top}")
        batch_id = await state["manager"].submit(text, lines, max_concurrent=limit)
        return {"batch_id": batch_id}

    @app.get(f"{api}/batches", dependencies=[Depends(authorize)])
    async def list_batches(limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Batches, newest first."""
        if not 1 <= limit <= 1000 or offset < 0:
            raise HTTPException(422, "limit must be 1..1000 and offset >= 0")
        rows, total = state["store"].list_batches(limit=limit, offset=offset)
        return {"batches": [described(r) for r in rows], "total": total}

    @app.get(
        f"{api}/batches/{{batch_id}}",
        dependencies=[Depends(authorize)],
        responses=status_doc,
    )
    async def get_batch(batch_id: str) -> dict[str, Any]:
        """A batch's status and counts."""
        return described(batch_or_404(batch_id))

    @app.get(f"{api}/batches/{{batch_id}}/outputs", dependencies=[Depends(authorize)])
    async def outputs(batch_id: str, wait: bool = False) -> Any:
        """The output records in input order, as JSONL (``?wait=true``: once finished)."""
        batch_or_404(batch_id)
        if wait:
            await state["manager"].wait(batch_id)

        def lines() -> Iterator[bytes]:
            for record in state["store"].outputs(batch_id):
                yield record + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post(f"{api}/batches/{{batch_id}}/cancel", dependencies=[Depends(authorize)])
    async def cancel(batch_id: str) -> dict[str, Any]:
        """Stop a running batch; the records already made are kept."""
        batch_or_404(batch_id)
        await state["manager"].cancel(batch_id)
        return described(batch_or_404(batch_id))

    @app.post(
        f"{api}/runs", dependencies=[Depends(authorize)], openapi_extra={"requestBody": run_body}
    )
    async def run(request: Request) -> Any:
        """Run a flow once on one input; the FlowResult (a result that is not JSON is
        an ``INVALID_OUTPUT`` failure, as in a batch's record)."""
        data = await body_json(request)
        flow = await load_or_422(flow_text(data))
        result = await flow.run_async(data.get("input"))
        # As a batch record: a result JSON cannot hold is an INVALID_OUTPUT failure.
        body, _ = await run_in_threadpool(encode_record, result.to_dict())
        return Response(body, media_type="application/json")

    return app
