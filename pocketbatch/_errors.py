"""The exceptions pocketbatch raises on its own account.

Every one of them derives from :class:`PocketbatchError`, so a single
``except PocketbatchError`` catches anything the library itself objects to.
Exceptions raised by *your* node code are never wrapped: they propagate
unchanged, exactly as in PocketFlow.

The tree::

    PocketbatchError
    ├── FlowDefinitionError (ValueError)   a graph is wired wrongly
    │   └── UnknownActionError             a strict flow met an action with no successor
    ├── LoadError (ValueError)             a flow or config file is invalid (file:line:column)
    ├── ComponentError                     a flow step's component failed with a code
    ├── NodeTimeoutError (TimeoutError)    one attempt of an async exec ran past `timeout`
    ├── ObserverError                      an observer raised; the run stops
    ├── MissingExtraError (ImportError)    an optional part is used but not installed

Example:
    >>> from pocketbatch import Flow, PocketbatchError
    >>> try:
    ...     Flow().run({})
    ... except PocketbatchError as exc:
    ...     print(type(exc).__name__)
    FlowDefinitionError
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

__all__ = (
    "ComponentError",
    "FlowDefinitionError",
    "LoadError",
    "MissingExtraError",
    "NodeTimeoutError",
    "ObserverError",
    "PocketbatchError",
    "UnknownActionError",
)


class PocketbatchError(Exception):
    """Root of every exception pocketbatch raises itself.

    Example:
        >>> issubclass(FlowDefinitionError, PocketbatchError)
        True
    """


class FlowDefinitionError(PocketbatchError, ValueError):
    """A flow is wired in a way that cannot run.

    Raised by :meth:`Flow.validate` and when a flow without a start node is run.
    The message names the flow and says how to fix it.

    Example:
        >>> from pocketbatch import Flow
        >>> Flow(name="empty").validate()
        Traceback (most recent call last):
        ...
        pocketbatch._errors.FlowDefinitionError: flow 'empty' has no start node; ...
    """


class UnknownActionError(FlowDefinitionError):
    """A node in a ``strict=True`` flow returned an action that has no successor.

    Non-strict flows (the default, as in PocketFlow) end with a warning instead.

    Attributes:
        node: name of the node that returned the action.
        action: the action it returned.
        known: the actions that node does have successors for.

    Example:
        >>> err = UnknownActionError("review", "maybe", ["approve", "reject"])
        >>> err.known
        ('approve', 'reject')
    """

    def __init__(self, node: str, action: object, known: Sequence[str]) -> None:
        self.node = node
        self.action = action
        self.known = tuple(known)
        listed = ", ".join(repr(a) for a in self.known)
        super().__init__(
            f"node {node!r} returned action {action!r}, which has no successor "
            f"(known actions: {listed})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node, self.action, self.known), self.__dict__)


class LoadError(PocketbatchError, ValueError):
    """A flow file or config file cannot be loaded.

    Raised by :func:`pocketbatch.load_flow` for YAML syntax errors, wrong types,
    unknown keys in a ``pocketbatch.yaml`` (keys Stepflow ignores in a flow or a
    ``stepflow-config.yml`` are :class:`~pocketbatch.LoadWarning` s instead),
    references to unknown steps, reference cycles, unknown components, ``next``
    targets that do not exist and invalid expressions. ``str(error)`` leads with
    ``file:line:column`` and names the step, so editors can jump to it.

    Attributes:
        message: what is wrong and how to fix it.
        file: the file (or ``"<string>"``), when known.
        line, column: 1-based position, when known.
        step: the id of the step concerned, when there is one.

    Example:
        >>> print(LoadError("unknown key 'inptu' (did you mean 'input'?)",
        ...                 file="flow.yaml", line=7, column=5, step="summarise"))
        flow.yaml:7:5: step 'summarise': unknown key 'inptu' (did you mean 'input'?)
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        step: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.step = step
        super().__init__(located(message, file, line, column, step))

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = partial(
            type(self), file=self.file, line=self.line, column=self.column, step=self.step
        )
        return (rebuild, (self.message,), self.__dict__)


