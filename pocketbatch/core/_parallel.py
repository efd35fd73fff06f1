"""Bounded, lazy, fault-isolated concurrency: the only place pocketbatch spawns tasks.

One worker primitive, :func:`_pool`, runs ``fn(index, item)`` for every item with
at most a given number of calls in flight: that many worker tasks pull items from
the (sync or async) iterable one at a time, so a generator of a million items
never becomes a million coroutines. Every worker lives in one
:class:`asyncio.TaskGroup`, so when the first failure stops the pool, no item
starts after it and the items still in flight are cancelled *and awaited* before
the original exception propagates. Unbounded (no limit), :func:`_gather` starts every
item at once as ``asyncio.gather`` does, so all of them start even when the first
fails before yielding; the ones still in flight are then cancelled the same way.
It has two faces:

* :func:`bounded_map`: every result, in input order, in a list (the core's
  parallel batch nodes and flows, flow tests);
* :func:`bounded_stream`: ``(index, result)`` pairs as items finish, or in input
  order through a bounded reorder window (the batch runner).
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
)
from functools import partial
from typing import Any

from typing_extensions import TypeVar, Unpack

from pocketbatch.core._async_node import AsyncNode
from pocketbatch.core._base import ItemT, SharedT
from pocketbatch.core._items import (
    ItemError,
    OnItemError,
    _Failure,
    batch_items,
    check_on_item_error,
    not_iterable,
    set_parallel_options,
)
from pocketbatch.core._node import BatchNode, NodeOptions
from pocketbatch.core._retry import RateLimiter

__all__ = ("AsyncParallelBatchNode", "bounded_map", "bounded_stream")

ExecT = TypeVar("ExecT", default=Any)
T = TypeVar("T")
R = TypeVar("R")

ItemFn = Callable[[int, T], Awaitable[Any]]


class _Abort(Exception):
    """Internal: a worker's signal to its task group that the pool must stop."""


