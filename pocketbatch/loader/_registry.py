"""Component paths to callables: the registry, adapters, mocks and config files.

A flow step names its component by a path such as ``/data/validate``. A
:class:`Resolver` turns that path into a
:class:`~pocketbatch.loader._component.Component`, trying in this order:

1. the :class:`ComponentRegistry` given to the loader;
2. the config file beside the flow (:func:`find_config`, :func:`load_config`): its
   mocks, then its routes from path prefixes to Python modules, then (for Stepflow's
   own ``stepflow-config.yml``) its plugin routes;
3. pocketbatch's builtins, by exact path;
4. ``/python/<module>.<function>`` imports, where they are allowed.

A path reaches only what a module offers on purpose: a route's one segment after
the prefix, or ``/python/``'s function name, must be a function or node class that
the module defines (its ``__module__``) or lists in ``__all__``; never a name
starting with ``_``, never a module, and never walked into (no ``a/b`` through
attributes, submodules or classes). Nested names are reachable only when a route
lists them in its ``components``.

User code does not have to look like a component: :func:`adapt` wraps plain sync
and async functions, node classes and node instances. Nothing here is global, so
two loaders with two registries never see each other's components.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal, TypeVar

from pocketbatch._errors import ComponentError, LoadError
from pocketbatch.core import AsyncNode, BaseNode
from pocketbatch.loader._component import CallContext, Component, LoaderOptions
from pocketbatch.loader._source import Document, PairList, did_you_mean, listed, read_document

__all__ = (
    "ComponentConfig",
    "ComponentRegistry",
    "MockComponent",
    "Resolver",
    "UnknownComponent",
    "adapt",
    "find_config",
    "load_config",
)

_T = TypeVar("_T")
DocPath = tuple[str | int, ...]
Behavior = tuple[Any, str, Any]
"""One mock behaviour: ``(input, outcome, result or error)``."""

CONFIG_NAMES = (
    "pocketbatch.yaml",
    "pocketbatch.yml",
    "stepflow-config.test.yml",
    "stepflow-config.yml",
)
_FIX = (
    "register it in a ComponentRegistry passed to the loader, route its prefix to a "
    "Python module in pocketbatch.yaml, or define a mock for it there"
)
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class _Missing:
    """Sentinel for an attribute that is not there."""


_MISSING = _Missing()


# ------------------------------------------------------------------ adapters


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
            result = await asyncio.to_thread(self.target, *args)
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
            await asyncio.to_thread(node.run, shared)
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


# ------------------------------------------------------------------ registry


def _check_path(path: object) -> str:
    if not isinstance(path, str):
        raise TypeError(f"a component path must be a string, got {type(path).__name__}: {path!r}")
    if not path.startswith("/") or path == "/":
        raise ValueError(
            f"a component path must start with '/', like '/data/validate'; got {path!r}"
        )
    return path


class ComponentRegistry:
    """Components by path, handed to the loader explicitly (there is no global registry).

    Register plain functions (sync or async), node classes or node instances; each is
    wrapped by :func:`adapt` when registered, so a wrong kind of object fails here and
    not in the middle of a run.

    Example:
        >>> components = ComponentRegistry()
        >>> @components.component("/data/validate")
        ... def validate(record):
        ...     return {"ok": bool(record.get("id"))}
        >>> validate({"id": 1})
        {'ok': True}
        >>> "/data/validate" in components, len(components)
        (True, 1)
    """

    def __init__(self) -> None:
        self._components: dict[str, Component] = {}

    def component(self, path: str, *, offload: bool = False) -> Callable[[_T], _T]:
        """A decorator that registers its target under ``path`` and returns it unchanged.

        Args:
            path: the component path, starting with ``/``.
            offload: run a sync target on a worker thread (see :func:`adapt`).

        Raises:
            ValueError: ``path`` does not start with ``/``, or is already registered.

        Example:
            >>> components = ComponentRegistry()
            >>> @components.component("/text/upper", offload=True)
            ... def upper(text):
            ...     return text.upper()
            >>> components.paths()
            ['/text/upper']
        """
        _check_path(path)

        def register(target: _T) -> _T:
            self.register(path, target, offload=offload)
            return target

        return register

    def register(self, path: str, target: object, *, offload: bool = False) -> None:
        """Register ``target`` under ``path``.

        Args:
            path: the component path, starting with ``/``.
            target: a function, an async function, a node class or a node instance.
            offload: run a sync target on a worker thread (see :func:`adapt`).

        Raises:
            ValueError: ``path`` does not start with ``/``, or is already registered.
            TypeError: ``target`` cannot be a component.

        Example:
            >>> components = ComponentRegistry()
            >>> components.register("/math/double", lambda n: 2 * n)
            >>> components.get("/math/double") is not None
            True
        """
        _check_path(path)
        if path in self._components:
            raise ValueError(
                f"component {path!r} is already registered; use another path or "
                "another ComponentRegistry"
            )
        self._components[path] = adapt(target, offload=offload, path=path)

    def get(self, path: str) -> Component | None:
        """The component registered under ``path``, or ``None``.

        Example:
            >>> ComponentRegistry().get("/nothing") is None
            True
        """
        return self._components.get(path)

    def paths(self) -> list[str]:
        """The registered paths, sorted.

        Example:
            >>> components = ComponentRegistry()
            >>> components.register("/b", print)
            >>> components.register("/a", print)
            >>> components.paths()
            ['/a', '/b']
        """
        return sorted(self._components)

    def __contains__(self, path: object) -> bool:
        return path in self._components

    def __len__(self) -> int:
        return len(self._components)

    def __repr__(self) -> str:
        return f"ComponentRegistry({self.paths()!r})"


# ------------------------------------------------------------------ mocks


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1``, ``1`` is ``1.0``, key order is irrelevant."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return bool(a == b)


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)


class MockComponent:
    """A stand-in component defined by behaviours, as in Stepflow's ``mock`` plugin.

    Each behaviour is ``(input, outcome, result_or_error)``. A call picks the first
    behaviour whose input equals the call's input exactly (as JSON values: ``true``
    is not ``1``, key order does not matter). ``"success"`` returns a copy of the
    result; ``"failed"`` raises :class:`~pocketbatch.ComponentError` with the error's
    ``code`` (default ``"COMPONENT_FAILED"``), ``message`` and ``data``. An input no
    behaviour matches fails with ``COMPONENT_FAILED``.

    Args:
        path: the component path, for messages.
        behaviors: ``(input, "success", result)`` or ``(input, "failed", error)``.
        input_schema, output_schema: kept for reference; not enforced.

    Raises:
        ValueError: an outcome other than ``"success"`` or ``"failed"``.
        TypeError: a behaviour that is not a triple, or a failed one whose error is
            not a mapping.

    Example:
        >>> import asyncio
        >>> from pocketbatch.loader._component import CallContext
        >>> mock = MockComponent("/mock/error", [
        ...     ({"mode": "succeed"}, "success", {"output": "succeeded"}),
        ...     ({"mode": "error"}, "failed", {"code": 8, "message": "error"}),
        ... ])
        >>> asyncio.run(mock({"mode": "succeed"}, CallContext("s", None, {})))
        {'output': 'succeeded'}
    """

    def __init__(
        self,
        path: str,
        behaviors: Iterable[Behavior],
        *,
        input_schema: Any = None,
        output_schema: Any = None,
    ) -> None:
        self.path = path
        checked: list[Behavior] = []
        for index, behavior in enumerate(behaviors):
            try:
                expected, outcome, value = behavior
            except (TypeError, ValueError):
                raise TypeError(
                    f"mock {path!r}: behavior {index} must be (input, outcome, result or "
                    f"error), got {behavior!r}"
                ) from None
            if outcome not in ("success", "failed"):
                raise ValueError(
                    f"mock {path!r}: behavior {index} has outcome {outcome!r}; "
                    "expected 'success' or 'failed'"
                )
            if outcome == "failed" and not isinstance(value, Mapping):
                raise TypeError(
                    f"mock {path!r}: behavior {index} failed with {value!r}; the error "
                    "must be a mapping like {'code': ..., 'message': ...}"
                )
            checked.append((expected, outcome, value))
        self.behaviors: tuple[Behavior, ...] = tuple(checked)
        self.input_schema = input_schema
        self.output_schema = output_schema

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        for expected, outcome, value in self.behaviors:
            if _json_equal(expected, input):
                if outcome == "success":
                    return copy.deepcopy(value)
                raise ComponentError(
                    value.get("code", "COMPONENT_FAILED"),
                    str(value.get("message", "")),
                    value.get("data"),
                )
        raise ComponentError(
            "COMPONENT_FAILED", f"no behavior defined for {self.path} on {_dump(input)}"
        )

    def __repr__(self) -> str:
        return f"MockComponent({self.path!r}, {len(self.behaviors)} behaviors)"


# ------------------------------------------------------------------ config files


@dataclass(frozen=True)
class _Pattern:
    """A Stepflow route key: ``/x/{name}`` (one segment), ``/x/{*name}`` (the rest),
    ``/prefix`` (a prefix), or an older-form glob such as ``/mock/*``."""

    text: str
    glob: bool = False

    @property
    def segments(self) -> list[str]:
        return self.text.split("/")[1:]

    def specificity(self) -> tuple[int, int]:
        """Sort key: more literal segments first, catch-alls last."""
        segments = self.segments
        literal = sum(1 for s in segments if not s.startswith("{"))
        catch_all = any(s.startswith("{*") for s in segments)
        return (-literal, int(catch_all))

    def match(self, path: str) -> tuple[dict[str, str], str] | None:
        """``(captures, remainder)`` when ``path`` matches, else ``None``."""
        if self.glob:
            if not fnmatchcase(path, self.text):
                return None
            prefix = re.split(r"[*?\[]", self.text, maxsplit=1)[0]
            return {}, path[len(prefix) :].lstrip("/")
        parts = path.split("/")[1:]
        captures: dict[str, str] = {}
        remainder = ""
        for index, segment in enumerate(self.segments):
            if segment.startswith("{*"):
                rest = parts[index:]
                if not rest or not all(rest):
                    return None
                remainder = captures[segment[2:-1]] = "/".join(rest)
                return captures, remainder
            if index >= len(parts):
                return None
            if segment.startswith("{"):
                if not parts[index]:
                    return None
                remainder = captures[segment[1:-1]] = parts[index]
            elif segment != parts[index]:
                return None
        extra = parts[len(self.segments) :]
        if not extra:
            return captures, remainder
        if captures or not all(extra):
            return None
        return captures, "/".join(extra)  # a plain "/prefix" route


@dataclass(frozen=True)
class _RouteRule:
    plugin: str
    component: str | None
    conditional: bool
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None

    def applies(self, path: str, remainder: str) -> bool:
        if self.conditional:
            return False
        names = {path, remainder, f"/{remainder}"}
        if self.allow is not None and not names & set(self.allow):
            return False
        return not (self.deny is not None and names & set(self.deny))

    def component_for(self, path: str, captures: Mapping[str, str], remainder: str) -> str:
        """The component name the plugin receives (Stepflow's default: ``/{component}``;
        the whole path for a route that matches it exactly)."""
        if self.component is None:
            return f"/{remainder}" if remainder else path

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            return captures.get(name, remainder)

        return re.sub(r"\{\*?([^{}]*)\}", fill, self.component)


@dataclass(frozen=True)
class _PluginRoute:
    pattern: _Pattern
    rules: tuple[_RouteRule, ...]
    where: str


@dataclass(frozen=True)
class _Plugin:
    name: str
    type: str
    components: Mapping[str, MockComponent]
    where: str


@dataclass
class ComponentConfig:
    """What a config file beside a flow says about components.

    Read with :func:`load_config` from either pocketbatch's own ``pocketbatch.yaml``
    or Stepflow's ``stepflow-config.yml``, unchanged. The fields that shape loader
    options (``python_imports``, ``load_file_root``, ``load_file_anywhere``) are
    ``None`` when the file does not set them.

    Attributes:
        file: the config file (``None`` for a config built in code).
        format: ``"pocketbatch"`` or ``"stepflow"``.
        routes: path prefix -> Python module (pocketbatch format). A route reaches
            one name after the prefix: a function or node class the module defines
            or lists in its ``__all__``, never a name starting with ``_``.
        route_components: for routes that list their components explicitly, path
            prefix -> {path after the prefix -> dotted name in the module}; such a
            route reaches those names only (nested ones included).
        mocks: path -> mock component (pocketbatch format).
        python_imports: whether ``/python/<module>.<function>`` is allowed.
        load_file_root: the directory ``/builtin/load_file`` (and sub-flow paths of
            ``/builtin/eval`` and ``/builtin/map``) is confined to.
        load_file_anywhere: lift that confinement.

    Example:
        >>> config = ComponentConfig(mocks={"/m": MockComponent("/m", [(1, "success", 2)])})
        >>> config.mock_paths(), config.python_imports
        (['/m'], None)
    """

    file: Path | None = None
    format: Literal["pocketbatch", "stepflow"] = "pocketbatch"
    routes: dict[str, str] = field(default_factory=dict)
    mocks: dict[str, MockComponent] = field(default_factory=dict)
    route_components: dict[str, dict[str, str]] = field(default_factory=dict)
    python_imports: bool | None = None
    load_file_root: Path | None = None
    load_file_anywhere: bool | None = None
    plugins: dict[str, _Plugin] = field(default_factory=dict, repr=False)
    plugin_routes: list[_PluginRoute] = field(default_factory=list, repr=False)
    locations: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The file's name, for messages."""
        return self.file.name if self.file is not None else "the component config"

    @property
    def directory(self) -> Path | None:
        """The directory holding the file: routed modules are imported from it."""
        return self.file.resolve().parent if self.file is not None else None

    def mock_paths(self) -> list[str]:
        """Paths of the mocks this config defines, including mocks of Stepflow plugins.

        A Stepflow mock keyed by the part after its route's prefix (``/error`` under
        ``/mock/{*component}``) is listed under the full path (``/mock/error``).

        Example:
            >>> ComponentConfig().mock_paths()
            []
        """
        paths = set(self.mocks)
        for route in self.plugin_routes:
            prefix = re.split(r"[{*?\[]", route.pattern.text, maxsplit=1)[0].rstrip("/")
            for rule in route.rules:
                plugin = self.plugins.get(rule.plugin)
                if plugin is None or plugin.type != "mock":
                    continue
                for key in plugin.components:
                    full = key if key.startswith(f"{prefix}/") else f"{prefix}/{key.lstrip('/')}"
                    if rule.component is not None:  # renamed: only the key itself is certain
                        full = key
                    paths.update(p for p in dict.fromkeys((key, full)) if route.pattern.match(p))
        return sorted(paths)


class _Reader:
    """Reads a config document, raising :class:`LoadError` at the offending spot."""

    def __init__(self, doc: Document, *, strict: bool) -> None:
        self.doc = doc
        self.strict = strict

    def error(self, message: str, where: DocPath) -> LoadError:
        return self.doc.error(message, where)

    def where(self, where: DocPath) -> str:
        pos = self.doc.position(where)
        return f"{self.doc.name}:{pos.line}:{pos.column}" if pos else self.doc.name

    def mapping(self, value: Any, where: DocPath, what: str) -> dict[Any, Any]:
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        raise self.error(f"{what} must be a mapping, got {_kind(value)}", where)

    def keys(
        self, mapping: Mapping[Any, Any], where: DocPath, allowed: Sequence[str], what: str
    ) -> None:
        if not self.strict:
            return
        for index, key in enumerate(mapping):
            if key not in allowed:
                hint = did_you_mean(str(key), allowed) or f" (expected {listed(allowed)})"
                within = f" in {what}" if what else ""
                raise self.error(f"unknown key {key!r}{within}{hint}", _child(where, key, index))

    def string(self, value: Any, where: DocPath, what: str) -> str:
        if isinstance(value, str) and value:
            return value
        raise self.error(f"{what} must be a non-empty string, got {_kind(value)}", where)

    def boolean(self, value: Any, where: DocPath, what: str) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        raise self.error(f"{what} must be true or false, got {_kind(value)}", where)


def _child(where: DocPath, key: Any, index: int) -> DocPath:
    """The document path of a mapping entry, as :mod:`._source` records it."""
    return (*where, key) if isinstance(key, str | int) else (*where, index)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, PairList):
        return "a mapping with non-string keys"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    return type(value).__name__


def find_config(flow_dir: Path | None) -> Path | None:
    """The component config beside a flow, or ``None``.

    Looks in ``flow_dir`` for ``pocketbatch.yaml``, ``pocketbatch.yml``,
    ``stepflow-config.test.yml`` and ``stepflow-config.yml``, in that order.

    Example:
        >>> find_config(None) is None
        True
    """
    if flow_dir is None:
        return None
    for name in CONFIG_NAMES:
        candidate = Path(flow_dir) / name
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | Path) -> ComponentConfig:
    """Read a ``pocketbatch.yaml`` or a Stepflow ``stepflow-config.yml``.

    The format is detected: a top-level ``plugins`` key (or a file named
    ``stepflow-config*``) means Stepflow's file, which is read as Stepflow reads it
    (unknown keys such as ``storageConfig`` are accepted). Anything else is
    pocketbatch's format, where unknown keys are errors::

        routes:                       # path prefix -> Python module
          /data: my_components.data   # '/data/validate' -> my_components.data.validate
          /tools:                     # or with its components listed: only these
            module: my_components
            components: [clean, text.count]   # '/tools/clean', '/tools/text/count'
        mocks:
          /mock/error:
            behaviors:
              - {input: {mode: error}, outcome: failed, error: {code: 8, message: error}}
        python_imports: true          # allow /python/<module>.<function>
        load_file: {root: data, anywhere: false}

    Routed modules are imported only when a flow uses them. A plain route reaches
    one name after its prefix (``-`` read as ``_``): a function or node class that
    the module defines, or lists in its ``__all__``; never a name starting with
    ``_``, a module, or anything inside a class or another module. A route with
    ``components`` (a list of dotted names, or a mapping from the path after the
    prefix to a dotted name) reaches exactly those.

    Raises:
        LoadError: the file cannot be read or parsed, or something in it is wrong;
            the message leads with ``file:line:column``.

    Example:
        >>> import pathlib, shutil, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "pocketbatch.yaml").write_text("routes:\\n  /data: tools.data\\n")
        >>> load_config(folder / "pocketbatch.yaml").routes
        {'/data': 'tools.data'}
        >>> shutil.rmtree(folder)
    """
    return config_from_document(read_document(path), Path(path).resolve())


def config_from_document(doc: Document, file: Path) -> ComponentConfig:
    """Read a config already parsed into ``doc`` (a file, or a flow's inline
    ``test.config``); ``file`` anchors relative module and ``load_file`` paths.

    Raises:
        LoadError: as :func:`load_config`.
    """
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error(f"a component config must be a mapping, got {_kind(data)}")
    if "plugins" in data or file.name.startswith("stepflow-config"):
        return _read_stepflow(_Reader(doc, strict=False), data, file)
    return _read_pocketbatch(_Reader(doc, strict=True), data, file)


# -- pocketbatch.yaml


_TOP_KEYS = ("routes", "mocks", "python_imports", "load_file")
_ROUTE_KEYS = ("module", "components")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_MOCK_KEYS = ("behaviors", "input_schema", "output_schema", "inputSchema", "outputSchema")


def _read_pocketbatch(r: _Reader, data: dict[Any, Any], file: Path) -> ComponentConfig:
    r.keys(data, (), _TOP_KEYS, "")
    config = ComponentConfig(file=file, format="pocketbatch")
    routes = r.mapping(data.get("routes"), ("routes",), "'routes'")
    for index, (prefix, value) in enumerate(routes.items()):
        at = _child(("routes",), prefix, index)
        if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/"):
            raise r.error(
                f"a route prefix must start with '/' and not end with one, like '/data'; "
                f"got {prefix!r}",
                at,
            )
        module, module_at = value, at
        if isinstance(value, dict):
            r.keys(value, at, _ROUTE_KEYS, f"route {prefix!r}")
            module = value.get("module")
            module_at = (*at, "module") if "module" in value else at
            if "components" in value:
                config.route_components[prefix] = _route_components(
                    r, prefix, value["components"], (*at, "components")
                )
        if not isinstance(module, str) or not _MODULE_NAME.fullmatch(module):
            raise r.error(
                f"route {prefix!r} must name a Python module, like 'my_components.data' "
                f"or {{module: my_components.data, components: [validate]}}; got {_kind(module)}",
                module_at,
            )
        config.routes[prefix] = module
        config.locations[prefix] = r.where(at)
    mocks = r.mapping(data.get("mocks"), ("mocks",), "'mocks'")
    for index, (mock_path, spec) in enumerate(mocks.items()):
        at = _child(("mocks",), mock_path, index)
        if not isinstance(mock_path, str) or not mock_path.startswith("/"):
            raise r.error(
                f"a mock's path must start with '/', like '/mock/error'; got {mock_path!r}", at
            )
        config.mocks[mock_path] = _mock(r, mock_path, spec, at)
    config.python_imports = r.boolean(
        data.get("python_imports"), ("python_imports",), "'python_imports'"
    )
    load_file = r.mapping(data.get("load_file"), ("load_file",), "'load_file'")
    r.keys(load_file, ("load_file",), ("root", "anywhere"), "'load_file'")
    if load_file.get("root") is not None:
        root = r.string(load_file["root"], ("load_file", "root"), "'load_file.root'")
        config.load_file_root = (file.parent / root).resolve()
    config.load_file_anywhere = r.boolean(
        load_file.get("anywhere"), ("load_file", "anywhere"), "'load_file.anywhere'"
    )
    return config


def _public_dotted(name: Any) -> bool:
    """Whether ``name`` is a dotted Python name none of whose parts is private."""
    return (
        isinstance(name, str)
        and _MODULE_NAME.fullmatch(name) is not None
        and not any(part.startswith("_") for part in name.split("."))
    )


def _route_components(r: _Reader, prefix: str, value: Any, where: DocPath) -> dict[str, str]:
    """A route's explicit ``components``: a list of dotted names in the module
    (``tools.count`` is reached at ``<prefix>/tools/count``), or a mapping from the
    path after the prefix to a dotted name. Nothing private, nothing but names."""
    found: dict[str, str] = {}
    if isinstance(value, list) and not isinstance(value, PairList):
        for index, name in enumerate(value):
            if not _public_dotted(name):
                raise r.error(
                    f"route {prefix!r}: a listed component must be a public (dotted) name in "
                    f"the module, like 'validate' or 'tools.count'; got {_kind(name)}",
                    (*where, index),
                )
            found[name.replace(".", "/")] = name
        return found
    if isinstance(value, dict):
        for index, (key, name) in enumerate(value.items()):
            at = _child(where, key, index)
            if not isinstance(key, str) or not all(
                _PATH_SEGMENT.fullmatch(part) for part in key.split("/")
            ):
                raise r.error(
                    f"route {prefix!r}: a component's path after the prefix is one or more "
                    f"segments of letters, digits, '-' and '_' (not starting with '_'), like "
                    f"'validate' or 'tools/count'; got {key!r}",
                    at,
                )
            if not _public_dotted(name):
                raise r.error(
                    f"route {prefix!r}: component {key!r} must name a public (dotted) name in "
                    f"the module, like 'validate' or 'tools.count'; got {_kind(name)}",
                    at,
                )
            found[key] = name
        return found
    raise r.error(
        f"route {prefix!r}: 'components' must be a list of names in the module, or a mapping "
        f"from the path after the prefix to a name in the module; got {_kind(value)}",
        where,
    )


def _mock(r: _Reader, path: str, spec: Any, where: DocPath) -> MockComponent:
    spec = r.mapping(spec, where, f"mock {path!r}")
    r.keys(spec, where, _MOCK_KEYS, f"mock {path!r}")
    behaviors = _behaviors(r, spec.get("behaviors"), (*where, "behaviors"))
    return MockComponent(
        path,
        behaviors,
        input_schema=spec.get("input_schema", spec.get("inputSchema")),
        output_schema=spec.get("output_schema", spec.get("outputSchema")),
    )


def _behaviors(r: _Reader, value: Any, where: DocPath) -> list[Behavior]:
    """A list of ``{input, outcome, result|error}``, or Stepflow's mapping keyed by input."""
    if value is None:
        return []
    found: list[Behavior] = []
    if isinstance(value, list) and not isinstance(value, PairList):
        for index, spec in enumerate(value):
            at = (*where, index)
            if not isinstance(spec, dict) or "input" not in spec:
                raise r.error(
                    "a mock behavior in a list needs an 'input' and an 'outcome' "
                    f"('success' with a 'result', or 'failed' with an 'error'); got {_kind(spec)}",
                    at,
                )
            found.append((spec["input"], *_outcome(r, spec, at, with_input=True)))
        return found
    if isinstance(value, dict | PairList):
        pairs = list(value) if isinstance(value, PairList) else list(value.items())
        for index, (key, spec) in enumerate(pairs):
            at = _child(where, key, index)
            found.append((_behavior_input(r, key, at), *_outcome(r, spec, at, with_input=False)))
        return found
    raise r.error(
        f"'behaviors' must be a list of {{input, outcome, ...}} or a mapping from input to "
        f"outcome, got {_kind(value)}",
        where,
    )


def _behavior_input(r: _Reader, key: Any, where: DocPath) -> Any:
    """A behaviour's input from its key: a YAML mapping, or JSON text such as ``'{"a": 1}'``."""
    if isinstance(key, str) and key.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(key)
        except ValueError as exc:
            raise r.error(
                f"the behavior key {key!r} looks like JSON but is not: {exc}", where
            ) from None
    return key


def _outcome(r: _Reader, spec: Any, where: DocPath, *, with_input: bool) -> tuple[str, Any]:
    spec = r.mapping(spec, where, "a mock behavior")
    allowed = (
        ("input", "outcome", "result", "error") if with_input else ("outcome", "result", "error")
    )
    r.keys(spec, where, allowed, "a mock behavior")
    outcome = spec.get("outcome")
    if outcome is None:
        if isinstance(spec.get("error"), str) and "result" not in spec:
            # Stepflow's "internal error" behaviour: {error: "message"}.
            return "failed", {"code": "COMPONENT_FAILED", "message": spec["error"]}
        raise r.error(
            "a mock behavior needs 'outcome: success' with a 'result', or "
            "'outcome: failed' with an 'error: {code, message}'",
            where,
        )
    if outcome == "success":
        if "result" not in spec:
            raise r.error("'outcome: success' needs a 'result'", (*where, "outcome"))
        return "success", spec["result"]
    if outcome == "failed":
        error = spec.get("error")
        error_at = (*where, "error") if "error" in spec else (*where, "outcome")
        if not isinstance(error, dict):
            raise r.error(
                f"'outcome: failed' needs an 'error' mapping with a 'code' and a 'message', "
                f"got {_kind(error)}",
                error_at,
            )
        r.keys(error, error_at, ("code", "message", "data"), "a mock error")
        code = error.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, str | int)):
            raise r.error(
                f"an error code must be a string or an integer, got {_kind(code)}",
                (*error_at, "code"),
            )
        message = error.get("message")
        if message is not None and not isinstance(message, str):
            raise r.error(
                f"an error message must be a string, got {_kind(message)}", (*error_at, "message")
            )
        return "failed", error
    if outcome == "skipped":
        raise r.error(
            "pocketbatch mocks cannot skip a step; use 'outcome: success' or 'outcome: failed'",
            (*where, "outcome"),
        )
    hint = did_you_mean(str(outcome), ("success", "failed")) or " (expected 'success' or 'failed')"
    raise r.error(f"unknown outcome {outcome!r}{hint}", (*where, "outcome"))


# -- stepflow-config.yml


def _read_stepflow(r: _Reader, data: dict[Any, Any], file: Path) -> ComponentConfig:
    config = ComponentConfig(file=file, format="stepflow")
    plugins = r.mapping(data.get("plugins"), ("plugins",), "'plugins'")
    for index, (name, spec) in enumerate(plugins.items()):
        at = _child(("plugins",), name, index)
        spec = r.mapping(spec, at, f"plugin {name!r}")
        kind = spec.get("type")
        if not isinstance(kind, str):
            raise r.error(f"plugin {name!r} needs a 'type' (builtin, mock, grpc, mcp, ...)", at)
        components: dict[str, MockComponent] = {}
        if kind == "mock":
            entries = r.mapping(
                spec.get("components"), (*at, "components"), f"the components of plugin {name!r}"
            )
            for i, (path, component) in enumerate(entries.items()):
                component_at = _child((*at, "components"), path, i)
                components[str(path)] = _mock(r, str(path), component, component_at)
        config.plugins[str(name)] = _Plugin(str(name), kind, components, r.where(at))
    routes = r.mapping(data.get("routes"), ("routes",), "'routes'")
    for index, (pattern, rules) in enumerate(routes.items()):
        at = _child(("routes",), pattern, index)
        compiled = _pattern(r, pattern, at)
        if not isinstance(rules, list) or isinstance(rules, PairList):
            raise r.error(
                f"route {pattern!r} must be a list of rules like [{{plugin: name}}], "
                f"got {_kind(rules)}",
                at,
            )
        parsed = tuple(_rule(r, config, rule, (*at, i)) for i, rule in enumerate(rules))
        config.plugin_routes.append(_PluginRoute(compiled, parsed, r.where(at)))
    config.plugin_routes.sort(key=lambda route: route.pattern.specificity())
    routing = data.get("routing")
    if routing is not None:
        if not isinstance(routing, list) or isinstance(routing, PairList):
            raise r.error(
                f"'routing' must be a list of {{match, target}}, got {_kind(routing)}", ("routing",)
            )
        for index, entry in enumerate(routing):
            at = ("routing", index)
            entry = r.mapping(entry, at, "a 'routing' entry")
            match = r.string(entry.get("match"), (*at, "match"), "'match'")
            target = r.string(entry.get("target"), (*at, "target"), "'target'")
            _known_plugin(r, config, target, (*at, "target"))
            conditional = bool(entry.get("input") or entry.get("conditions"))
            rule = _RouteRule(target, None, conditional, None, None)
            config.plugin_routes.append(
                _PluginRoute(_Pattern(match, glob=True), (rule,), r.where(at))
            )
    return config


def _pattern(r: _Reader, pattern: Any, where: DocPath) -> _Pattern:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise r.error(
            f"a route must start with '/', like '/mock/{{*component}}'; got {pattern!r}", where
        )
    segments = pattern.split("/")[1:]
    for index, segment in enumerate(segments):
        whole = re.fullmatch(r"\{(\*?)[A-Za-z_][A-Za-z0-9_]*\}", segment)
        if ("{" in segment or "}" in segment) and not whole:
            raise r.error(
                f"route {pattern!r}: pocketbatch understands placeholders only as whole "
                "segments, like '/x/{name}' or '/x/{*rest}'",
                where,
            )
        if whole and whole.group(1) and index != len(segments) - 1:
            raise r.error(
                f"route {pattern!r}: a '{{*...}}' placeholder must be the last segment", where
            )
    return _Pattern(pattern)


def _known_plugin(r: _Reader, config: ComponentConfig, name: str, where: DocPath) -> None:
    if name not in config.plugins:
        hint = did_you_mean(name, config.plugins) or f" (plugins: {listed(sorted(config.plugins))})"
        raise r.error(f"unknown plugin {name!r}{hint}", where)


def _rule(r: _Reader, config: ComponentConfig, rule: Any, where: DocPath) -> _RouteRule:
    rule = r.mapping(rule, where, "a route rule")
    plugin = r.string(
        rule.get("plugin"), (*where, "plugin") if "plugin" in rule else where, "a rule's 'plugin'"
    )
    _known_plugin(r, config, plugin, (*where, "plugin"))
    component = rule.get("component")
    if component is not None:
        component = r.string(component, (*where, "component"), "a rule's 'component'")
    lists: list[tuple[str, ...] | None] = []
    for camel, snake in (
        ("componentAllow", "component_allow"),
        ("componentDeny", "component_deny"),
    ):
        key = camel if camel in rule else snake
        value = rule.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise r.error(
                f"'{key}' must be a list of component names, got {_kind(value)}", (*where, key)
            )
        lists.append(tuple(value) if value is not None else None)
    return _RouteRule(plugin, component, bool(rule.get("conditions")), lists[0], lists[1])


# ------------------------------------------------------------------ resolution


class UnknownComponent(Exception):
    """A component path that no registry, config, builtin or import provides.

    The loader turns it into a :class:`~pocketbatch.LoadError` at the step's
    position.

    Attributes:
        path: the component path.
        message: what went wrong, a did-you-mean, what was tried and how to fix it.
        tried: the places looked in, in order.

    Example:
        >>> err = UnknownComponent("/data/x", "unknown component '/data/x'")
        >>> err.path, str(err)
        ('/data/x', "unknown component '/data/x'")
    """

    def __init__(self, path: str, message: str, tried: Sequence[str] = ()) -> None:
        self.path = path
        self.message = message
        self.tried = tuple(tried)
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.message, self.tried), self.__dict__)


@contextmanager
def _first_on_sys_path(directory: Path | None) -> Iterator[None]:
    """Put ``directory`` first on ``sys.path`` for the duration of an import."""
    if directory is None:
        yield
        return
    entry = str(directory)
    sys.path.insert(0, entry)
    try:
        importlib.invalidate_caches()
        yield
    finally:
        with suppress(ValueError):  # the imported code may have removed it
            sys.path.remove(entry)


def _import_from(directory: Path | None, module_name: str) -> ModuleType:
    """Import ``module_name`` as found from ``directory`` first.

    Two flows in one process may each route to a ``components`` module beside
    them. When a module of the same top-level name is already imported from
    somewhere else, this directory's one is loaded as a separate copy under a
    private name, so each flow gets its own components.
    """
    if directory is None:
        return importlib.import_module(module_name)
    top, _, rest = module_name.partition(".")
    as_file = directory / f"{top}.py"
    as_package = directory / top / "__init__.py"
    local = as_file if as_file.is_file() else as_package if as_package.is_file() else None
    loaded = sys.modules.get(top)
    loaded_from = getattr(loaded, "__file__", None)
    if (
        local is None
        or loaded is None
        or (loaded_from is not None and Path(loaded_from).resolve() == local.resolve())
    ):
        with _first_on_sys_path(directory):
            return importlib.import_module(module_name)
    digest = hashlib.sha1(str(directory.resolve()).encode()).hexdigest()[:12]
    alias = f"_pocketbatch_routes_{digest}_{top}"
    if alias not in sys.modules:
        search = [str(local.parent)] if local == as_package else None
        spec = importlib.util.spec_from_file_location(
            alias, local, submodule_search_locations=search
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {local}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[alias]
            raise
    return importlib.import_module(f"{alias}.{rest}" if rest else alias)


def _attribute(owner: Any, name: str) -> Any:
    """``owner.<name>``, importing a package's submodule if need be; private names
    are never looked up. Only for the dotted names a config lists explicitly."""
    if not name.isidentifier() or name.startswith("_"):
        return _MISSING
    value = getattr(owner, name, _MISSING)
    if value is not _MISSING:
        return value
    if isinstance(owner, ModuleType) and hasattr(owner, "__path__"):
        submodule = f"{owner.__name__}.{name}"
        try:
            return importlib.import_module(submodule)
        except ModuleNotFoundError as exc:
            if exc.name != submodule:
                raise
    return _MISSING


def _all_names(module: ModuleType) -> frozenset[str]:
    """The names in ``module.__all__`` (none when it is not a list or tuple of strings)."""
    names = vars(module).get("__all__")
    if isinstance(names, list | tuple) and all(isinstance(n, str) for n in names):
        return frozenset(names)
    return frozenset()


def _offered(module: ModuleType, name: str) -> Any:
    """What ``module`` has under the public ``name``: its own global, or a name in its
    ``__all__``. No submodule is imported and no module ``__getattr__`` runs for
    other names; ``_MISSING`` for a private or absent name."""
    if not name.isidentifier() or name.startswith("_"):
        return _MISSING
    value = vars(module).get(name, _MISSING)
    if value is _MISSING and name in _all_names(module):
        value = getattr(module, name, _MISSING)
    return value


def _not_offered(module: ModuleType, name: str, value: Any) -> str | None:
    """Why ``module.<name>`` (``value``) may not be a component, or ``None`` when it
    may: it must be defined in ``module`` (its ``__module__``) or listed in its
    ``__all__``, and never be a module. A value that is not callable at all is left
    to :func:`adapt`, which says what it is."""
    if isinstance(value, ModuleType):
        return (
            f"{name!r} is a module; expected a function, an async function, or a node class "
            "(a module's contents are never walked into)"
        )
    if not callable(value) or name in _all_names(module):
        return None
    origin = getattr(value, "__module__", None)
    if isinstance(origin, str) and origin == module.__name__:
        return None
    where = f"module {origin!r}" if isinstance(origin, str) else "elsewhere"
    return (
        f"{name!r} is defined in {where}, not in {module.__name__!r}; only functions and "
        "node classes a module defines, or lists in its __all__, are components"
    )


def _offered_callables(module: ModuleType) -> list[str]:
    """The names a route or ``/python/`` path may reach in ``module`` (for did-you-mean)."""
    found = []
    for name in dict.fromkeys([*vars(module), *sorted(_all_names(module))]):
        value = _offered(module, name)
        if value is not _MISSING and callable(value) and _not_offered(module, name, value) is None:
            found.append(name)
    return found


class Resolver:
    """Turns component paths into components, in the loader's order of precedence.

    In order: the ``registry``; the ``config``'s mocks, module routes and Stepflow
    plugin routes; the ``builtins`` by exact path; and ``/python/<module>.<function>``
    imports when ``options.allow_python_imports`` is true and the config does not say
    ``python_imports: false``. Results are cached per path.

    Args:
        registry: components registered in code.
        config: the config file beside the flow (see :func:`load_config`).
        options: the loader's options.
        builtins: path -> builtin component.
        base_dir: the directory put first on ``sys.path`` for ``/python/`` imports
            (default: the config file's directory).

    Example:
        >>> components = ComponentRegistry()
        >>> components.register("/data/validate", lambda record: record)
        >>> resolver = Resolver(components, None, LoaderOptions(), {})
        >>> resolver.resolve("/data/validate") is components.get("/data/validate")
        True
        >>> try:
        ...     resolver.resolve("/data/validte")
        ... except UnknownComponent as exc:
        ...     print(exc.message.split(";")[0])
        unknown component '/data/validte' (did you mean '/data/validate'?)
    """

    def __init__(
        self,
        registry: ComponentRegistry | None,
        config: ComponentConfig | None,
        options: LoaderOptions,
        builtins: Mapping[str, Component],
        *,
        base_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.options = options
        self.builtins = builtins
        self.base_dir = base_dir if base_dir is not None else (config.directory if config else None)
        self._cache: dict[str, Component] = {}

    def known_paths(self) -> list[str]:
        """Every path this resolver knows without importing anything, sorted.

        Example:
            >>> Resolver(None, None, LoaderOptions(), {}).known_paths()
            []
        """
        paths = set(self.builtins)
        if self.registry is not None:
            paths.update(self.registry.paths())
        if self.config is not None:
            paths.update(self.config.mock_paths())
            for prefix, listed in self.config.route_components.items():
                paths.update(f"{prefix}/{rest}" for rest in listed)
        return sorted(paths)

    def resolve(self, path: str) -> Component:
        """The component for ``path``.

        Raises:
            UnknownComponent: nothing provides it; the message names the path, the
                closest known path, what was tried and how to fix it.

        Example:
            >>> resolver = Resolver(None, None, LoaderOptions(), {})
            >>> resolver.resolve("/python/json.dumps")
            <function '/python/json.dumps': json.dumps>
        """
        found = self._cache.get(path)
        if found is None:
            found = self._cache[path] = self._find(path)
        return found

    # -- the stages

    def _find(self, path: str) -> Component:
        tried: list[str] = []
        choices: list[str] = []
        if self.registry is not None:
            found = self.registry.get(path)
            if found is not None:
                return found
            tried.append("the ComponentRegistry")
        if self.config is not None:
            found = self._from_config(self.config, path, tried, choices)
            if found is not None:
                return found
        found = self.builtins.get(path)
        if found is not None:
            return found
        tried.append("the builtins")
        if path.startswith("/python/"):
            return self._python_import(path, tried, choices)
        headline = f"unknown component {path!r}"
        if not path.startswith("/"):
            headline += " (component paths start with '/')"
        raise self._unknown(path, headline, tried, choices, fix=_FIX)

    def _unknown(
        self,
        path: str,
        headline: str,
        tried: Sequence[str],
        choices: Iterable[str] = (),
        *,
        fix: str = "",
    ) -> UnknownComponent:
        probe = path if path.startswith("/") else f"/{path}"
        hint = did_you_mean(probe, sorted({*self.known_paths(), *choices}))
        message = headline + hint
        if tried:
            message += "; tried: " + "; ".join(tried)
        if fix and not hint:
            message += f". To provide it, {fix}"
        return UnknownComponent(path, message, tried)

    def _from_config(
        self, config: ComponentConfig, path: str, tried: list[str], choices: list[str]
    ) -> Component | None:
        mock = config.mocks.get(path)
        if mock is not None:
            return mock
        if config.mocks:
            tried.append(f"the mocks in {config.name}")
        found = self._from_module_route(config, path, tried, choices)
        if found is not None:
            return found
        return self._from_plugins(config, path, tried)

    def _from_module_route(
        self, config: ComponentConfig, path: str, tried: list[str], choices: list[str]
    ) -> Component | None:
        prefixes = [p for p in config.routes if path.startswith(f"{p}/")]
        if not prefixes:
            if config.routes:
                tried.append(f"the routes in {config.name} (no prefix matches)")
            return None
        prefix = max(prefixes, key=len)
        module_name = config.routes[prefix]
        where = config.locations.get(prefix, config.name)
        label = f"route {prefix!r} -> module {module_name!r} ({where})"
        rest = path[len(prefix) + 1 :]
        segments = rest.split("/")
        if not all(segments):
            tried.append(f"{label}, but the path names no function after the prefix")
            return None
        listed = config.route_components.get(prefix)
        if listed is not None:
            return self._listed_route(config, path, prefix, rest, listed, label, tried, choices)
        if len(segments) > 1:
            raise UnknownComponent(
                path,
                f"component {path!r} is not allowed: {label} reaches one name after the "
                f"prefix, like '{prefix}/validate', and {rest!r} goes deeper (into "
                "attributes, submodules or classes, which routes never do); to use a nested "
                f"name, list it in the route's 'components' in {config.name}",
                tried,
            )
        names = dict.fromkeys((rest, rest.replace("-", "_")))
        if any(name.startswith("_") for name in names):
            tried.append(
                f"{label}, which has no {rest!r} (a name starting with '_' is private and "
                "never a component)"
            )
            return None
        try:
            with _first_on_sys_path(config.directory):
                module = _import_from(config.directory, module_name)
        except Exception as exc:
            tried.append(f"{label}, which cannot be imported ({type(exc).__name__}: {exc})")
            return None
        found = next(((n, v) for n in names if (v := _offered(module, n)) is not _MISSING), None)
        if found is None:
            choices.extend(f"{prefix}/{name}" for name in _offered_callables(module))
            tried.append(f"{label}, which has no {rest!r}")
            return None
        name, target = found
        reason = _not_offered(module, name, target)
        if reason is not None:
            raise UnknownComponent(
                path,
                f"component {path!r} is not allowed: {label}: {reason}; to use it, define "
                f"it in {module_name!r}, add it to the module's __all__, or list it in the "
                f"route's 'components' in {config.name}",
                tried,
            )
        try:
            return adapt(target, path=path)
        except TypeError as exc:
            tried.append(f"{label}: {exc}")
            return None

    def _listed_route(
        self,
        config: ComponentConfig,
        path: str,
        prefix: str,
        rest: str,
        listed: Mapping[str, str],
        label: str,
        tried: list[str],
        choices: list[str],
    ) -> Component | None:
        """A route whose components are listed in the config: exactly those names."""
        key = next((k for k in (rest, rest.replace("-", "_")) if k in listed), None)
        if key is None:
            choices.extend(f"{prefix}/{k}" for k in listed)
            tried.append(f"{label}, whose listed components have no {rest!r}")
            return None
        dotted = listed[key]
        try:
            with _first_on_sys_path(config.directory):
                owner: Any = _import_from(config.directory, config.routes[prefix])
                for part in dotted.split("."):
                    owner = _attribute(owner, part)
                    if owner is _MISSING:
                        break
        except Exception as exc:
            tried.append(
                f"{label}, whose listed {dotted!r} cannot be imported ({type(exc).__name__}: {exc})"
            )
            return None
        if owner is _MISSING:
            tried.append(f"{label}, which has no {dotted!r} (listed for {key!r})")
            return None
        if isinstance(owner, ModuleType):
            raise UnknownComponent(
                path,
                f"component {path!r} is not allowed: {label}: the listed {dotted!r} is a "
                "module; expected a function, an async function, or a node class",
                tried,
            )
        try:
            return adapt(owner, path=path)
        except TypeError as exc:
            tried.append(f"{label}: {exc}")
            return None

    def _from_plugins(
        self, config: ComponentConfig, path: str, tried: list[str]
    ) -> Component | None:
        for route in config.plugin_routes:
            matched = route.pattern.match(path)
            if matched is None:
                continue
            captures, remainder = matched
            rule = next((rule for rule in route.rules if rule.applies(path, remainder)), None)
            label = f"route {route.pattern.text!r} ({route.where})"
            if rule is None:
                tried.append(
                    f"{label}, whose rules all have conditions or allow/deny lists that "
                    "pocketbatch cannot apply to this path"
                )
                continue
            plugin = config.plugins[rule.plugin]
            component = rule.component_for(path, captures, remainder)
            if plugin.type == "mock":
                for key in (path, component, component.lstrip("/")):
                    if key in plugin.components:
                        return plugin.components[key]
                tried.append(f"{label} -> mock plugin {plugin.name!r}")
                keys = dict.fromkeys((path, component))
                raise self._unknown(
                    path,
                    f"component {path!r} is routed to mock plugin {plugin.name!r}, which has "
                    f"no component {' or '.join(repr(k) for k in keys)}",
                    tried,
                )
            if plugin.type == "builtin":
                for key in (path, f"/builtin{component}"):
                    if key in self.builtins:
                        return self.builtins[key]
                tried.append(f"{label} -> builtin plugin {plugin.name!r}")
                raise self._unknown(path, f"pocketbatch has no builtin {path!r}", tried, fix=_FIX)
            tried.append(f"{label} -> plugin {plugin.name!r}")
            raise UnknownComponent(
                path,
                f"component {path!r} is routed to plugin {plugin.name!r} of type "
                f"{plugin.type!r} ({route.where}), which pocketbatch cannot run; provide it "
                f"instead with a ComponentRegistry (registry.register({path!r}, function)), "
                "a route to a Python module in pocketbatch.yaml, or a mock",
                tried,
            )
        if config.plugin_routes and not any(r.pattern.match(path) for r in config.plugin_routes):
            tried.append(f"the routes in {config.name} (none matches)")
        return None

    def _python_import(self, path: str, tried: list[str], choices: list[str]) -> Component:
        config = self.config
        if not self.options.allow_python_imports:
            raise UnknownComponent(
                path,
                f"component {path!r} would import Python code, but /python/ imports are "
                "disabled here; register the function in a ComponentRegistry instead",
                tried,
            )
        if config is not None and config.python_imports is False:
            raise UnknownComponent(
                path,
                f"component {path!r} would import Python code, but /python/ imports are "
                f"disabled here by 'python_imports: false' in {config.name}",
                tried,
            )
        spec = path[len("/python/") :]
        module_name, _, name = spec.rpartition(".")
        if not module_name or not _public_dotted(spec):
            raise UnknownComponent(
                path,
                f"component {path!r}: a /python/ path names a module and a public function, "
                "like '/python/my_package.tools.clean' (no part may start with '_')",
                tried,
            )
        allowed = self.options.python_modules
        if allowed is not None and not any(
            module_name == m or module_name.startswith(m + ".") for m in allowed
        ):
            listed_modules = ", ".join(sorted(allowed)) or "none"
            raise UnknownComponent(
                path,
                f"component {path!r} would import module {module_name!r}, which is not "
                f"allowed here (allowed modules: {listed_modules})",
                tried,
            )
        label = f"importing {name!r} from module {module_name!r}"
        try:
            with _first_on_sys_path(self.base_dir):
                module = _import_from(self.base_dir, module_name)
        except Exception as exc:
            tried.append(f"{label}, which cannot be imported ({type(exc).__name__}: {exc})")
            raise self._unknown(path, f"unknown component {path!r}", tried, choices) from None
        target = _offered(module, name)
        if target is _MISSING:
            tried.append(f"{label}, which has no {name!r}")
            options = (f"/python/{module_name}.{n}" for n in _offered_callables(module))
            raise self._unknown(path, f"unknown component {path!r}", tried, [*choices, *options])
        reason = _not_offered(module, name, target)
        if reason is not None:
            raise UnknownComponent(path, f"component {path!r} is not allowed: {reason}", tried)
        try:
            return adapt(target, path=path)
        except TypeError as exc:
            raise UnknownComponent(path, str(exc), tried) from None
