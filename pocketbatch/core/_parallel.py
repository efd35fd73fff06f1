"""Bounded, lazy, fault-isolated concurrency: the only place pocketbatch spawns tasks.

:func:`bounded_map` runs ``fn(index, item)`` for every item with at most
``limit`` calls in flight. It starts ``limit`` worker tasks that pull items from
the (sync or async) iterable one at a time, so a generator of a million items
never becomes a million coroutines; results land in input order. Every worker
lives in one :class:`asyncio.TaskGroup`, so when the first failure aborts the
batch, the items still in flight are cancelled *and awaited* before the original
exception propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sized
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

__all__ = ("AsyncParallelBatchNode", "bounded_map")

ExecT = TypeVar("ExecT", default=Any)
T = TypeVar("T")

ItemFn = Callable[[int, T], Awaitable[Any]]


class _Abort(Exception):
    """Internal: a worker's signal to its task group that the batch must stop."""


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
    become :class:`ItemError` entries. An exception raised by the iterable itself
    always stops the batch.

    ``limit=None`` means unbounded: one task per item, as ``asyncio.gather`` would.
    """
    results: list[Any] = []
    fatal: list[BaseException] = []  # the first exception that stops the batch

    def settle(index: int, result: Any) -> None:
        if type(result) is _Failure:
            if not collect:
                fatal.append(result.exc)
                raise _Abort
            result = ItemError(index, result.exc, result.attempts)
        results[index] = result

    if isinstance(items, AsyncIterable):
        if limit is None:
            items = [item async for item in items]
        else:
            source = aiter(items)
            lock = asyncio.Lock()

            async def pull() -> tuple[int, T] | None:
                async with lock:
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        return None
                    results.append(None)
                    return len(results) - 1, item

            async def async_worker() -> None:
                try:
                    while not fatal and (pulled := await pull()) is not None:
                        settle(pulled[0], await fn(*pulled))
                except _Abort:
                    raise
                except Exception as exc:
                    fatal.append(exc)
                    raise _Abort from None

            await _supervise(async_worker, limit, fatal)
            return results

    if not isinstance(items, Iterable):
        raise not_iterable(owner, items)
    if limit is None:
        items = items if isinstance(items, list) else list(items)
        workers = len(items)
    elif isinstance(items, Sized):
        workers = min(limit, len(items))
    else:
        workers = limit
    pairs = enumerate(items)

    async def worker() -> None:
        try:
            # Check before every pull: once the batch has failed, workers whose
            # items finished in the same loop turn must not start new ones.
            while not fatal:
                try:
                    index, item = next(pairs)
                except StopIteration:
                    return
                results.append(None)
                settle(index, await fn(index, item))
        except _Abort:
            raise
        except Exception as exc:  # the iterable raised, or an observer did
            fatal.append(exc)
            raise _Abort from None

    await _supervise(worker, workers, fatal)
    return results


async def _supervise(
    worker: Callable[[], Awaitable[None]], count: int, fatal: list[BaseException]
) -> None:
    stop: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())  # type: ignore[arg-type]
    except BaseExceptionGroup as group_error:
        # Whatever stopped the batch propagates as itself, as from asyncio.gather:
        # a BaseException that is not an Exception (one the workers let through),
        # else the first item failure.
        _, unexpected = group_error.split(_Abort)
        if unexpected is not None:
            stop = unexpected
            while isinstance(stop, BaseExceptionGroup):
                stop = stop.exceptions[0]
        elif fatal:
            stop = fatal[0]
        else:
            raise
    if stop is not None:
        # Raised outside the except block so the traceback does not drag the
        # task group's ExceptionGroup along as context.
        raise stop


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
