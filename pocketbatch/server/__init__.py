"""The pocketbatch server: batches over HTTP, kept in SQLite (the ``server`` extra).

``pocketbatch serve`` runs :func:`create_app` under uvicorn. The store
(:mod:`pocketbatch.server._store`) and the batch manager
(:mod:`pocketbatch.server._manager`) need only the standard library and the batch
layer; the HTTP app needs FastAPI.

Modules:

* ``_settings``: :class:`ServerSettings` and :class:`Limits` (no FastAPI).
* ``_app``: :func:`create_app`: the FastAPI app, its lifespan (store, manager),
  middleware and routers.
* ``_routes``: the routes, with typed dependencies; ``_models``: their bodies as
  pydantic models (the OpenAPI schema); ``_bodies``: reading submitted JSON/JSONL.
* ``_guard``: body limit middleware, slow-client timeouts, the connection cap.
* ``_serve``: ``pocketbatch serve`` (uvicorn, loopback unless a token is set).
* ``_store``: the SQLite store; ``_manager``: runs and resumes batches.
"""

from pocketbatch.server._app import create_app
from pocketbatch.server._settings import Limits, ServerSettings

__all__ = ("Limits", "ServerSettings", "create_app")
