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

Storage faults (a full disk, a quota, an I/O error) never end the writer. A
write that may wait (outputs, a batch's final status) is kept and retried with
a doubling delay (0.1 s up to 30 s) until it commits, so its batch pauses and
continues once space returns, each record stored once. A write that must not
wait (accepting a batch) fails at once with :class:`StorageError`. Meanwhile
:attr:`Store.storage_problem` says what is wrong (the API shows it in the batch
status) and the ``pocketbatch.server`` logger says so: once when it starts, then
after 2, 4, 8... failed attempts, and once when writes succeed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pocketbatch._errors import PocketbatchError

__all__ = ("BatchRow", "StorageError", "StorageProblem", "Store")

_log = logging.getLogger("pocketbatch.server")

RETRY_FIRST, RETRY_MAX = 0.1, 30.0  # seconds before retrying a failed write: doubling, capped
_SQLITE_IOERR, _SQLITE_FULL = 10, 13  # primary result codes (extended codes keep them in bits 0-7)
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})

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


class StorageError(PocketbatchError):
    """The store could not write: the disk (or the database's size cap) is full,
    a quota is exceeded, or the disk reported an I/O error.

    The server answers a submission that fails so with 507 Insufficient Storage.

    Example:
        >>> print(StorageError("pb.db", "database or disk is full"))
        cannot write to pb.db: database or disk is full
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write to {path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason), self.__dict__)


@dataclass(frozen=True)
class StorageProblem:
    """Writes are failing: why, how many attempts failed, since when (Unix time).

    Example:
        >>> StorageProblem("database or disk is full", 3, 1700000000.0).to_dict()
        {'message': 'database or disk is full', 'retries': 3, 'since': 1700000000.0}
    """

    message: str
    retries: int  # failed attempts since the problem began (the first one counts)
    since: float

    def to_dict(self) -> dict[str, Any]:
        """The API's view: ``{message, retries, since}``."""
        return {"message": self.message, "retries": self.retries, "since": self.since}


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full or failing (worth retrying later).

    Example:
        >>> is_storage_error(sqlite3.OperationalError("database or disk is full"))
        True
        >>> is_storage_error(OSError(errno.ENOSPC, "No space left on device"))
        True
        >>> is_storage_error(sqlite3.IntegrityError("UNIQUE constraint failed"))
        False
    """
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
        text = str(exc)
        return "database or disk is full" in text or "disk I/O error" in text
    return isinstance(exc, OSError) and exc.errno in _NO_SPACE


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts: 0.1 s doubling, at most 30 s.

    Example:
        >>> [backoff(n) for n in (1, 2, 3, 10, 100)]
        [0.1, 0.2, 0.4, 30.0, 30.0]
    """
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** min(failures - 1, 64))


def _settle(future: Future[Any], ok: bool, value: Any) -> None:
    """Resolve a write's future; one whose waiter was cancelled is left alone (the
    write itself was done), and the writer thread carries on either way."""
    from concurrent.futures import InvalidStateError

    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except InvalidStateError:
        pass


