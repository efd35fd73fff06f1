"""The server's durable store: one SQLite file in WAL mode, one writer thread.

Every write goes through a single thread that groups whatever is queued into one
transaction, so thousands of per-item outputs cost a handful of commits, and a
caller that needs durability (a batch is accepted only once its inputs are on
disk) waits for the commit of its own write. Readers use their own connections;
WAL lets them read while the writer writes.

Tables: ``batches`` (one row per batch: the flow text, status, sizes, times),
``inputs`` (every input of a batch, by index) and ``outputs`` (one record per
finished input, by index: the exact ``run-batch`` record). An input without an
output is still to do, which is all a restart needs to know to resume.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ("BatchRow", "Store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    name TEXT,
    flow TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL,
    max_concurrent INTEGER NOT NULL,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS inputs (
    batch_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    item BLOB NOT NULL,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    batch_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (batch_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batches_by_created ON batches (created);
"""

Write = Callable[[sqlite3.Connection], Any]


@dataclass(frozen=True)
class BatchRow:
    """A batch as stored, with its counts."""

    id: str
    name: str | None
    flow: str
    status: str
    total: int
    max_concurrent: int
    created: float
    finished: float | None
    done: int
    succeeded: int

    @property
    def failed(self) -> int:
        return self.done - self.succeeded

    def to_dict(self) -> dict[str, Any]:
        """The API's view of the batch (without the flow text)."""
        return {
            "batch_id": self.id,
            "name": self.name,
            "status": self.status,
            "total": self.total,
            "done": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.total - self.done,
            "max_concurrent": self.max_concurrent,
            "created": self.created,
            "finished": self.finished,
        }


