"""The step cache: a component's answer, stored the moment it arrives, reused after.

A step marked ``cache: true`` (or ``cache: {salt: "v2"}``) in a flow file looks its
call up in the run's :class:`StepCache` before calling the component, and stores
the answer right after, before anything else of the item happens. So a rerun after
changing a later step, or a ``--resume`` after a crash, pays for no answer it
already had.

**The key** is the SHA-256 of a canonical JSON document (sorted keys, no spaces,
integers of any size exact, no NaN)::

    {"v": 1, "component": "/builtin/openai", "input": <the resolved input>,
     "salt": "<the step's salt or version>", "extra": <what the component adds>}

* ``component``: the step's component path as written (``/builtin/openai``,
  ``/python/mod.fn``); not the code behind it: bump the salt when that changes;
* ``input``: the step's input after its expressions are evaluated (for a
  ``for_each`` step, each element's input: each element is cached on its own);
* ``salt``: the step's ``salt`` (or ``version``), ``""`` for ``cache: true``;
* ``extra``: what a component says its answer depends on besides its input, from
  an optional ``cache_key_extra(input, ctx)`` method. ``/builtin/openai`` gives
  the base URL and model it resolves from run variables and the environment
  (``openai_base_url``/``OPENAI_BASE_URL``, ``openai_model``/``OPENAI_MODEL``).
  **API keys are never part of it**, so a rotated key keeps the cache, and the
  file holds no secret (an ``api_key`` written into a step's *input* is hashed
  with the rest: only the digest is stored).

Not in the key: the step's id (two steps making the same call share the answer),
run variables and environment variables a component reads by itself (other than
the ``extra`` above), the flow file. Only successful answers are stored; a failed
call is made again next time. An answer that is not JSON (or an input that is
not) is not cached: the call is made every time (``statistics().unstorable``).
Answers are stored as JSON, and a fresh answer is returned as it reads back from
JSON, so a stored answer and a fresh one look the same.

**Storage** is SQLite (the engine of the server's store): WAL, ``synchronous=NORMAL``
(a committed answer survives the process being killed), a busy timeout for other
processes (process-executor workers, two runs) writing the same file. ``put``
returns after the commit. A cache pickles as its path: each worker process opens
the file itself. ``StepCache()`` (no path) is in memory: one process only.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from pocketbatch._errors import PocketbatchError

__all__ = ("CacheStatistics", "StepCache", "cache_key")

KEY_VERSION = 1
"""Bumped when the key's layout changes (every stored answer is then a miss)."""

DEFAULT_FILE = ".pocketbatch-cache.sqlite"
"""The file ``run-batch`` and ``run`` use, in the flow's folder, when no ``--cache`` is given."""

P = ParamSpec("P")
R = TypeVar("R")


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, exact integers.

    Raises:
        TypeError, ValueError: ``value`` is not JSON (an object, NaN, a cycle...).

    Example:
        >>> canonical_json({"b": 2**70, "a": [1.5, None, "é"]})
        '{"a":[1.5,null,"é"],"b":1180591620717411303424}'
    """
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except RecursionError:
        raise ValueError("nested too deeply to cache") from None


def cache_key(component: str, input: Any, salt: str = "", extra: Any = None) -> str:
    """The cache key (hex SHA-256) of a call; see the module docstring for what is in it.

    Raises:
        TypeError, ValueError: ``input`` or ``extra`` is not JSON.

    Example:
        >>> k = cache_key("/builtin/openai", {"messages": []})
        >>> len(k), k == cache_key("/builtin/openai", {"messages": []}, salt="v2")
        (64, False)
    """
    document = {"v": KEY_VERSION, "component": component, "input": input, "salt": salt}
    if extra is not None:
        document["extra"] = extra
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CacheStatistics:
    """What a :class:`StepCache` did in this process.

    Attributes:
        hits: lookups answered from the cache (calls not made).
        misses: lookups that found nothing (or were ignored by ``refresh``).
        stores: answers stored.
        unstorable: calls made uncached: their input or answer is not JSON.
    """

    hits: int = 0
    misses: int = 0
    stores: int = 0
    unstorable: int = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS step_cache (
    key TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    step TEXT NOT NULL,
    value TEXT NOT NULL,
    stored_at REAL NOT NULL
) WITHOUT ROWID
"""


