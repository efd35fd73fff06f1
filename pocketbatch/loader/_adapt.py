"""Adapters: plain functions, async functions, node classes and node instances as components.

User code does not have to look like a
:class:`~pocketbatch.loader._component.Component`: :func:`adapt` wraps it into that
shape (``async def __call__(input, ctx)``). The registry, module routes and
``/python/`` imports all go through it.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from pocketbatch._errors import ComponentError
from pocketbatch.core import AsyncNode, BaseNode
from pocketbatch.loader._component import CallContext, Component
from pocketbatch.loader._mocks import MockComponent

__all__ = ("adapt",)


async def off_loop(ctx: CallContext, fn: Callable[..., Any], /, *args: Any) -> Any:
    """``fn(*args)`` on a worker thread: the run's pool (as many threads as items in
    flight, :meth:`~pocketbatch.loader._services.RunServices.threads`) in a run, else
    asyncio's default pool. Context variables go along, as with ``asyncio.to_thread``."""
    if ctx.services is None:
        return await asyncio.to_thread(fn, *args)
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(ctx.services.threads(), call)


def _describe(target: object) -> str:
    """``module.qualname`` for functions and classes, ``repr`` for anything else."""
    qualname = getattr(target, "__qualname__", None)
    module = getattr(target, "__module__", None)
    if isinstance(qualname, str) and not isinstance(target, BaseNode):
        return f"{module}.{qualname}" if module else qualname
    return repr(target)


class _Adapted:
    """A user callable wrapped into the component shape (see :func:`adapt`)."""

    __slots__ = ("offload", "path", "target")
    kind: ClassVar[str] = "component"

    def __init__(self, target: Any, path: str, offload: bool) -> None:
        self.target = target
        self.path = path
        self.offload = offload

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        where = f" {self.path!r}" if self.path else ""
        return f"<{self.kind}{where}: {_describe(self.target)}>"


def _wants_context(target: Any) -> bool:
    """Whether ``target`` takes the CallContext: a second positional parameter that is
    required, or named ``ctx`` / ``context`` (an optional ``f(input, extra=None)``
    is left alone)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2:
        return False
    second = positional[1]
    return second.default is second.empty or second.name in ("ctx", "context")


class _AsyncFunction(_Adapted):
    __slots__ = ("with_context",)
    kind = "async function"

    def __init__(self, target: Any, path: str, offload: bool) -> None:
        super().__init__(target, path, offload)
        self.with_context = _wants_context(target)

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        if self.with_context:
            return await self.target(input, ctx)
        return await self.target(input)


class _SyncFunction(_Adapted):
    __slots__ = ("with_context",)
    kind = "function"

    def __init__(self, target: Any, path: str, offload: bool) -> None:
        super().__init__(target, path, offload)
        self.with_context = _wants_context(target)

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        args = (input, ctx) if self.with_context else (input,)
        if self.offload:
            result = await off_loop(ctx, self.target, *args)
        else:
            result = self.target(*args)
        if inspect.isawaitable(result):
            result = await result
        return result


class _NodeComponent(_Adapted):
    """Runs a fresh node per call on ``shared = {"input": input}``; returns ``shared["output"]``."""

    __slots__ = ()

    def _node(self) -> BaseNode[Any, Any, Any]:
        raise NotImplementedError

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        node = self._node()
        shared: dict[str, Any] = {"input": input}
        if isinstance(node, AsyncNode):
            await node.run_async(shared)
        elif self.offload or node._pb_offload:
            await off_loop(ctx, node.run, shared)
        else:
            node.run(shared)
        if "output" not in shared:
            raise ComponentError(
                "COMPONENT_FAILED", f"{type(node).__name__} did not set shared['output']"
            )
        return shared["output"]


class _NodeClass(_NodeComponent):
    __slots__ = ()
    kind = "node class"

    def _node(self) -> BaseNode[Any, Any, Any]:
        node: BaseNode[Any, Any, Any] = self.target()
        return node


class _NodeInstance(_NodeComponent):
    __slots__ = ()
    kind = "node"

    def _node(self) -> BaseNode[Any, Any, Any]:
        node: BaseNode[Any, Any, Any] = copy.copy(self.target)
        return node


def _for(path: str) -> str:
    return f"component {path!r}: " if path else ""


def _is_async_callable(target: object) -> bool:
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(type(target), "__call__", None)  # noqa: B004 - instances with async __call__
    return not inspect.isfunction(target) and inspect.iscoroutinefunction(call)


def _check_node_class(cls: type[Any], path: str) -> None:
    """Fail now, not at the first call, when a node class needs constructor arguments."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - C-level __init__
        return
    try:
        signature.bind()
    except TypeError:
        raise TypeError(
            f"{_for(path)}node class {cls.__qualname__} cannot be created without "
            f"arguments {signature}; register an instance instead (it is copied for each call)"
        ) from None


def adapt(target: object, *, offload: bool = False, path: str = "") -> Component:
    """Wrap a function, coroutine function, node class or node instance as a component.

    * an ``async def f(input)``: awaited;
    * a sync ``f(input)``: called on the event loop, or with ``offload=True`` on a
      worker thread (``asyncio.to_thread``); an awaitable it returns is awaited;
    * either kind taking a second positional parameter, ``f(input, ctx)``, also
      gets the :class:`~pocketbatch.loader.CallContext` (step id, run variables,
      flow folder);
    * a node class (a :class:`~pocketbatch.BaseNode` subclass): a new instance per
      call, run on ``shared = {"input": input}``; the result is ``shared["output"]``.
      An :class:`~pocketbatch.AsyncNode` is awaited with ``run_async``; a sync node
      runs with ``run`` (on a worker thread with ``offload=True`` or when the node
      was built with ``offload=True``);
    * a node instance: ``copy.copy``'d per call, then as above.

    A component (anything :func:`adapt` or :class:`MockComponent` made) is returned
    unchanged.

    Args:
        target: what to wrap.
        offload: run sync code on a worker thread instead of the event loop.
        path: the component path, for messages.

    Raises:
        TypeError: ``target`` is none of the above, or is a node class that cannot
            be created without arguments.

    Example:
        >>> import asyncio
        >>> from pocketbatch.loader._component import CallContext
        >>> shout = adapt(lambda text: text.upper(), path="/text/shout")
        >>> asyncio.run(shout("hi", CallContext("step", None, {})))
        'HI'
    """
    if isinstance(target, _Adapted | MockComponent):
        return target
    if isinstance(target, type):
        if issubclass(target, BaseNode):
            _check_node_class(target, path)
            return _NodeClass(target, path, offload)
        raise TypeError(
            f"{_for(path)}{target.__qualname__} is a class but not a node class "
            "(a BaseNode subclass); register a function, an async function, a node "
            "class or an instance"
        )
    if isinstance(target, BaseNode):
        return _NodeInstance(target, path, offload)
    if not callable(target):
        raise TypeError(
            f"{_for(path)}expected a function, an async function, or a node class or "
            f"instance, got {type(target).__name__}: {target!r:.80}"
        )
    if _is_async_callable(target):
        return _AsyncFunction(target, path, offload)
    return _SyncFunction(target, path, offload)
