"""Async nodes: :class:`AsyncNode` (``prep_async -> exec_async -> post_async``, with a
per-attempt ``timeout``) and the sequential :class:`AsyncBatchNode`.

They share :class:`~pocketbatch.core._node.Node`'s retry decision
(:meth:`~pocketbatch.core._node.Node._after_failure`) and differ only in how they
wait: ``await asyncio.sleep``, an optional rate limiter, ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterable, Iterable
from typing import Any, cast

from typing_extensions import Unpack

from pocketbatch._errors import NodeTimeoutError, ObserverError
from pocketbatch.core._base import ExecT, ItemT, PrepT, SharedT, node_name
from pocketbatch.core._events import Observer, RunReport, current_observer, observing
from pocketbatch.core._items import (
    ItemRun,
    OnItemError,
    batch_items,
    check_on_item_error,
    settle_item,
)
from pocketbatch.core._node import BatchNode, Node, NodeOptions, _attempt
from pocketbatch.core._retry import RateLimiter, check_non_negative

__all__ = ("AsyncBatchNode", "AsyncNode")


class AsyncNode(Node[SharedT, PrepT, ExecT]):
    """A node with ``async`` hooks: ``prep_async``, ``exec_async``, ``post_async``.

    Run it with ``await node.run_async(shared)`` or as a step of an
    :class:`~pocketbatch.AsyncFlow`. Retries sleep with ``asyncio.sleep``.

    Args:
        timeout: seconds one attempt of ``exec_async`` may take; past it the attempt
            fails with :class:`~pocketbatch.NodeTimeoutError` (and is retried).
        max_retries, wait, ...: as for :class:`Node`.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncNode
        >>> class Fetch(AsyncNode):
        ...     async def prep_async(self, shared): return shared["url"]
        ...     async def exec_async(self, url):
        ...         await asyncio.sleep(0)
        ...         return f"<html from {url}>"
        ...     async def post_async(self, shared, url, page): shared["page"] = page
        >>> shared = {"url": "example.org"}
        >>> asyncio.run(Fetch(timeout=5).run_async(shared))
        >>> shared["page"]
        '<html from example.org>'
    """

    _pb_timeout: float | None = None

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        timeout: float | None = None,
        **options: Unpack[NodeOptions],
    ) -> None:
        super().__init__(max_retries, wait, **options)
        self._set_timeout(timeout)

    def _set_timeout(self, timeout: float | None) -> None:
        check_non_negative("timeout", timeout, allow_none=True)
        if timeout == 0:
            raise ValueError("timeout must be > 0 seconds, or None for no limit")
        if timeout is not None:
            self._pb_timeout = timeout

    async def prep_async(self, shared: SharedT) -> PrepT:
        """Read what ``exec_async`` needs from the shared store."""
        return cast(PrepT, None)

    async def exec_async(self, prep_res: PrepT) -> ExecT:
        """Do the work; retried as configured."""
        return cast(ExecT, None)

    async def exec_fallback_async(self, prep_res: PrepT, exc: Exception) -> ExecT:
        """Called with the last exception once every attempt failed. Re-raises by default."""
        raise exc

    async def post_async(self, shared: SharedT, prep_res: PrepT, exec_res: ExecT) -> Any:
        """Write results to the shared store; return the next action."""
        return None

    async def _exec_once(self, prep_res: Any, attempt: int, limit: float) -> Any:
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return await self.exec_async(prep_res)
        except TimeoutError as exc:
            if scope.expired():
                raise NodeTimeoutError(node_name(self), attempt, limit) from exc
            raise

    async def _attempts_async(
        self, prep_res: Any, run: ItemRun | None, limiter: RateLimiter | None
    ) -> Any:
        failed = 0
        timeout = self._pb_timeout
        token = _attempt.set((self, 0))
        try:
            while True:
                self.cur_retry = failed
                if limiter is not None:
                    await limiter.acquire()
                try:
                    if timeout is None:
                        return await self.exec_async(prep_res)
                    return await self._exec_once(prep_res, failed + 1, timeout)
                except ObserverError:
                    raise
                except Exception as exc:
                    failed += 1
                    delay = self._after_failure(exc, failed, run)
                    if delay is None:
                        return await self.exec_fallback_async(prep_res, exc)
                    if delay > 0:
                        await asyncio.sleep(delay)
        finally:
            _attempt.reset(token)

    async def _exec(self, prep_res: Any) -> Any:
        return await self._attempts_async(prep_res, None, None)

    async def _run_item_async(
        self, index: int, item: Any, limiter: RateLimiter | None = None
    ) -> Any:
        """Run one batch item with retries; a failure comes back as ``_Failure``."""
        run = ItemRun(self, index)
        try:
            result = await self._attempts_async(item, run, limiter)
        except ObserverError:
            raise
        except Exception as exc:
            return run.failed(exc)
        return run.finished(result)

    async def _steps_async(self, shared: Any) -> Any:
        p = await self.prep_async(shared)
        e = await self._exec(p)
        return await self.post_async(shared, p, e)

    async def _run_async(self, shared: Any) -> Any:
        observer = current_observer.get()
        if observer is None:
            return await self._steps_async(shared)
        with RunReport(observer, self._EVENTS, node_name(self)) as report:
            report.action = await self._steps_async(shared)
        return report.action

    async def run_async(self, shared: SharedT, *, observer: Observer | None = None) -> Any:
        """Run this node (or async flow) once on ``shared`` and return its action.

        Args:
            shared: the shared store.
            observer: receives an :class:`~pocketbatch.Event` for everything in the run.

        Example:
            >>> import asyncio
            >>> asyncio.run(AsyncNode().run_async({})) is None
            True
        """
        if self.successors:
            warnings.warn("Node won't run successors. Use AsyncFlow.", stacklevel=2)
        if observer is None:
            return await self._run_async(shared)
        with observing(observer):
            return await self._run_async(shared)

    def _run(self, shared: Any) -> Any:
        raise RuntimeError(
            f"Use run_async. {type(self).__name__} {node_name(self)!r} is async: "
            "await node.run_async(shared), or make it a step of an AsyncFlow"
        )


class AsyncBatchNode(AsyncNode[SharedT, ItemT, ExecT], BatchNode[SharedT, ItemT, ExecT]):
    """An async batch node whose items run one after another (see
    :class:`~pocketbatch.AsyncParallelBatchNode` to run them concurrently).

    ``prep_async`` may return any iterable or an async iterable; ``None`` means an
    empty batch.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncBatchNode
        >>> class Upper(AsyncBatchNode):
        ...     async def prep_async(self, shared): return shared["words"]
        ...     async def exec_async(self, word): return word.upper()
        ...     async def post_async(self, shared, words, out): shared["out"] = out
        >>> shared = {"words": ["a", "b"]}
        >>> asyncio.run(Upper().run_async(shared))
        >>> shared["out"]
        ['A', 'B']
    """

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        on_item_error: OnItemError = "raise",
        timeout: float | None = None,
        **options: Unpack[NodeOptions],
    ) -> None:
        Node.__init__(self, max_retries, wait, **options)
        self._pb_on_item_error = check_on_item_error(on_item_error)
        self._set_timeout(timeout)

    async def prep_async(  # type: ignore[override]
        self, shared: SharedT
    ) -> Iterable[ItemT] | AsyncIterable[ItemT] | None:
        """Return the items of the batch (iterable or async iterable; ``None`` for none)."""
        return None

    async def exec_async(self, item: ItemT) -> ExecT:
        """Process one item."""
        return cast(ExecT, None)

    async def post_async(  # type: ignore[override]
        self,
        shared: SharedT,
        prep_res: Iterable[ItemT] | AsyncIterable[ItemT] | None,
        exec_res: list[ExecT],
    ) -> Any:
        """Receive the results (in item order) and return the next action."""
        return None

    async def _exec(self, items: Any) -> Any:
        if items is None:
            return []
        collect = self._pb_on_item_error == "collect"
        results: list[Any] = []
        if isinstance(items, AsyncIterable):
            async for item in items:
                index = len(results)
                results.append(settle_item(collect, index, await self._run_item_async(index, item)))
        else:
            for index, item in enumerate(batch_items(self, items)):
                results.append(settle_item(collect, index, await self._run_item_async(index, item)))
        return results
