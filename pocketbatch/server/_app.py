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

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from pocketbatch._errors import MissingExtraError
from pocketbatch.server._settings import Limits, ServerSettings

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from pocketbatch.loader import LoadedFlow
    from pocketbatch.server._store import StorageError

__all__ = ("Limits", "ServerSettings", "create_app")


def create_app(settings: ServerSettings) -> FastAPI:
    """The ASGI app serving ``settings`` (needs the ``server`` extra).

    The routes live in :mod:`pocketbatch.server._routes`; they find ``settings``,
    the store and the batch manager in ``app.state`` (the store and the manager
    exist while the app runs: its lifespan opens and closes them).

    Raises:
        MissingExtraError: FastAPI is not installed.
        ValueError: an ``allow_hosts`` or ``allow_networks`` entry does not parse.
    """
    try:
        from fastapi import FastAPI
    except ImportError:
        raise MissingExtraError("pocketbatch serve", "server") from None

    from pocketbatch import __version__
    from pocketbatch.server._guard import BodyLimit
    from pocketbatch.server._routes import api, protected_docs, public
    from pocketbatch.server._store import StorageError

    protected = settings.token is not None
    app = FastAPI(
        title="pocketbatch",
        version=__version__,
        lifespan=_lifespan,
        description="Run flows over batches of inputs; results as JSONL.",
        # With a token, the schema and docs need it too (served by protected_docs).
        openapi_url=None if protected else "/openapi.json",
        docs_url=None if protected else "/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.compile_flow = flow_compiler(settings)  # ValueError now: a bad allow_* entry
    # The body limit holds while the body streams in, chunked or not (413 at once).
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_request_bytes)
    app.add_exception_handler(StorageError, _no_storage)  # type: ignore[arg-type]
    if protected:
        app.include_router(protected_docs)
    app.include_router(public)
    app.include_router(api)
    return app


def flow_compiler(settings: ServerSettings) -> Callable[[str], LoadedFlow]:
    """Compiles a submitted flow text with the server's components and restrictions.

    Raises:
        ValueError: an ``allow_hosts`` or ``allow_networks`` entry does not parse.
    """
    from pocketbatch.loader import LoaderOptions, NetworkPolicy, StepCache, load_flow
    from pocketbatch.loader._config_files import load_config

    # The config's `providers:` limits, as run-batch takes them from pocketbatch.yaml.
    parsed = load_config(settings.config) if settings.config is not None else None
    providers: tuple[tuple[str, float | None, float | None], ...] = ()
    if parsed is not None:
        providers = tuple((url, *limits) for url, limits in parsed.providers.items())
    options = LoaderOptions(
        provider_limits=providers,
        allow_python_imports=bool(settings.allow_modules),
        python_modules=settings.allow_modules,
        load_file_root=settings.data_dir,
        network=NetworkPolicy.for_server(settings.allow_hosts, settings.allow_networks),
    )

    # One step cache for every submitted flow's `cache: true` steps: the server has
    # one operator, and a key is a content address (same call, same answer).
    cache = StepCache(settings.cache) if settings.cache is not None else None

    def compile_flow(text: str) -> LoadedFlow:
        return load_flow(
            text if "\n" in text or text.lstrip().startswith("{") else text + "\n",
            registry=settings.registry,
            config=settings.config,
            options=options,
            cache=cache,
        )

    return compile_flow


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store and start the batch manager (resuming unfinished batches)."""
    from pocketbatch.server._manager import BatchManager
    from pocketbatch.server._store import Store

    settings: ServerSettings = app.state.settings
    store = Store(settings.db)
    manager = BatchManager(
        store,
        app.state.compile_flow,
        max_concurrent=settings.max_concurrent,
        executor=settings.executor,
        max_workers=settings.max_workers,
        services=settings.services,
    )
    await manager.start()
    # The store is also there for in-process tests (e.g. Store.max_pages: a full disk).
    app.state.store, app.state.manager = store, manager
    try:
        yield
    finally:
        await manager.close()
        store.close()


async def _no_storage(request: Request, exc: StorageError) -> JSONResponse:
    """507 with ``Retry-After``: the disk is full, nothing was stored."""
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"detail": f"{exc}; the server is out of storage: free space, then submit again"},
        status_code=507,
        headers={"Retry-After": "30"},
    )
