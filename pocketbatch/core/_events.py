"""Events: what a run reports to the observer its caller passed in.

An observer is any callable taking one :class:`Event`. It is given to ``run`` /
``run_async`` (``flow.run(shared, observer=seen.append)``) and reaches every node,
nested flow and batch item of that run through a :class:`contextvars.ContextVar`,
so two runs side by side, in threads or tasks, each report to their own observer.
There is no global registry.

Observers are called synchronously, on the thread that runs the node; keep them
quick (and thread-safe when nodes run on a thread pool). An exception raised by
an observer stops the run as :class:`~pocketbatch.ObserverError`: it is never
taken for a failure of the node or item being observed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from pocketbatch._errors import ObserverError

__all__ = ("Event", "EventKind", "Observer", "RunReport")


class EventKind(enum.StrEnum):
    """What happened. ``str`` values, so they compare equal to their names.

    Example:
        >>> EventKind.ITEM_FAILED == "item_failed"
        True
    """

    FLOW_STARTED = "flow_started"
    FLOW_FINISHED = "flow_finished"
    FLOW_FAILED = "flow_failed"
    NODE_STARTED = "node_started"
    NODE_FINISHED = "node_finished"
    NODE_FAILED = "node_failed"
    ITEM_STARTED = "item_started"
    ITEM_FINISHED = "item_finished"
    ITEM_FAILED = "item_failed"
    RETRIED = "retried"


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened during a run.

    Attributes:
        kind: what happened.
        node: name of the node or flow (its ``name``, else its class name).
        item: position of the batch item (or sub-flow run) concerned, if any.
        attempt: for ``RETRIED``, the attempt that just failed (from 1); for
            ``ITEM_FAILED``, the number of attempts made.
        delay: for ``RETRIED``, seconds until the next attempt.
        action: for ``NODE_FINISHED`` / ``FLOW_FINISHED``, the action returned.
        error: for ``*_FAILED`` and ``RETRIED``, the exception.

    Example:
        >>> from pocketbatch import Node, Flow
        >>> seen = []
        >>> Flow(start=Node(name="hello")).run({}, observer=seen.append)
        >>> [f"{e.kind} {e.node}" for e in seen]  # doctest: +NORMALIZE_WHITESPACE
        ['flow_started Flow', 'node_started hello',
         'node_finished hello', 'flow_finished Flow']
    """

    kind: EventKind
    node: str
    item: int | None = None
    attempt: int | None = None
    delay: float | None = None
    action: object = None
    error: BaseException | None = None


class Observer(Protocol):
    """Anything callable with one :class:`Event`: a function, ``list.append``, ...

    Example:
        >>> from pocketbatch import Event, EventKind
        >>> def log(event: Event) -> None:
        ...     if event.kind is EventKind.ITEM_FAILED:
        ...         print(f"item {event.item} of {event.node} failed: {event.error!r}")
        >>> log(Event(EventKind.ITEM_FAILED, "translate", item=3, error=ValueError("x")))
        item 3 of translate failed: ValueError('x')
    """

    def __call__(self, event: Event, /) -> None: ...


current_observer: ContextVar[Observer | None] = ContextVar("pocketbatch_observer", default=None)


@contextmanager
def observing(observer: Observer | None) -> Iterator[None]:
    """Make ``observer`` the observer of everything run inside the block."""
    if observer is None:
        yield
        return
    token = current_observer.set(guarded(observer))
    try:
        yield
    finally:
        current_observer.reset(token)


def guarded(observer: Observer) -> Observer:
    """``observer``, with its exceptions turned into :class:`ObserverError`."""
    if getattr(observer, "_pocketbatch_guarded", False):
        return observer

    def call(event: Event, /) -> None:
        try:
            observer(event)
        except ObserverError:
            raise
        except Exception as exc:
            raise ObserverError(event, exc) from exc

    call._pocketbatch_guarded = True  # type: ignore[attr-defined]
    return call


class RunReport:
    """Reports one run of a node or flow: ``started`` on entering the block, then
    ``finished`` with the :attr:`action` the block set, or ``failed`` with the
    exception that left it (an :class:`ObserverError` passes unreported).

    ``kinds`` is the (started, finished, failed) triple of the node or flow, so
    sync and async runs share this and differ only in how they call the steps.

    Example:
        >>> seen = []
        >>> kinds = (EventKind.NODE_STARTED, EventKind.NODE_FINISHED, EventKind.NODE_FAILED)
        >>> with RunReport(seen.append, kinds, "greet") as report:
        ...     report.action = "done"
        >>> [(str(e.kind), e.action) for e in seen]
        [('node_started', None), ('node_finished', 'done')]
    """

    __slots__ = ("action", "kinds", "name", "observer")

    def __init__(
        self, observer: Observer, kinds: tuple[EventKind, EventKind, EventKind], name: str
    ) -> None:
        self.observer = observer
        self.kinds = kinds
        self.name = name
        self.action: object = None

    def __enter__(self) -> Self:
        self.observer(Event(self.kinds[0], self.name))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.observer(Event(self.kinds[1], self.name, action=self.action))
        elif isinstance(exc, Exception) and not isinstance(exc, ObserverError):
            self.observer(Event(self.kinds[2], self.name, error=exc))
