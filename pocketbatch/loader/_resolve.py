"""Component paths to components: the :class:`Resolver` and its order of precedence.

A flow step names its component by a path such as ``/data/validate``. A
:class:`Resolver` turns that path into a
:class:`~pocketbatch.loader._component.Component`, trying in this order:

1. the :class:`~pocketbatch.loader.ComponentRegistry` given to the loader;
2. the config file beside the flow (see :mod:`pocketbatch.loader._config_files`):
   its mocks, then its routes from path prefixes to Python modules, then (for
   Stepflow's own ``stepflow-config.yml``) its plugin routes;
3. pocketbatch's builtins, by exact path;
4. ``/python/<module>.<function>`` imports, where they are allowed.

A path reaches only what a module offers on purpose: a route's one segment after
the prefix, or ``/python/``'s function name, must be a function or node class that
the module defines (its ``__module__``) or lists in ``__all__``; never a name
starting with ``_``, never a module, and never walked into (no ``a/b`` through
attributes, submodules or classes). Nested names are reachable only when a route
lists them in its ``components``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import Component, LoaderOptions
from pocketbatch.loader._config import ComponentConfig, _public_dotted
from pocketbatch.loader._python_modules import (
    _MISSING,
    _attribute,
    _first_on_sys_path,
    _import_from,
    _not_offered,
    _offered,
    _offered_callables,
)
from pocketbatch.loader._registry import ComponentRegistry
from pocketbatch.loader._source import did_you_mean

__all__ = ("Resolver", "UnknownComponent")

_FIX = (
    "register it in a ComponentRegistry passed to the loader, route its prefix to a "
    "Python module in pocketbatch.yaml, or define a mock for it there"
)


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
            return adapt(target, path=path, offload=config.offloads(prefix))
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
            return adapt(owner, path=path, offload=config.offloads(prefix))
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
        offload = config.offloads() if config is not None else True
        try:
            return adapt(target, path=path, offload=offload)
        except TypeError as exc:
            raise UnknownComponent(path, str(exc), tried) from None