def located(
    message: str, file: str | None, line: int | None, column: int | None, step: str | None
) -> str:
    """``file:line:column: step 'id': message``, leaving out what is not known (the text
    of a :class:`LoadError` and of a :class:`~pocketbatch.LoadWarning`).

    Example:
        >>> located("bad", "f.yaml", 3, None, "s")
        "f.yaml:3: step 's': bad"
    """
    where = ":".join(str(p) for p in (file, line, column) if p is not None)
    text = f"step {step!r}: {message}" if step is not None else message
    return f"{where}: {text}" if where else text


class ComponentError(PocketbatchError):
    """A flow step's component failed with an explicit error code and message.

    Raise it from a component to choose the ``{code, message}`` the step (and the
    flow result) fails with; any other exception fails the step with
    ``COMPONENT_FAILED``. Stepflow mock behaviours with ``outcome: failed`` raise it
    with their ``error`` unchanged.

    Example:
        >>> err = ComponentError("RATE_LIMITED", "slow down")
        >>> (err.code, err.message)
        ('RATE_LIMITED', 'slow down')
    """

    def __init__(self, code: str | int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"[{code}] {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.data), self.__dict__)


class NodeTimeoutError(PocketbatchError, TimeoutError):
    """One attempt of an async node's ``exec_async`` ran longer than its ``timeout``.

    It counts as a failed attempt: it is retried like any other exception (when
    :class:`TimeoutError` is covered by ``retry_on``) and reaches
    ``exec_fallback_async`` after the last attempt.

    Attributes:
        node: name of the node.
        attempt: the attempt that timed out, counting from 1.
        timeout: the limit in seconds.

    Example:
        >>> print(NodeTimeoutError("fetch", 2, 0.5))
        node 'fetch' attempt 2 timed out after 0.5 s
    """

    def __init__(self, node: str, attempt: int, timeout: float) -> None:
        self.node = node
        self.attempt = attempt
        self.timeout = timeout
        super().__init__(f"node {node!r} attempt {attempt} timed out after {timeout} s")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.node, self.attempt, self.timeout), self.__dict__)


class ObserverError(PocketbatchError):
    """An observer raised while being told about an event; the run stops.

    An observer's bug is never mistaken for a failure of the node or item it was
    observing: it is not retried, not collected as an
    :class:`~pocketbatch.ItemError`, and it ends the run. The observer's own
    exception is the ``__cause__``.

    Attributes:
        event: the event the observer was given.

    Example:
        >>> from pocketbatch import Node, ObserverError
        >>> def broken(event):
        ...     raise KeyError(event.kind)
        >>> try:
        ...     Node(name="n").run({}, observer=broken)
        ... except ObserverError as exc:
        ...     print(exc)
        observer raised KeyError(<EventKind.NODE_STARTED: 'node_started'>) on node_started of 'n'
    """

    def __init__(self, event: Any, error: BaseException | None = None) -> None:
        self.event = event
        kind = getattr(event, "kind", event)
        node = getattr(event, "node", None)
        super().__init__(f"observer raised {error!r} on {kind} of {node!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.event,), self.__dict__)


class MissingExtraError(PocketbatchError, ImportError):
    """An optional part of pocketbatch was used without its extra installed.

    Example:
        >>> print(MissingExtraError("the ray executor", "ray"))
        the ray executor needs the 'ray' extra: in the pocketbatch checkout, pip install '.[ray]'
    """

    def __init__(self, feature: str, extra: str) -> None:
        self.feature = feature
        self.extra = extra
        # pocketbatch is installed from its checkout (it is not on the package index).
        super().__init__(
            f"{feature} needs the {extra!r} extra: in the pocketbatch checkout, "
            f"pip install '.[{extra}]'"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.feature, self.extra), self.__dict__)
