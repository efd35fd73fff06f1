"""Nodes: ``prep -> exec -> post``, retries, fallbacks and sequential batches.

This module keeps PocketFlow's contract exactly (hook names, positional hook calls,
``max_retries`` counting total attempts, ``cur_retry``, ``>>`` and ``- "action" >>``,
the warnings) and adds keyword-only options whose defaults change nothing.

Only :mod:`pocketbatch.core._parallel` spawns tasks; nodes here run items one by one.
"""

from __future__ import annotations

import asyncio
import copy
import time
import warnings
from collections.abc import AsyncIterable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Self, cast, overload

from typing_extensions import TypedDict, TypeVar, Unpack

from pocketbatch._errors import NodeTimeoutError, ObserverError
from pocketbatch.core._events import Event, EventKind, Observer, current_observer, observing
from pocketbatch.core._retry import (
    ExceptionTypes,
    RateLimiter,
    check_non_negative,
    check_retry_on,
    retry_delay,
)

__all__ = (
    "AsyncBatchNode",
    "AsyncNode",
    "BaseNode",
    "BatchNode",
    "ItemError",
    "Node",
    "NodeOptions",
)

SharedT = TypeVar("SharedT", default=Any)
PrepT = TypeVar("PrepT", default=Any)
ExecT = TypeVar("ExecT", default=Any)
ItemT = TypeVar("ItemT", default=Any)
_NodeT = TypeVar("_NodeT", bound="BaseNode[Any, Any, Any]")

OnItemError = Literal["raise", "collect"]


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


@dataclass(frozen=True, slots=True)
class ItemError:
    """Stands in the results list for a batch item that failed (``on_item_error="collect"``).

    ``post`` receives it in the failed item's position, so results stay aligned with
    the inputs.

    Attributes:
        index: position of the item in the batch, from 0.
        exception: what the last attempt (or ``exec_fallback``) raised.
        attempts: how many attempts were made.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncParallelBatchNode, ItemError
        >>> class Invert(AsyncParallelBatchNode):
        ...     async def prep_async(self, shared): return [1, 0, 4]
        ...     async def exec_async(self, x): return 1 / x
        ...     async def post_async(self, shared, prep_res, results): shared["out"] = results
        >>> shared = {}
        >>> asyncio.run(Invert(on_item_error="collect").run_async(shared))
        >>> shared["out"][1]
        ItemError(index=1, exception=ZeroDivisionError('division by zero'), attempts=1)
    """

    index: int
    exception: BaseException
    attempts: int


class _Failure:
    """Internal: an item's failure on its way from the item runner to the batch loop."""

    __slots__ = ("attempts", "exc")

    def __init__(self, exc: BaseException, attempts: int) -> None:
        self.exc = exc
        self.attempts = attempts


def node_name(node: object) -> str:
    """The name used for ``node`` in events, errors and diagrams."""
    name = getattr(node, "name", None)
    return name if isinstance(name, str) and name else type(node).__name__


def check_on_item_error(value: object) -> OnItemError:
    if value not in ("raise", "collect"):
        raise ValueError(f"on_item_error must be 'raise' or 'collect', got {value!r}")
    return value


