"""Batch items: :class:`ItemError`, the report each item run makes, and the
checks and helpers every batch class (nodes and flows, sync and async) shares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pocketbatch.core._base import node_name
from pocketbatch.core._events import Event, EventKind, current_observer
from pocketbatch.core._retry import check_non_negative

__all__ = ("ItemError", "ItemRun", "OnItemError")

OnItemError = Literal["raise", "collect"]
_T = TypeVar("_T")


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


class ItemRun:
    """One batch item (or sub-flow run) on its way through its attempts.

    It counts the attempts (for the :class:`ItemError`) and, when the run has an
    observer, reports ``item_started`` on creation, then ``item_failed`` or
    ``item_finished``. Sync and async item runners share it and differ only in
    whether they await.

    Example:
        >>> run = ItemRun(object(), 3)
        >>> run.attempts = 2
        >>> failure = run.failed(ValueError("bad"))
        >>> settle_item(True, run.index, failure)
        ItemError(index=3, exception=ValueError('bad'), attempts=2)
    """

    __slots__ = ("attempts", "index", "name", "observer")

    def __init__(self, owner: object, index: int) -> None:
        self.index = index
        self.attempts = 1
        self.observer = observer = current_observer.get()
        self.name = ""
        if observer is not None:
            self.name = node_name(owner)
            observer(Event(EventKind.ITEM_STARTED, self.name, item=index))

    def failed(self, exc: Exception) -> _Failure:
        """Report the item's failure; return it for :func:`settle_item`."""
        if self.observer is not None:
            self.observer(
                Event(
                    EventKind.ITEM_FAILED,
                    self.name,
                    item=self.index,
                    attempt=self.attempts,
                    error=exc,
                )
            )
        return _Failure(exc, self.attempts)

    def finished(self, result: _T, *, action: object = None) -> _T:
        """Report the item's success; return its ``result``."""
        if self.observer is not None:
            self.observer(Event(EventKind.ITEM_FINISHED, self.name, item=self.index, action=action))
        return result