class Store:
    """A SQLite file holding batches, their inputs and their outputs.

    Args:
        path: the database file.
        max_pages: a cap on the database's size in pages (SQLite's
            ``max_page_count``; ``None``: none). Writes needing more pages fail
            exactly as on a full disk. Tests use it to fill the "disk" for real.

    Attributes:
        max_pages: the cap, to change while running: a value below the database's
            size means "full now", ``None`` or a higher value frees space. The
            writer applies a change before its next attempt.

    Example:
        >>> import asyncio, tempfile, pathlib
        >>> store = Store(pathlib.Path(tempfile.mkdtemp()) / "pb.db")
        >>> async def demo():
        ...     await store.create_batch("b1", "output: 1", [b"{}"], max_concurrent=2)
        ...     await store.add_outputs([("b1", 0, True, b'{"index":0}')])
        ...     return store.get_batch("b1").done
        >>> asyncio.run(demo())
        1
        >>> store.close()
    """

    def __init__(self, path: str | Path, *, max_pages: int | None = None) -> None:
        self.path = Path(path)
        self.max_pages = max_pages
        self._applied_max_pages: int | None = None
        self._queue: queue.Queue[tuple[Write, Future[Any]] | None] = queue.Queue()
        self._local = threading.local()
        writer = self._connect()
        writer.executescript(_SCHEMA)
        writer.commit()
        self._thread = threading.Thread(
            target=self._write_loop, args=(writer,), name="pocketbatch-store", daemon=True
        )
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    # -- writing -------------------------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                conn.close()
                return
            batch = [first]
            while len(batch) < 1000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(more)
            outcomes: list[tuple[bool, Any]] = []
            try:
                self._apply_max_pages(conn)
                conn.execute("BEGIN IMMEDIATE")
                for write, _ in batch:
                    # Each write in its own savepoint: one failing write must not
                    # undo the others grouped with it.
                    conn.execute("SAVEPOINT one")
                    try:
                        outcomes.append((True, write(conn)))
                        conn.execute("RELEASE one")
                    except Exception as exc:
                        conn.execute("ROLLBACK TO one")
                        conn.execute("RELEASE one")
                        outcomes.append((False, exc))
                conn.execute("COMMIT")
            except BaseException as exc:  # the commit itself failed: nothing was written
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), (ok, value) in zip(batch, outcomes):
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _apply_max_pages(self, conn: sqlite3.Connection) -> None:
        wanted = self.max_pages
        if wanted != self._applied_max_pages:
            # Lifting the cap means SQLite's own default (max_page_count cannot be unset).
            conn.execute(f"PRAGMA max_page_count = {int(wanted or 4294967294)}")
            self._applied_max_pages = wanted

    def write(self, fn: Write) -> Future[Any]:
        """Queue ``fn(connection)`` to run in the writer's next transaction."""
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        return future

    async def _write(self, fn: Write) -> Any:
        return await asyncio.wrap_future(self.write(fn))

    async def create_batch(
        self,
        batch_id: str,
        flow: str,
        inputs: Iterable[bytes],
        *,
        max_concurrent: int,
        name: str | None = None,
    ) -> int:
        """Store a batch and all its inputs; returns once they are committed."""
        items = list(inputs)

        def insert(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO batches (id, name, flow, status, total, max_concurrent, created) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (batch_id, name, flow, len(items), max_concurrent, time.time()),
            )
            conn.executemany(
                "INSERT INTO inputs (batch_id, idx, item) VALUES (?, ?, ?)",
                ((batch_id, i, item) for i, item in enumerate(items)),
            )
            return len(items)

        count: int = await self._write(insert)
        return count

    async def add_outputs(self, rows: Iterable[tuple[str, int, bool, bytes]]) -> None:
        """Store output records; one already stored for an index is kept (never twice)."""
        data = [(b, i, int(ok), rec) for b, i, ok, rec in rows]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO outputs (batch_id, idx, ok, record) VALUES (?, ?, ?, ?)",
                data,
            )

        await self._write(insert)

    def add_outputs_nowait(self, rows: list[tuple[str, int, bool, bytes]]) -> Future[Any]:
        """Queue output records without waiting for the commit."""
        data = [(b, i, int(ok), rec) for b, i, ok, rec in rows]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO outputs (batch_id, idx, ok, record) VALUES (?, ?, ?, ?)",
                data,
            )

        return self.write(insert)

    async def set_status(self, batch_id: str, status: str, *, finished: bool) -> None:
        """Mark a batch ``status`` (and finished now, when ``finished``)."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE batches SET status = ?, finished = ? WHERE id = ?",
                (status, time.time() if finished else None, batch_id),
            )

        await self._write(update)

    # -- reading ------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def get_batch(self, batch_id: str) -> BatchRow | None:
        """A batch with its counts, or ``None``."""
        conn = self._reader()
        row = conn.execute(
            "SELECT id, name, flow, status, total, max_concurrent, created, finished "
            "FROM batches WHERE id = ?",
            (batch_id,),
        ).fetchone()
        if row is None:
            return None
        done, ok = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(ok), 0) FROM outputs WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        id_, name, flow, status, total, max_concurrent, created, finished = row
        return BatchRow(id_, name, flow, status, total, max_concurrent, created, finished, done, ok)

    def list_batches(self, *, limit: int, offset: int) -> tuple[list[BatchRow], int]:
        """Batches, newest first, and how many there are in all."""
        conn = self._reader()
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM batches ORDER BY created DESC, id LIMIT ? OFFSET ?",
                (limit, offset),
            )
        ]
        total = conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        rows = [self.get_batch(i) for i in ids]
        return [r for r in rows if r is not None], total

    def unfinished(self) -> list[str]:
        """Ids of batches still running (to resume after a restart)."""
        conn = self._reader()
        return [r[0] for r in conn.execute("SELECT id FROM batches WHERE status = 'running'")]

    def pending_inputs(self, batch_id: str, *, chunk: int = 500) -> Iterator[tuple[int, bytes]]:
        """``(index, input)`` for each input with no output yet, in order, read in chunks."""
        conn = self._reader()
        after = -1
        while True:
            rows = conn.execute(
                "SELECT i.idx, i.item FROM inputs i LEFT JOIN outputs o "
                "ON o.batch_id = i.batch_id AND o.idx = i.idx "
                "WHERE i.batch_id = ? AND i.idx > ? AND o.idx IS NULL ORDER BY i.idx LIMIT ?",
                (batch_id, after, chunk),
            ).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def outputs(self, batch_id: str, *, chunk: int = 1000) -> Iterator[bytes]:
        """The stored output records of a batch, in input order, read in chunks."""
        conn = self._reader()
        after = -1
        while True:
            rows = conn.execute(
                "SELECT idx, record FROM outputs WHERE batch_id = ? AND idx > ? "
                "ORDER BY idx LIMIT ?",
                (batch_id, after, chunk),
            ).fetchall()
            if not rows:
                return
            for _, record in rows:
                yield record
            after = rows[-1][0]

    def close(self) -> None:
        """Finish queued writes and close."""
        self._queue.put(None)
        self._thread.join()