async def _pool(
    fn: Callable[[int, T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    workers: int,
    done: Callable[[int, R], object],
    start: int = 0,
    window: asyncio.Semaphore | None = None,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Run ``fn(index, item)`` over ``items`` on at most ``workers`` tasks; ``done(index,
    result)`` as each finishes.

    One dispatcher pulls the items lazily, in order, numbered from ``start``, and
    hands each to an idle worker task; a new worker is created only when an item is
    in hand and every worker is busy, so there are never more workers than items
    (``--max-concurrent 1000000`` over 3 inputs makes 3 tasks, not a million). With
    ``window``, the dispatcher takes a token from it before each pull (whoever
    consumes the results gives tokens back); with ``stop``, no item is pulled once
    ``stop()`` is true, and the items in flight finish.

    The first exception, from the iterable, ``fn`` or ``done``, stops the pool: no
    item starts after it (it is checked before every pull), the items in flight are
    cancelled and awaited, and it propagates as itself (as from ``asyncio.gather``;
    so does a ``BaseException`` that is not an ``Exception``).
    """
    fatal: list[BaseException] = []  # the first exception that stops the pool
    jobs: asyncio.Queue[tuple[int, T] | None] = asyncio.Queue()
    freed = asyncio.Event()  # a worker became idle
    idle = alive = 0

    async def worker(job: tuple[int, T] | None) -> None:
        nonlocal idle
        try:
            while job is not None and not fatal:
                done(job[0], await fn(*job))
                idle += 1
                freed.set()
                job = await jobs.get()
        except _Abort:
            raise
        except Exception as exc:  # fn or done raised
            fatal.append(exc)
            raise _Abort from None

    if isinstance(items, AsyncIterable):
        source = aiter(items)

        async def pull() -> tuple[bool, Any]:
            try:
                return True, await anext(source)
            except StopAsyncIteration:
                return False, None

    else:
        iterator = iter(items)

        async def pull() -> tuple[bool, Any]:
            try:
                return True, next(iterator)
            except StopIteration:
                return False, None

    async def dispatch(group: asyncio.TaskGroup) -> None:
        nonlocal idle, alive
        index = start
        holding = False  # a window token taken for a pull not (yet) made
        try:
            while not fatal:
                while idle == 0 and alive >= max(workers, 1):
                    freed.clear()
                    await freed.wait()
                if window is not None:
                    await window.acquire()
                    holding = True
                # Checked before every pull: once the pool has failed (or is told to
                # stop), no new item starts.
                if fatal or (stop is not None and stop()):
                    break
                got, item = await pull()
                if not got:
                    break
                holding = False
                if idle:
                    idle -= 1
                    jobs.put_nowait((index, item))
                else:
                    alive += 1
                    group.create_task(worker((index, item)))
                index += 1
        except Exception as exc:  # the iterable raised
            fatal.append(exc)
            raise _Abort from None
        if window is not None and holding:
            window.release()  # the token taken for a pull that found nothing
        for _ in range(alive):
            jobs.put_nowait(None)  # each worker ends when it is next idle

    await _supervise(dispatch, fatal)


async def _supervise(
    body: Callable[[asyncio.TaskGroup], Awaitable[None]], fatal: list[BaseException]
) -> None:
    """Run ``body(group)`` in one :class:`asyncio.TaskGroup` (it starts the tasks); a
    task that fails records its exception in ``fatal`` and raises :class:`_Abort`, the
    group cancels (and awaits) the rest, and the failure propagates as itself."""
    stop_with: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            await body(group)  # in this task: no task of its own
    except BaseExceptionGroup as group_error:
        # Whatever stopped the pool propagates as itself, as from asyncio.gather:
        # a BaseException that is not an Exception (one the workers let through),
        # else the first failure.
        _, unexpected = group_error.split(_Abort)
        if unexpected is not None:
            stop_with = unexpected
            while isinstance(stop_with, BaseExceptionGroup):
                stop_with = stop_with.exceptions[0]
        elif fatal:
            stop_with = fatal[0]
        else:
            raise
    if stop_with is not None:
        # Raised outside the except block so the traceback does not drag the
        # task group's ExceptionGroup along as context.
        raise stop_with


async def _gather(
    fn: Callable[[int, T], Awaitable[R]],
    items: list[T],
    *,
    done: Callable[[int, R], object],
) -> None:
    """Unbounded: one task per item, every one started before any failure is seen,
    as ``asyncio.gather`` starts them (PocketFlow code counts on those calls). The
    first failure cancels (and awaits) the items still in flight and propagates as
    itself, as in :func:`_pool`."""
    fatal: list[BaseException] = []

    async def one(index: int, item: T) -> None:
        try:
            done(index, await fn(index, item))
        except Exception as exc:  # fn or done
            fatal.append(exc)
            raise _Abort from None

    async def start_all(group: asyncio.TaskGroup) -> None:
        for index, item in enumerate(items):
            group.create_task(one(index, item))

    await _supervise(start_all, fatal)


async def bounded_map(
    fn: ItemFn[T],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int | None,
    collect: bool,
    owner: object = None,
) -> list[Any]:
    """Run ``fn(index, item)`` over ``items``, at most ``limit`` at once, in input order.

    ``fn`` returns the item's result, or a ``_Failure`` for an item that failed.
    With ``collect=False`` the first failure cancels (and awaits) everything
    still running, then its exception is raised; with ``collect=True`` failures
    become :class:`ItemError` entries. An exception raised by the iterable itself,
    or by ``fn``, always stops the batch.

    ``limit=None`` means unbounded: one task per item, every one started, as
    ``asyncio.gather`` would (even if an item fails before the others start).

    Example:
        >>> import asyncio
        >>> async def square(index, n):
        ...     await asyncio.sleep(0)
        ...     return n * n
        >>> asyncio.run(bounded_map(square, (n for n in range(5)), limit=2, collect=False))
        [0, 1, 4, 9, 16]
    """
    if isinstance(items, AsyncIterable):
        if limit is None:
            items = [item async for item in items]
    elif not isinstance(items, Iterable):
        raise not_iterable(owner, items)
    elif limit is None and not isinstance(items, list):
        items = list(items)
    results: list[Any] = []

    def settle(index: int, result: Any) -> None:
        if type(result) is _Failure:
            if not collect:
                raise result.exc  # stops the pool; it propagates as itself
            result = ItemError(index, result.exc, result.attempts)
        if index >= len(results):
            results.extend([None] * (index + 1 - len(results)))
        results[index] = result

    if limit is None:
        assert isinstance(items, list)
        await _gather(fn, items, done=settle)
    else:
        await _pool(fn, items, workers=limit, done=settle)
    return results


_DONE: Any = object()


async def bounded_stream(
    fn: Callable[[int, T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    ordered: bool = False,
    window: int | None = None,
    start: int = 0,
    stop: Callable[[], bool] | None = None,
) -> AsyncGenerator[tuple[int, R], None]:
    """``(index, fn(index, item))`` for every item, at most ``limit`` calls at once.

    Items are pulled lazily. Pairs come as items finish, or with ``ordered`` in
    input order. Either way no more than ``window`` items (default ``4 * limit``,
    at least ``limit``) are pulled but not yet yielded: the reorder buffer's bound,
    and back-pressure on reading while the consumer is slow or the oldest item holds
    the window. Indexes start at ``start``; once ``stop()`` is true no item is
    pulled, and the stream ends when those in flight are yielded.

    The first exception, from the iterable or ``fn``, ends the stream with it
    (after the pairs that finished before it). Closing the stream early (``break``,
    ``aclose()``, cancellation) cancels the items in flight and awaits them.

    Example:
        >>> import asyncio
        >>> async def slow_first(index, word):
        ...     for _ in range(3 - index):
        ...         await asyncio.sleep(0)
        ...     return word.upper()
        >>> async def main(ordered):
        ...     stream = bounded_stream(slow_first, ["a", "b", "c"], limit=3, ordered=ordered)
        ...     return [pair async for pair in stream]
        >>> asyncio.run(main(False)), asyncio.run(main(True))
        ([(2, 'C'), (1, 'B'), (0, 'A')], [(0, 'A'), (1, 'B'), (2, 'C')])
    """
    tokens = asyncio.Semaphore(max(window or 4 * limit, limit))
    finished: asyncio.Queue[Any] = asyncio.Queue()
    pool = asyncio.create_task(
        _pool(
            fn,
            items,
            workers=limit,
            done=lambda index, result: finished.put_nowait((index, result)),
            start=start,
            window=tokens,
            stop=stop,
        )
    )
    pool.add_done_callback(lambda _: finished.put_nowait(_DONE))
    pending: dict[int, R] = {}
    expected = start
    try:
        while True:
            got = await finished.get()
            if got is _DONE:
                pool.result()  # the exception that stopped the pool, as itself
                return
            index, result = got
            if not ordered:
                tokens.release()
                yield index, result
                continue
            pending[index] = result
            while expected in pending:
                ready = pending.pop(expected)
                tokens.release()
                yield expected, ready
                expected += 1
    finally:
        pool.cancel()
        await asyncio.gather(pool, return_exceptions=True)


class AsyncParallelBatchNode(AsyncNode[SharedT, ItemT, ExecT], BatchNode[SharedT, ItemT, ExecT]):
    """An async batch node whose items run concurrently.

    Without options it behaves like PocketFlow's: every item starts at once and
    the first failure propagates as itself (not an ``ExceptionGroup``). Unlike
    PocketFlow, the items still in flight are then cancelled and awaited.

    Args:
        max_concurrency: never more than this many items in flight; items are
            pulled lazily from ``prep_async``'s (async) iterable, so only about this
            many coroutines ever exist. ``None``: unbounded.
        max_per_second: start at most this many attempts per second (rate limits).
        on_item_error: ``"raise"`` or ``"collect"`` (failed positions hold an
            :class:`~pocketbatch.ItemError`).
        timeout: seconds per attempt of ``exec_async``.
        max_retries, wait, backoff, ...: per item, as for :class:`~pocketbatch.Node`.

    Results reach ``post_async`` in input order.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncParallelBatchNode
        >>> class Translate(AsyncParallelBatchNode):
        ...     async def prep_async(self, shared):
        ...         return ((shared["text"], lang) for lang in shared["langs"])
        ...     async def exec_async(self, job):
        ...         text, lang = job
        ...         await asyncio.sleep(0)
        ...         return f"{text} [{lang}]"
        ...     async def post_async(self, shared, jobs, out): shared["out"] = out
        >>> shared = {"text": "hi", "langs": ["fr", "de", "ja"]}
        >>> asyncio.run(Translate(max_concurrency=2, max_per_second=100).run_async(shared))
        >>> shared["out"]
        ['hi [fr]', 'hi [de]', 'hi [ja]']
    """

    _pb_max_concurrency: int | None = None
    _pb_max_per_second: float | None = None

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        max_concurrency: int | None = None,
        max_per_second: float | None = None,
        on_item_error: OnItemError = "raise",
        timeout: float | None = None,
        **options: Unpack[NodeOptions],
    ) -> None:
        AsyncNode.__init__(self, max_retries, wait, timeout=timeout, **options)
        self._pb_on_item_error = check_on_item_error(on_item_error)
        set_parallel_options(self, max_concurrency, max_per_second)

    async def _exec(self, items: Any) -> Any:
        rate = self._pb_max_per_second
        return await bounded_map(
            partial(self._run_item_async, limiter=RateLimiter(rate) if rate else None),
            items if isinstance(items, AsyncIterable) else batch_items(self, items),
            limit=self._pb_max_concurrency,
            collect=self._pb_on_item_error == "collect",
            owner=self,
        )
