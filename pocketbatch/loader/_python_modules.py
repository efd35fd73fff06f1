"""Importing the user's modules for routes and ``/python/`` paths, and what a module offers.

:func:`_import_from` imports a routed module from beside its config file (two flows
may each have a ``components`` module of their own); :func:`_offered` and
:func:`_not_offered` say what a module offers as a component: a function or node
class it defines or lists in ``__all__``, never a name starting with ``_`` and never
a module. :class:`~pocketbatch.loader._resolve.Resolver` applies them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ()


class _Missing:
    """Sentinel for an attribute that is not there."""


_MISSING = _Missing()


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
