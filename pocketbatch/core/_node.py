"""Retrying nodes: :class:`Node` (``exec`` retried, then ``exec_fallback``) and the
sequential :class:`BatchNode`, with the options every retrying node accepts.

This module keeps PocketFlow's contract exactly (hook names, positional hook calls,
``max_retries`` counting total attempts, ``cur_retry``, the warnings) and adds
keyword-only options whose defaults change nothing.

The retry loop is split in two: :meth:`Node._after_failure` decides (give up, or
wait how long; it reports the retry and counts the attempt) without doing any I/O,
and a thin loop per flavour runs the attempts and waits: ``time.sleep`` here,
``asyncio.sleep`` in :mod:`pocketbatch.core._async_node`.

Only :mod:`pocketbatch.core._parallel` spawns tasks; nodes here run items one by one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, Self, cast, overload

from typing_extensions import TypedDict, Unpack

from pocketbatch._errors import ObserverError
from pocketbatch.core._base import BaseNode, ExecT, ItemT, PrepT, SharedT, node_name
from pocketbatch.core._events import Event, EventKind, current_observer
from pocketbatch.core._items import (
    ItemRun,
    OnItemError,
    batch_items,
    check_on_item_error,
    check_positive_int,
    settle_item,
)
from pocketbatch.core._retry import (
    ExceptionTypes,
    check_non_negative,
    check_retry_on,
    retry_delay,
)

__all__ = ("BatchNode", "Node", "NodeOptions")


class NodeOptions(TypedDict, total=False):
    """Keyword options every :class:`Node` accepts besides ``max_retries`` and ``wait``.

    Example:
        >>> from pocketbatch import Node
        >>> node = Node(max_retries=3, wait=0.5, backoff=2.0, max_wait=10, jitter=0.1)
        >>> node.max_retries, node.wait
        (3, 0.5)

    pocketbatch keeps these options in private ``_pb_*`` attributes, so a PocketFlow
    subclass that already uses ``self.timeout`` or ``self.backoff`` for its own
    purposes keeps working unchanged.
    """

    backoff: float
    max_wait: float | None
    jitter: float
    retry_on: type[BaseException] | tuple[type[BaseException], ...]
    name: str | None
    offload: bool


# The (node, attempt) whose exec runs in this task or thread. Parallel items share
# one node object, so ``self.cur_retry`` reads its value from here, per item.
_attempt: ContextVar[tuple[object, int] | None] = ContextVar("pocketbatch_attempt", default=None)


class _CurRetry:
    """``self.cur_retry``: the attempt (from 0) of the ``exec`` running in this task
    or thread, so concurrent items of one node each see their own."""

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type[Any] | None = None) -> int: ...
    def __get__(self, obj: object, owner: type[Any] | None = None) -> int | Self:
        if obj is None:
            return self
        current = _attempt.get()
        if current is not None and current[0] is obj:
            return current[1]
        value: int = obj.__dict__.get("cur_retry", 0)
        return value

    def __set__(self, obj: object, value: int) -> None:
        obj.__dict__["cur_retry"] = value


class Node(BaseNode[SharedT, PrepT, ExecT]):
    """A node whose ``exec`` is retried, with a fallback when every attempt fails.

    Args:
        max_retries: total attempts, including the first (PocketFlow's meaning).
        wait: seconds to sleep between attempts.
        backoff: multiply the wait by this after each failed attempt.
        max_wait: upper bound on the wait, in seconds.
        jitter: add up to this many random seconds to each wait.
        retry_on: exception type(s) worth another attempt; any other exception goes
            straight to ``exec_fallback``.
        name: shown in events, errors and diagrams.
        offload: when this sync node is a step of an async flow, run it on a worker
            thread instead of blocking the event loop.

    During ``exec``, ``self.cur_retry`` is the attempt number, from 0.

    Raises:
        ValueError / TypeError: an option is out of range or of the wrong type.

    Example:
        >>> from pocketbatch import Node
        >>> class Flaky(Node):
        ...     def exec(self, _):
        ...         if self.cur_retry < 2:
        ...             raise ConnectionError("try again")
        ...         return self.cur_retry
        ...     def post(self, shared, _, res): shared["attempt"] = res
        >>> shared = {}
        >>> Flaky(max_retries=3, wait=0.01, backoff=2).run(shared)
        >>> shared["attempt"]
        2
    """

    max_retries: int = 1
    wait: float = 0
    cur_retry = _CurRetry()
    _pb_backoff: float = 1.0
    _pb_max_wait: float | None = None
    _pb_jitter: float = 0.0
    _pb_retry_on: ExceptionTypes = (Exception,)

    def __init__(
        self, max_retries: int = 1, wait: float = 0, **options: Unpack[NodeOptions]
    ) -> None:
        super().__init__(name=options.get("name"))
        check_positive_int("max_retries", max_retries, allow_none=False)
        check_non_negative("wait", wait, allow_none=False)
        self.max_retries = max_retries
        self.wait = wait
        self._set_options(options)

    def _set_options(self, options: NodeOptions) -> None:
        unknown = set(options) - set(NodeOptions.__annotations__)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) "
                f"{', '.join(sorted(unknown))}; accepted: max_retries, wait, "
                f"{', '.join(NodeOptions.__annotations__)}"
            )
        if "backoff" in options:
            backoff = options["backoff"]
            check_non_negative("backoff", backoff, allow_none=False)
            self._pb_backoff = backoff
        if "max_wait" in options:
            max_wait = options["max_wait"]
            check_non_negative("max_wait", max_wait, allow_none=True)
            self._pb_max_wait = max_wait
        if "jitter" in options:
            jitter = options["jitter"]
            check_non_negative("jitter", jitter, allow_none=False)
            self._pb_jitter = jitter
        if "retry_on" in options:
            self._pb_retry_on = check_retry_on(options["retry_on"])
        if options.get("offload"):
            self._pb_offload = True

    def exec_fallback(self, prep_res: PrepT, exc: Exception) -> ExecT:
        """Called with the last exception once every attempt failed. Re-raises by default."""
        raise exc

    def _after_failure(self, exc: Exception, failed: int, run: ItemRun | None) -> float | None:
        """The retry decision after the ``failed``-th failed attempt, shared by the
        sync and async loops: ``None`` to give up (call the fallback), else the
        seconds to wait before the next attempt (reported as ``retried``)."""
        if run is not None:
            run.attempts = failed
        if failed >= self.max_retries or not isinstance(exc, self._pb_retry_on):
            return None
        delay = retry_delay(self.wait, self._pb_backoff, self._pb_max_wait, self._pb_jitter, failed)
        observer = current_observer.get()
        if observer is not None:
            observer(
                Event(
                    EventKind.RETRIED,
                    node_name(self),
                    item=None if run is None else run.index,
                    attempt=failed,
                    delay=delay,
                    error=exc,
                )
            )
        _attempt.set((self, failed))
        return delay

    def _attempts(self, prep_res: Any, run: ItemRun | None) -> Any:
        failed = 0
        token = _attempt.set((self, 0))
        try:
            while True:
                self.cur_retry = failed
                try:
                    return self.exec(prep_res)
                except ObserverError:
                    raise
                except Exception as exc:
                    failed += 1
                    delay = self._after_failure(exc, failed, run)
                    if delay is None:
                        return self.exec_fallback(prep_res, exc)
                    if delay > 0:
                        time.sleep(delay)
        finally:
            _attempt.reset(token)

    def _exec(self, prep_res: Any) -> Any:
        return self._attempts(prep_res, None)

    def _run_item(self, index: int, item: Any) -> Any:
        """Run one batch item with retries; a failure comes back as ``_Failure``."""
        run = ItemRun(self, index)
        try:
            result = self._attempts(item, run)
        except ObserverError:
            raise
        except Exception as exc:
            return run.failed(exc)
        return run.finished(result)


class BatchNode(Node[SharedT, ItemT, ExecT]):
    """A node whose ``exec`` runs once per item of the iterable ``prep`` returns.

    Items run one after another; ``post`` receives the list of results in item
    order. ``prep`` returning ``None`` means an empty batch.

    Args:
        on_item_error: ``"raise"`` (default) stops at the first item whose attempts
            all failed and propagates its exception; ``"collect"`` runs every item
            and puts an :class:`ItemError` in each failed position.
        max_retries, wait, ...: per item, as for :class:`Node`.

    Example:
        >>> from pocketbatch import BatchNode
        >>> class Square(BatchNode):
        ...     def prep(self, shared): return shared["xs"]
        ...     def exec(self, x): return x * x
        ...     def post(self, shared, xs, squares): shared["squares"] = squares
        >>> shared = {"xs": [1, 2, 3]}
        >>> Square().run(shared)
        >>> shared["squares"]
        [1, 4, 9]
    """

    _pb_on_item_error: OnItemError = "raise"

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        on_item_error: OnItemError = "raise",
        **options: Unpack[NodeOptions],
    ) -> None:
        super().__init__(max_retries, wait, **options)
        self._pb_on_item_error = check_on_item_error(on_item_error)

    # The batch hooks take an item, not prep's result: PocketFlow's design, kept.
    def prep(self, shared: SharedT) -> Iterable[ItemT] | None:  # type: ignore[override]
        """Return the items of the batch (any iterable; ``None`` for none)."""
        return None

    def exec(self, item: ItemT) -> ExecT:
        """Process one item."""
        return cast(ExecT, None)

    def post(  # type: ignore[override]
        self, shared: SharedT, prep_res: Iterable[ItemT] | None, exec_res: list[ExecT]
    ) -> Any:
        """Receive the results (in item order) and return the next action."""
        return None

    def _exec(self, items: Any) -> Any:
        collect = self._pb_on_item_error == "collect"
        return [
            settle_item(collect, index, self._run_item(index, item))
            for index, item in enumerate(batch_items(self, items))
        ]