@dataclass
class _Job:
    """A queued write: the function, its future, and whether it may wait for space."""

    fn: Write
    future: Future[Any]
    retry: bool


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
    usage: dict[str, int] | None = None  # what its LLM calls spent, stored when it stopped

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
        storage_problem: why writes are failing right now (a
            :class:`StorageProblem`), or ``None`` once a write succeeds again.

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
        self.storage_problem: StorageProblem | None = None
        self._applied_max_pages: int | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._local = threading.local()
        writer = self._connect()
        writer.executescript(_SCHEMA)
        columns = {r[1] for r in writer.execute("PRAGMA table_info(batches)")}
        if "usage" not in columns:  # a database from before usage was kept
            writer.execute("ALTER TABLE batches ADD COLUMN usage TEXT")
        writer.commit()
        self._writer: sqlite3.Connection | None = writer
        self._thread = threading.Thread(
            target=self._write_loop, name="pocketbatch-store", daemon=True
        )
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    # -- writing -------------------------------------------------------------------------

    def _take(self, timeout: float | None) -> tuple[list[_Job], bool]:
        """Queued jobs (waiting up to ``timeout`` for the first), and whether to stop."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], False
        if first is None:
            return [], True
        jobs = [first]
        while len(jobs) < 1000:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # finish these jobs, then stop
                break
            jobs.append(more)
        return jobs, False

    def _write_loop(self) -> None:
        held: list[_Job] = []  # jobs that may wait, kept from a group that met a full disk
        retry_at = 0.0
        while True:
            wait = max(0.0, retry_at - time.monotonic()) if held else None
            jobs, stop = self._take(wait)
            backing_off = held and not stop and time.monotonic() < retry_at
            if backing_off and all(j.retry for j in jobs):  # they wait with the rest
                held.extend(jobs)
                continue
            group, held = held + jobs, []
            failed = self._commit(group) if group else None
            if failed is not None:
                problem = self._failed(failed)
                reason = str(failed) or type(failed).__name__
                for job in group:
                    if job.retry and not stop:
                        held.append(job)
                    else:  # accepting a batch (the caller answers 507), or closing
                        _settle(job.future, False, StorageError(self.path, reason))
                retry_at = time.monotonic() + backoff(problem.retries)
            if stop:
                if self._writer is not None:
                    with contextlib.suppress(sqlite3.Error):  # (a checkpoint on a full disk)
                        self._writer.close()
                return

    def _commit(self, group: list[_Job]) -> BaseException | None:
        """Run ``group`` in one transaction; the storage error that undid it, if any."""
        outcomes: list[tuple[bool, Any]] = []
        conn = self._writer
        try:
            if conn is None:  # the last connection broke: a fresh one
                conn = self._writer = self._connect()
                self._applied_max_pages = None
            self._apply_max_pages(conn)
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                # Each write in its own savepoint: one failing write must not
                # undo the others grouped with it (a full disk undoes them all).
                conn.execute("SAVEPOINT one")
                try:
                    outcomes.append((True, job.fn(conn)))
                    conn.execute("RELEASE one")
                except Exception as exc:
                    if is_storage_error(exc):
                        raise
                    conn.execute("ROLLBACK TO one")
                    conn.execute("RELEASE one")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except BaseException as exc:  # the group failed as a whole: nothing was written
            self._roll_back()
            if is_storage_error(exc):
                return exc
            for job in group:
                _settle(job.future, False, exc)
            return None
        self._recovered()
        for job, (ok, value) in zip(group, outcomes, strict=True):
            _settle(job.future, ok, value)
        return None

    def _roll_back(self) -> None:
        """End a failed transaction (a full disk may already have); drop a broken connection."""
        conn = self._writer
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            self._writer = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _failed(self, exc: BaseException) -> StorageProblem:
        """Note a failed attempt; log it (the first, then after 2, 4, 8... failures)."""
        message = str(exc) or type(exc).__name__
        before = self.storage_problem
        retries = 1 if before is None else before.retries + 1
        since = time.time() if before is None else before.since
        problem = self.storage_problem = StorageProblem(message, retries, since)
        if before is None or before.message != message or retries & (retries - 1) == 0:
            _log.warning(
                "pocketbatch store: cannot write to %s: %s (%d failed attempt(s); running "
                "batches wait, next retry in %.1f s; new batches get 507)",
                self.path,
                message,
                retries,
                backoff(retries),
            )
        return problem

    def _recovered(self) -> None:
        before = self.storage_problem
        if before is not None:
            self.storage_problem = None
            _log.warning(
                "pocketbatch store: writing %s works again after %d failed attempt(s)",
                self.path,
                before.retries,
            )

    def _apply_max_pages(self, conn: sqlite3.Connection) -> None:
        wanted = self.max_pages
        if wanted != self._applied_max_pages:
            # Lifting the cap means SQLite's own default (max_page_count cannot be unset).
            conn.execute(f"PRAGMA max_page_count = {int(wanted or 4294967294)}")
            self._applied_max_pages = wanted

    def write(self, fn: Write, *, retry: bool = True) -> Future[Any]:
        """Queue ``fn(connection)`` to run in the writer's next transaction.

        On a full disk (or an I/O error) the write is retried until it commits;
        with ``retry=False`` its future fails at once with :class:`StorageError`.
        """
        future: Future[Any] = Future()
        self._queue.put(_Job(fn, future, retry))
        return future

    async def _write(self, fn: Write, *, retry: bool = True) -> Any:
        return await asyncio.wrap_future(self.write(fn, retry=retry))

    async def create_batch(
        self,
        batch_id: str,
        flow: str,
        inputs: Iterable[bytes],
        *,
        max_concurrent: int,
        name: str | None = None,
    ) -> int:
        """Store a batch and all its inputs; returns once they are committed.

        Raises:
            StorageError: the disk is full (or failing): nothing was stored.
        """
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

        count: int = await self._write(insert, retry=False)
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

    def set_usage_nowait(self, batch_id: str, usage: Mapping[str, int]) -> Future[Any]:
        """Store what a batch's LLM calls spent (a :class:`~pocketbatch.Usage` as a
        dict), in the background."""
        text = json.dumps(dict(usage), sort_keys=True)

        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE batches SET usage = ? WHERE id = ?", (text, batch_id))

        return self.write(update)

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
            "SELECT id, name, flow, status, total, max_concurrent, created, finished, usage "
            "FROM batches WHERE id = ?",
            (batch_id,),
        ).fetchone()
        if row is None:
            return None
        done, ok = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(ok), 0) FROM outputs WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        id_, name, flow, status, total, max_concurrent, created, finished, usage = row
        spent = json.loads(usage) if usage else None
        return BatchRow(
            id_, name, flow, status, total, max_concurrent, created, finished, done, ok, spent
        )

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
        """Finish queued writes and close.

        Writes still failing for want of space get one last attempt, then fail with
        :class:`StorageError` (a batch's missing outputs are redone at the next start).
        """
        self._queue.put(None)
        self._thread.join()
