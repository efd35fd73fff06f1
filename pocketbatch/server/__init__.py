"""The pocketbatch server: batches over HTTP, kept in SQLite (the ``server`` extra).

``pocketbatch serve`` runs :func:`create_app` under uvicorn. The store
(:mod:`pocketbatch.server._store`) and the batch manager
(:mod:`pocketbatch.server._manager`) need only the standard library and the batch
layer; the HTTP app needs FastAPI.
"""

from pocketbatch.server._app import create_app
from pocketbatch.server._settings import Limits, ServerSettings

__all__ = ("Limits", "ServerSettings", "create_app")