def check_positive_int(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")


def not_iterable(node: object, items: object) -> TypeError:
    return TypeError(
        f"{type(node).__name__} {node_name(node)!r}: prep returned "
        f"{type(items).__name__}, which is not iterable; return a list or another "
        "iterable of items (or None for an empty batch)"
    )


def batch_items(node: object, items: Any) -> Iterable[Any]:
    """``prep``'s result as the items of a batch: ``None`` (or another falsy
    non-iterable, as PocketFlow's ``items or []``) is an empty batch."""
    if items is None or (not isinstance(items, Iterable) and not items):
        return ()
    if not isinstance(items, Iterable):
        raise not_iterable(node, items)
    return items


def settle_item(collect: bool, index: int, result: Any) -> Any:
    """An item runner's outcome as its entry in the results list.

    A ``_Failure`` is raised (``collect=False``) or becomes an :class:`ItemError`.
    """
    if type(result) is _Failure:
        if not collect:
            raise result.exc
        return ItemError(index, result.exc, result.attempts)
    return result


def set_parallel_options(
    obj: object, max_concurrency: int | None, max_per_second: float | None
) -> None:
    """Check and store the options shared by the parallel batch classes."""
    check_positive_int("max_concurrency", max_concurrency, allow_none=True)
    check_non_negative("max_per_second", max_per_second, allow_none=True)
    if max_per_second == 0:
        raise ValueError("max_per_second must be > 0, or None for no limit")
    if max_concurrency is not None:
        obj._pb_max_concurrency = max_concurrency  # type: ignore[attr-defined]
    if max_per_second is not None:
        obj._pb_max_per_second = max_per_second  # type: ignore[attr-defined]


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


_STATE_HOOKS = ("__copy__", "__getstate__", "__setstate__", "__reduce__", "__reduce_ex__")
_LIBRARY_MODULES = ("builtins", "typing", "typing_extensions", "abc")


def _customises_copy(cls: type) -> bool:
    """Whether a class outside pocketbatch changes how its instances copy."""
    for klass in cls.__mro__:
        module = klass.__module__
        if module.startswith("pocketbatch.") or module in _LIBRARY_MODULES:
            continue
        own = vars(klass)
        if any(hook in own for hook in _STATE_HOOKS):
            return True
        slots = own.get("__slots__", ())
        slots = [slots] if isinstance(slots, str) else list(slots)
        if any(s not in ("__dict__", "__weakref__") for s in slots):
            return True
    return False


class _ConditionalTransition:
    """``node - "action"``: waits for ``>> target`` to add the labelled successor."""

    __slots__ = ("action", "src")

    def __init__(self, src: BaseNode[Any, Any, Any], action: str) -> None:
        self.src = src
        self.action = action

    def __rshift__(self, tgt: _NodeT) -> _NodeT:
        return self.src.next(tgt, self.action)


class BaseNode(Generic[SharedT, PrepT, ExecT]):
    """The smallest unit of a flow: ``prep(shared) -> exec(prep_res) -> post(...)``.

    ``prep`` reads from the shared store, ``exec`` does the work (and is what
    :class:`Node` retries), ``post`` writes results back and returns the *action*
    that picks the next node in a :class:`~pocketbatch.Flow`.

    Hooks are called positionally, so overriding them with any parameter names
    works. Nodes are copied before each run inside a flow, so state set on ``self``
    during a run does not leak into the next.

    Args:
        name: shown in events, errors and Mermaid diagrams (default: class name).

    Example:
        >>> from pocketbatch import BaseNode
        >>> class Greet(BaseNode):
        ...     def prep(self, shared): return shared["who"]
        ...     def exec(self, who): return f"hello {who}"
        ...     def post(self, shared, who, text): shared["text"] = text
        >>> shared = {"who": "ada"}
        >>> Greet().run(shared)
        >>> shared["text"]
        'hello ada'
    """

    name: str | None = None
    _pb_offload: bool = False  # run on a worker thread when a step of an async flow

    _EVENTS: ClassVar[tuple[EventKind, EventKind, EventKind]] = (
        EventKind.NODE_STARTED,
        EventKind.NODE_FINISHED,
        EventKind.NODE_FAILED,
    )

    def __init__(self, *, name: str | None = None) -> None:
        self.params: dict[str, Any] = {}
        self.successors: dict[str, BaseNode[Any, Any, Any]] = {}
        if name is not None:
            self.name = name

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if _customises_copy(cls):
            cls._pb_copy = copy.copy  # type: ignore[assignment]

    def _pb_copy(self) -> Self:
        """The per-step copy a flow makes: ``copy.copy(self)``, minus its generic
        machinery for the usual plain node (flows copy at every step, so this is
        the hot path). Subclasses with their own copy protocol or slots get
        ``copy.copy`` itself."""
        cls = type(self)
        new = cls.__new__(cls)
        new.__dict__.update(self.__dict__)
        return new

    # -- wiring ---------------------------------------------------------------

    def set_params(self, params: dict[str, Any]) -> None:
        """Replace this node's ``params`` (flows do this before each step).

        Example:
            >>> node = BaseNode()
            >>> node.set_params({"lang": "fr"})
            >>> node.params
            {'lang': 'fr'}
        """
        self.params = params

    def next(self, node: _NodeT, action: str = "default") -> _NodeT:
        """Add ``node`` as the successor for ``action`` and return it (for chaining).

        Warns ``Overwriting successor for action '<action>'`` when one existed.

        Example:
            >>> a, b = BaseNode(), BaseNode()
            >>> a.next(b, "approve") is b
            True
            >>> list(a.successors)
            ['approve']
        """
        if not isinstance(node, BaseNode):
            raise TypeError(
                f"a successor must be a node or a flow, got {type(node).__name__}: {node!r}"
            )
        if action in self.successors:
            warnings.warn(f"Overwriting successor for action '{action}'", stacklevel=2)
        self.successors[action] = node
        return node

    def __rshift__(self, other: _NodeT) -> _NodeT:
        """``a >> b``: ``b`` follows ``a`` on the ``"default"`` action."""
        return self.next(other)

    def __sub__(self, action: str) -> _ConditionalTransition:
        """``a - "approve" >> b``: ``b`` follows ``a`` when ``a`` returns ``"approve"``."""
        if isinstance(action, str):
            return _ConditionalTransition(self, action)
        raise TypeError(f"Action must be a string, got {type(action).__name__}: {action!r}")

    # -- hooks (override these) -------------------------------------------------

    def prep(self, shared: SharedT) -> PrepT:
        """Read what ``exec`` needs from the shared store."""
        return cast(PrepT, None)

    def exec(self, prep_res: PrepT) -> ExecT:
        """Do the work. Must not touch the shared store (it may be retried)."""
        return cast(ExecT, None)

    def post(self, shared: SharedT, prep_res: PrepT, exec_res: ExecT) -> Any:
        """Write results to the shared store; return the next action (``None`` = default)."""
        return None

    # -- running ------------------------------------------------------------------

    def _exec(self, prep_res: Any) -> Any:
        return self.exec(prep_res)

    def _steps(self, shared: Any) -> Any:
        p = self.prep(shared)
        e = self._exec(p)
        return self.post(shared, p, e)

    def _run(self, shared: Any) -> Any:
        observer = current_observer.get()
        if observer is None:
            return self._steps(shared)
        started, finished, failed = self._EVENTS
        name = node_name(self)
        observer(Event(started, name))
        try:
            action = self._steps(shared)
        except ObserverError:
            raise
        except Exception as exc:
            observer(Event(failed, name, error=exc))
            raise
        observer(Event(finished, name, action=action))
        return action

    def run(self, shared: SharedT, *, observer: Observer | None = None) -> Any:
        """Run this node (or flow) once on ``shared`` and return its action.

        Args:
            shared: the shared store handed to ``prep`` and ``post``.
            observer: called with an :class:`~pocketbatch.Event` for everything that
                happens during this run (see :mod:`pocketbatch.core._events`).

        Example:
            >>> BaseNode().run({}) is None
            True
        """
        if self.successors:
            warnings.warn("Node won't run successors. Use Flow.", stacklevel=2)
        if observer is None:
            return self._run(shared)
        with observing(observer):
            return self._run(shared)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {node_name(self)!r}>"


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

    def _delay_after(self, failed: int, index: int | None, exc: Exception) -> float:
        delay = retry_delay(self.wait, self._pb_backoff, self._pb_max_wait, self._pb_jitter, failed)
        observer = current_observer.get()
        if observer is not None:
            observer(
                Event(
                    EventKind.RETRIED,
                    node_name(self),
                    item=index,
                    attempt=failed,
                    delay=delay,
                    error=exc,
                )
            )
        return delay

    def _attempts(self, prep_res: Any, index: int | None, tally: list[int] | None) -> Any:
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
                    if tally is not None:
                        tally[0] = failed
                    if failed >= self.max_retries or not isinstance(exc, self._pb_retry_on):
                        return self.exec_fallback(prep_res, exc)
                    delay = self._delay_after(failed, index, exc)
                    if delay > 0:
                        time.sleep(delay)
                    _attempt.set((self, failed))
        finally:
            _attempt.reset(token)

    def _exec(self, prep_res: Any) -> Any:
        return self._attempts(prep_res, None, None)

    def _run_item(self, index: int, item: Any) -> Any:
        """Run one batch item with retries; a failure comes back as ``_Failure``."""
        tally = [1]
        observer = current_observer.get()
        if observer is None:
            try:
                return self._attempts(item, index, tally)
            except ObserverError:
                raise
            except Exception as exc:
                return _Failure(exc, tally[0])
        name = node_name(self)
        observer(Event(EventKind.ITEM_STARTED, name, item=index))
        try:
            result = self._attempts(item, index, tally)
        except ObserverError:
            raise
        except Exception as exc:
            observer(Event(EventKind.ITEM_FAILED, name, item=index, attempt=tally[0], error=exc))
            return _Failure(exc, tally[0])
        observer(Event(EventKind.ITEM_FINISHED, name, item=index))
        return result


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
        self,
        prep_res: Any,
        index: int | None,
        tally: list[int] | None,
        limiter: RateLimiter | None,
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
                    if tally is not None:
                        tally[0] = failed
                    if failed >= self.max_retries or not isinstance(exc, self._pb_retry_on):
                        return await self.exec_fallback_async(prep_res, exc)
                    delay = self._delay_after(failed, index, exc)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    _attempt.set((self, failed))
        finally:
            _attempt.reset(token)

    async def _exec(self, prep_res: Any) -> Any:
        return await self._attempts_async(prep_res, None, None, None)

    async def _run_item_async(
        self, index: int, item: Any, limiter: RateLimiter | None = None
    ) -> Any:
        """Run one batch item with retries; a failure comes back as ``_Failure``."""
        tally = [1]
        observer = current_observer.get()
        if observer is None:
            try:
                return await self._attempts_async(item, index, tally, limiter)
            except ObserverError:
                raise
            except Exception as exc:
                return _Failure(exc, tally[0])
        name = node_name(self)
        observer(Event(EventKind.ITEM_STARTED, name, item=index))
        try:
            result = await self._attempts_async(item, index, tally, limiter)
        except ObserverError:
            raise
        except Exception as exc:
            observer(Event(EventKind.ITEM_FAILED, name, item=index, attempt=tally[0], error=exc))
            return _Failure(exc, tally[0])
        observer(Event(EventKind.ITEM_FINISHED, name, item=index))
        return result

    async def _steps_async(self, shared: Any) -> Any:
        p = await self.prep_async(shared)
        e = await self._exec(p)
        return await self.post_async(shared, p, e)

    async def _run_async(self, shared: Any) -> Any:
        observer = current_observer.get()
        if observer is None:
            return await self._steps_async(shared)
        started, finished, failed = self._EVENTS
        name = node_name(self)
        observer(Event(started, name))
        try:
            action = await self._steps_async(shared)
        except ObserverError:
            raise
        except Exception as exc:
            observer(Event(failed, name, error=exc))
            raise
        observer(Event(finished, name, action=action))
        return action

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
