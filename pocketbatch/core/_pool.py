"""A sync batch node whose items run on a thread or process pool."""

from __future__ import annotations

import contextvars
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Literal

from typing_extensions import TypeVar, Unpack

from pocketbatch._errors import ObserverError
from pocketbatch.core._base import ItemT, SharedT
from pocketbatch.core._events import Event, current_observer, observing
from pocketbatch.core._items import (
    OnItemError,
    _Failure,
    batch_items,
    check_positive_int,
    settle_item,
)
from pocketbatch.core._node import BatchNode, NodeOptions

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
    """Run one item in a worker process of a pool we made (node set by the initializer)."""
    assert _worker_node is not None, "worker process was not initialised"
    return _run_shipped(_worker_node, index, item, observe)


def _run_shipped(
    node: BatchNode[Any, Any, Any], index: int, item: Any, observe: bool
) -> tuple[Any, list[Event]]:
    """Run one item in a worker process; its events travel back with the result."""
    events: list[Event] = []
    with observing(events.append if observe else None):
        result = node._run_item(index, item)
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
            :class:`concurrent.futures.Executor` you manage (not shut down by the
            node; a process pool of yours gets the node with each item).
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

    _pb_executor: ExecutorKind | Executor = "thread"
    _pb_max_workers: int | None = None

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
        self._pb_executor = executor
        if max_workers is not None:
            self._pb_max_workers = max_workers

    def _open_pool(self) -> tuple[Executor, bool, int, BatchNode[Any, Any, Any] | None]:
        """Return (pool, owned, window, node to send with each item or None).

        Processes get a copy of this node without its successors: once, through
        the initializer, for a pool we make; with every item for a pool the
        caller manages. Threads run this node itself.
        """
        # Imported here: the process pool pulls in multiprocessing, which
        # `import pocketbatch` should not pay for.
        from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

        shipped = self._pb_copy()
        shipped.successors = {}
        shipped.__dict__.pop("_pb_executor", None)  # a pool object does not pickle
        kind = self._pb_executor
        if isinstance(kind, Executor):
            workers: int = self._pb_max_workers or getattr(kind, "_max_workers", None) or 4
            per_item = shipped if isinstance(kind, ProcessPoolExecutor) else None
            return kind, False, 2 * workers, per_item
        pool: ThreadPoolExecutor | ProcessPoolExecutor
        if kind == "thread":
            pool = ThreadPoolExecutor(self._pb_max_workers)
        else:
            pool = ProcessPoolExecutor(
                self._pb_max_workers, initializer=_init_worker, initargs=(shipped,)
            )
        workers = getattr(pool, "_max_workers", None) or self._pb_max_workers or 4
        return pool, True, 2 * workers, None

    def _submit(
        self,
        pool: Executor,
        per_item: BatchNode[Any, Any, Any] | None,
        index: int,
        item: Any,
        observe: bool,
    ) -> Future[Any]:
        if per_item is not None:
            return pool.submit(_run_shipped, per_item, index, item, observe)
        if self._pb_executor == "process":
            return pool.submit(_run_in_worker, index, item, observe)
        # Threads see the caller's observer through a copy of its context.
        return pool.submit(contextvars.copy_context().run, self._run_item, index, item)

    def _collect(self, future: Future[Any], in_process: bool) -> Any:
        try:
            outcome = future.result()
        except ObserverError:
            raise
        except Exception as exc:  # e.g. an unpicklable result, or a broken pool
            return _Failure(exc, 1)
        if not in_process:
            return outcome
        result, events = outcome
        observer = current_observer.get()
        if observer is not None:
            for event in events:
                observer(event)
        return result

    def _exec(self, items: Any) -> Any:
        items = batch_items(self, items)
        collect = self._pb_on_item_error == "collect"
        observe = current_observer.get() is not None
        pool, owned, window, per_item = self._open_pool()
        in_process = per_item is not None or self._pb_executor == "process"
        results: list[Any] = []
        pending: deque[tuple[int, Future[Any]]] = deque()

        def settle(index: int, future: Future[Any]) -> None:
            results[index] = settle_item(collect, index, self._collect(future, in_process))

        try:
            for index, item in enumerate(items):
                results.append(None)
                pending.append((index, self._submit(pool, per_item, index, item, observe)))
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
