"""A sync batch node whose items run on a thread or process pool."""

from __future__ import annotations

import contextvars
import os
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Literal

from typing_extensions import TypeVar, Unpack

from pocketbatch.core._events import Event, current_observer, observing
from pocketbatch.core._node import (
    BatchNode,
    ItemT,
    NodeOptions,
    OnItemError,
    SharedT,
    _Failure,
    batch_items,
    check_positive_int,
    settle_item,
)

__all__ = ("ParallelBatchNode",)

ExecT = TypeVar("ExecT", default=Any)
ExecutorKind = Literal["thread", "process"]

# In a worker process: the node this process runs items for, set once by the
# pool's initializer so it is not pickled again for every item.
_worker_node: BatchNode[Any, Any, Any] | None = None


def _init_worker(node: BatchNode[Any, Any, Any]) -> None:
    global _worker_node
    _worker_node = node


def _run_in_worker(index: int, item: Any, observe: bool) -> tuple[Any, list[Event]]:
    """Run one item in a worker process; events are sent back with the result."""
    assert _worker_node is not None, "worker process was not initialised"
    events: list[Event] = []
    with observing(events.append if observe else None):
        result = _worker_node._run_item(index, item)
    return result, events


class ParallelBatchNode(BatchNode[SharedT, ItemT, ExecT]):
    """A sync batch node whose items run concurrently on a thread or process pool.

    Use threads for blocking I/O in sync code, processes for CPU-bound pure Python
    (which threads cannot speed up). ``exec``, retries and ``exec_fallback`` run in
    the pool; ``prep`` and ``post`` run in the caller. Items are submitted lazily,
    at most ``2 * max_workers`` ahead, and results reach ``post`` in input order.

    With ``executor="process"`` the node is sent to each worker process once
    (without its successors), and items and results must be picklable; define
    the node class at module level. Events raised in workers (retries, item
    failures) are replayed to the caller's observer when each item completes.

    Args:
        executor: ``"thread"`` (default), ``"process"``, or an
            :class:`concurrent.futures.Executor` you manage (the node is then sent
            with each item, and the executor is not shut down).
        max_workers: pool size (default: the executor's own default).
        on_item_error: ``"raise"`` or ``"collect"``, as for :class:`BatchNode`.
        max_retries, wait, ...: per item, as for :class:`~pocketbatch.Node`.

    Example:
        >>> from pocketbatch import ParallelBatchNode
        >>> class Length(ParallelBatchNode):
        ...     def prep(self, shared): return shared["words"]
        ...     def exec(self, word): return len(word)
        ...     def post(self, shared, words, lengths): shared["lengths"] = lengths
        >>> shared = {"words": ["a", "bb", "ccc"]}
        >>> Length(executor="thread", max_workers=2).run(shared)
        >>> shared["lengths"]
        [1, 2, 3]
    """

    executor: ExecutorKind | Executor = "thread"
    max_workers: int | None = None

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        executor: ExecutorKind | Executor = "thread",
        max_workers: int | None = None,
        on_item_error: OnItemError = "raise",
        **options: Unpack[NodeOptions],
    ) -> None:
        super().__init__(max_retries, wait, on_item_error=on_item_error, **options)
        if not isinstance(executor, Executor) and executor not in ("thread", "process"):
            raise ValueError(
                "executor must be 'thread', 'process' or a concurrent.futures.Executor, "
                f"got {executor!r}"
            )
        check_positive_int("max_workers", max_workers, allow_none=True)
        self.executor = executor
        if max_workers is not None:
            self.max_workers = max_workers

    def _open_pool(self) -> tuple[Executor, bool, int]:
        """Return (pool, owned, window)."""
        if isinstance(self.executor, Executor):
            workers = self.max_workers or (os.cpu_count() or 1)
            return self.executor, False, 2 * workers
        # Imported here: the process pool pulls in multiprocessing, which
        # `import pocketbatch` should not pay for.
        from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

        if self.executor == "thread":
            pool: Executor = ThreadPoolExecutor(self.max_workers)
            workers = pool._max_workers  # type: ignore[attr-defined]
        else:
            shipped = self.__copy__()
            shipped.successors = {}
            pool = ProcessPoolExecutor(
                self.max_workers, initializer=_init_worker, initargs=(shipped,)
            )
            workers = pool._max_workers  # type: ignore[attr-defined]
        return pool, True, 2 * workers

    def _submit(self, pool: Executor, index: int, item: Any, observe: bool) -> Future[Any]:
        if self.executor == "process":
            return pool.submit(_run_in_worker, index, item, observe)
        # Threads see the caller's observer through a copy of its context.
        return pool.submit(contextvars.copy_context().run, self._run_item, index, item)

    def _collect(self, future: Future[Any], index: int) -> Any:
        try:
            outcome = future.result()
        except Exception as exc:  # e.g. an unpicklable result, or a broken pool
            return _Failure(exc, 1)
        if self.executor != "process":
            return outcome
        result, events = outcome
        observer = current_observer.get()
        if observer is not None:
            for event in events:
                observer(event)
        return result

    def _exec(self, items: Any) -> Any:
        items = batch_items(self, items)
        collect = self.on_item_error == "collect"
        observe = current_observer.get() is not None
        pool, owned, window = self._open_pool()
        results: list[Any] = []
        pending: deque[tuple[int, Future[Any]]] = deque()

        def settle(index: int, future: Future[Any]) -> None:
            results[index] = settle_item(collect, index, self._collect(future, index))

        try:
            for index, item in enumerate(items):
                results.append(None)
                pending.append((index, self._submit(pool, index, item, observe)))
                if len(pending) >= window:
                    settle(*pending.popleft())
            while pending:
                settle(*pending.popleft())
        except BaseException:
            for _, future in pending:
                future.cancel()
            raise
        finally:
            if owned:
                pool.shutdown(wait=True, cancel_futures=True)
        return results
