"""The base node: the ``prep -> exec -> post`` hooks, ``>>`` / ``- "action" >>`` wiring,
the per-step copy a flow makes, and the type variables the node classes share.

Everything else in :mod:`pocketbatch.core` builds on :class:`BaseNode`: retrying
nodes in :mod:`~pocketbatch.core._node` and :mod:`~pocketbatch.core._async_node`,
flows in :mod:`~pocketbatch.core._flow`.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, ClassVar, Generic, Self, cast, overload

from typing_extensions import TypeVar

from pocketbatch.core._events import EventKind, Observer, RunReport, current_observer, observing

__all__ = ("BaseNode", "ExecT", "ItemT", "PrepT", "SharedT", "node_name")

SharedT = TypeVar("SharedT", default=Any)
PrepT = TypeVar("PrepT", default=Any)
ExecT = TypeVar("ExecT", default=Any)
ItemT = TypeVar("ItemT", default=Any)
_NodeT = TypeVar("_NodeT", bound="BaseNode[Any, Any, Any]")


def node_name(node: object) -> str:
    """The name used for ``node`` in events, errors and diagrams."""
    name = getattr(node, "name", None)
    return name if isinstance(name, str) and name else type(node).__name__


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

    @overload
    def __rshift__(self, tgt: _NodeT) -> _NodeT: ...
    @overload
    def __rshift__(self, tgt: None) -> None: ...
    def __rshift__(self, tgt: _NodeT | None) -> _NodeT | None:
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
        # None (from ``node - "done" >> None``) ends the flow on that action, as in PocketFlow.
        self.successors: dict[str, BaseNode[Any, Any, Any] | None] = {}
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

    @overload
    def next(self, node: _NodeT, action: str = "default") -> _NodeT: ...
    @overload
    def next(self, node: None, action: str = "default") -> None: ...
    def next(self, node: _NodeT | None, action: str = "default") -> _NodeT | None:
        """Add ``node`` as the successor for ``action`` and return it (for chaining).

        Warns ``Overwriting successor for action '<action>'`` when one existed.
        ``None`` (``node - "done" >> None``, as PocketFlow allows) records that the
        flow ends on that action; it ends there with PocketFlow's ``Flow ends: ...``
        warning.

        Example:
            >>> a, b = BaseNode(), BaseNode()
            >>> a.next(b, "approve") is b
            True
            >>> list(a.successors)
            ['approve']
        """
        if node is not None and not isinstance(node, BaseNode):
            raise TypeError(
                f"a successor must be a node, a flow or None, got {type(node).__name__}: {node!r}"
            )
        if action in self.successors:
            warnings.warn(f"Overwriting successor for action '{action}'", stacklevel=2)
        self.successors[action] = node
        return node

    @overload
    def __rshift__(self, other: _NodeT) -> _NodeT: ...
    @overload
    def __rshift__(self, other: None) -> None: ...
    def __rshift__(self, other: _NodeT | None) -> _NodeT | None:
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
        with RunReport(observer, self._EVENTS, node_name(self)) as report:
            report.action = self._steps(shared)
        return report.action

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
