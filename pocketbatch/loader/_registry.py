"""The :class:`ComponentRegistry`: components registered in code, by path.

Nothing here is global: a registry is handed to the loader explicitly, so two
loaders with two registries never see each other's components. What a path
resolves to when no registry has it is :mod:`pocketbatch.loader._resolve`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import Component

__all__ = ("ComponentRegistry",)

_T = TypeVar("_T")


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
