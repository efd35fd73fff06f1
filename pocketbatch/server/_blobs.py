"""The server's blob store: a remote batch's blobs in the server's SQLite database.

``/builtin/put_blob`` (and a Stepflow component's ``context.put_blob``) in a batch run by
the server store here, in a ``blobs`` table of the server's database file, so blobs
outlive the run and the server's restarts. Ids are Stepflow's content-addressed ones
(:func:`~pocketbatch.loader._blobs.blob_id`): the same value is one row, whichever batch
stored it.

The store is named by its file only, so it travels to worker processes (the process
executor): each process opens its own connection on first use.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

import orjson

from pocketbatch.loader._blobs import BlobType, blob_not_found, check_blob_type, encoded

__all__ = ("SqliteBlobStore",)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    data BLOB NOT NULL
)
"""


class SqliteBlobStore:
    """Blobs in a SQLite file (a :class:`~pocketbatch.loader._blobs.BlobStore`).

    Args:
        path: the database file (the server's ``--db``).

    Example:
        >>> import asyncio, pathlib, pickle, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "pb.db"
        >>> ref = asyncio.run(SqliteBlobStore(path).put({"k": 1}))
        >>> again = pickle.loads(pickle.dumps(SqliteBlobStore(path)))
        >>> asyncio.run(again.get(ref))
        ({'k': 1}, 'data')
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    async def put(self, data: Any, blob_type: BlobType = "data") -> str:
        check_blob_type(blob_type)
        ref, payload = encoded(data)  # the JSON is hashed and stored: made once
        await asyncio.to_thread(self._put, ref, blob_type, payload)
        return ref

    def _put(self, ref: str, blob_type: str, payload: bytes) -> None:
        with self._lock:
            self._connection().execute(
                "INSERT OR IGNORE INTO blobs (id, type, data) VALUES (?, ?, ?)",
                (ref, blob_type, payload),
            )

    async def get(self, blob: str) -> tuple[Any, BlobType]:
        row = await asyncio.to_thread(self._get, blob)
        if row is None:
            raise blob_not_found(blob)
        return orjson.loads(row[1]), cast(BlobType, row[0])

    def _get(self, blob: str) -> tuple[str, bytes] | None:
        with self._lock:
            found = (
                self._connection()
                .execute("SELECT type, data FROM blobs WHERE id = ?", (blob,))
                .fetchone()
            )
        return None if found is None else (found[0], found[1])

    def close(self) -> None:
        """Close this process's connection (it reopens on the next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"<SqliteBlobStore {str(self.path)!r}>"