class StepCache:
    """Answers of components, by :func:`cache_key`, in a SQLite file (or in memory).

    Flow files use it through ``cache: true`` steps and ``load_flow(..., cache=)``
    (``run-batch --cache``); Python code through :meth:`cached`.

    Args:
        path: the SQLite file (created, with its folder's write access needed);
            ``None`` or ``":memory:"``: in memory, for this process only.
        refresh: ignore stored answers (every lookup misses) but store new ones:
            ``--refresh-cache``.
        timeout: seconds to wait for another process's write lock.

    Raises:
        PocketbatchError: the file cannot be opened as a cache.

    Example:
        >>> cache = StepCache()
        >>> key = cache_key("/my/step", {"x": 1})
        >>> cache.lookup(key)
        (False, None)
        >>> cache.put(key, {"y": (2, 3)})
        {'y': [2, 3]}
        >>> cache.lookup(key), cache.statistics().hits
        ((True, {'y': [2, 3]}), 1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        refresh: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.path = None if path is None or str(path) == ":memory:" else Path(path)
        self.refresh = refresh
        self.timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._hits = self._misses = self._stores = self._unstorable = 0
        with self._lock:
            self._connection()  # open now: a bad path fails here, not in the first step

    # -- the connection ---------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a forked or unpickled copy opens its own)."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        where = ":memory:" if self.path is None else str(self.path)
        try:
            conn = sqlite3.connect(
                where, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            if self.path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a kill
            conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise PocketbatchError(f"step cache {where}: cannot open it: {exc}") from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close the connection (a later use opens it again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> StepCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        if self.path is None:
            raise TypeError(
                "an in-memory StepCache cannot go to another process; give it a file path"
            )
        return (_reopen, (str(self.path), self.refresh, self.timeout))

    # -- lookups and stores ----------------------------------------------------------------

    def lookup(self, key: str) -> tuple[bool, Any]:
        """``(True, answer)`` when ``key`` is stored (and not ``refresh``), else
        ``(False, None)``."""
        with self._lock:
            if self.refresh:
                self._misses += 1
                return False, None
            try:
                row = (
                    self._connection()
                    .execute("SELECT value FROM step_cache WHERE key = ?", (key,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise PocketbatchError(f"step cache {self._where()}: {exc}") from None
            if row is None:
                self._misses += 1
                return False, None
            self._hits += 1
        return True, json.loads(row[0])

    def put(self, key: str, value: Any, *, component: str = "", step: str = "") -> Any:
        """Store ``value`` under ``key`` (committed when this returns) and return it
        as it reads back from JSON. ``component`` and ``step`` are kept beside it for
        whoever inspects the file.

        Raises:
            TypeError, ValueError: ``value`` is not JSON (nothing is stored).
        """
        text = canonical_json(value)
        with self._lock:
            try:
                self._connection().execute(
                    "INSERT OR REPLACE INTO step_cache VALUES (?, ?, ?, ?, ?)",
                    (key, component, step, text, time.time()),
                )
            except sqlite3.Error as exc:
                raise PocketbatchError(f"step cache {self._where()}: {exc}") from None
            self._stores += 1
        return json.loads(text)

    async def lookup_async(self, key: str) -> tuple[bool, Any]:
        """:meth:`lookup` off the event loop (another process may hold the lock)."""
        return await asyncio.to_thread(self.lookup, key)

    async def put_async(self, key: str, value: Any, *, component: str = "", step: str = "") -> Any:
        """:meth:`put` off the event loop; returns once the answer is committed."""
        return await asyncio.to_thread(self.put, key, value, component=component, step=step)

    def note_unstorable(self) -> None:
        """Count a call made uncached because its input or answer is not JSON."""
        with self._lock:
            self._unstorable += 1

    def statistics(self) -> CacheStatistics:
        """Hits, misses and stores of this process (workers count their own)."""
        return CacheStatistics(self._hits, self._misses, self._stores, self._unstorable)

    def __len__(self) -> int:
        with self._lock:
            row = self._connection().execute("SELECT count(*) FROM step_cache").fetchone()
        return int(row[0])

    def _where(self) -> str:
        return ":memory:" if self.path is None else str(self.path)

    def __repr__(self) -> str:
        refresh = ", refresh=True" if self.refresh else ""
        return f"StepCache({self._where()!r}{refresh})"

    # -- for Python code ---------------------------------------------------------------------

    def cached(
        self, fn: Callable[P, R], *, salt: str = "", name: str | None = None
    ) -> Callable[P, R]:
        """``fn`` (sync or async) with its answers cached: the Python twin of a
        ``cache: true`` step, for use inside a node's ``exec``. The key is
        :func:`cache_key` of ``name`` (default ``python:module.qualname``), the
        arguments ``{"args": [...], "kwargs": {...}}`` and ``salt``. Exceptions are
        not cached; calls whose arguments or answer are not JSON are made uncached.

        Example:
            >>> cache = StepCache()
            >>> calls = []
            >>> def ask(prompt):
            ...     calls.append(prompt)
            ...     return prompt.upper()
            >>> ask = cache.cached(ask, salt="v1")
            >>> ask("hi"), ask("hi"), len(calls)
            ('HI', 'HI', 1)
        """
        label = name or f"python:{fn.__module__}.{fn.__qualname__}"

        def key_of(args: Any, kwargs: Any) -> str | None:
            try:
                return cache_key(label, {"args": list(args), "kwargs": kwargs}, salt)
            except (TypeError, ValueError):
                self.note_unstorable()
                return None

        def store(key: str, value: Any) -> Any:
            try:
                return self.put(key, value, component=label)
            except (TypeError, ValueError):
                self.note_unstorable()
                return value

        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[..., Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def cached_async(*args: Any, **kwargs: Any) -> Any:
                key = key_of(args, kwargs)
                if key is None:
                    return await async_fn(*args, **kwargs)
                found, value = await self.lookup_async(key)
                if found:
                    return value
                value = await async_fn(*args, **kwargs)
                return await asyncio.to_thread(store, key, value)

            return cast(Callable[P, R], cached_async)

        @functools.wraps(fn)
        def cached_sync(*args: Any, **kwargs: Any) -> Any:
            key = key_of(args, kwargs)
            if key is None:
                return fn(*args, **kwargs)
            found, value = self.lookup(key)
            if found:
                return value
            return store(key, fn(*args, **kwargs))

        return cast(Callable[P, R], cached_sync)


def _reopen(path: str, refresh: bool, timeout: float) -> StepCache:
    return StepCache(path, refresh=refresh, timeout=timeout)
