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

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import Component, LoaderOptions
from pocketbatch.loader._config import ComponentConfig, _Plugin, _public_dotted
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
from pocketbatch.loader._worker_config import WorkerPlugin, missing_extra

if TYPE_CHECKING:
    from pocketbatch.loader._worker_component import WorkerComponent

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
        hint = _path_hint(probe, sorted({*self.known_paths(), *choices}))
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
        from pocketbatch.loader._stepflow_inproc import stepflow_component

        # A stepflow-py worker module: its StepflowServer's components, run in-process.
        stepflow = stepflow_component(config.directory, module_name, path, rest, choices)
        if isinstance(stepflow, str):
            tried.append(f"{label}, a stepflow-py worker module")
            raise self._unknown(path, stepflow, tried, choices)
        if stepflow is not None:
            return stepflow
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
        """Stepflow's routing: the routes matching ``path``, most specific first and
        the ``"/"`` catch-all last; in each, the rules in order. The first rule whose
        plugin serves the component wins; a plugin that does not (a mock or builtin
        plugin without it) hands on to the next rule, then to the next route.

        Rules with ``conditions`` are skipped: Stepflow 0.13 evaluates them per input,
        none of its shipped configs uses them, and pocketbatch routes at load time.
        A plugin pocketbatch cannot run (``grpc``, ``mcp``...) is passed over too, so
        a later rule may serve the path; when none does, the first rule tried says
        why (a builtin pocketbatch lacks, a mock without the component, that plugin)."""
        matched_any = False
        # Why each rule tried did not serve the path, in the order tried: a headline,
        # or the error for a plugin pocketbatch cannot run.
        misses: list[str | UnknownComponent] = []
        workers: list[WorkerComponent] = []
        misses_before_workers = 0
        for route in config.plugin_routes:
            matched = route.pattern.match(path)
            if matched is None:
                continue
            matched_any = True
            captures, remainder = matched
            label = f"route {route.pattern.text!r} ({route.where})"
            usable = False
            for rule in route.rules:
                if rule.conditional or not rule.allows(path, remainder):
                    continue
                usable = True
                plugin = config.plugins[rule.plugin]
                component = rule.component_for(path, captures, remainder)
                if plugin.worker is not None and plugin.worker.command is not None:
                    # Known only once the worker lists its components: later rules
                    # serve the path if it has none (see WorkerComponent.fallback).
                    if not workers:
                        misses_before_workers = len(misses)
                    workers.append(_worker_component(plugin.worker, component, path, tried))
                    continue
                found = self._plugin_component(plugin, path, component)
                if found is not None:
                    return _chain(workers, found)
                if plugin.type in ("mock", "builtin"):
                    tried.append(f"{label} -> {plugin.type} plugin {plugin.name!r}")
                    misses.append(self._miss(plugin.type, plugin.name, path, component))
                    continue
                tried.append(f"{label} -> plugin {plugin.name!r}")
                remote = (
                    " (the plugin has no 'command': its worker is remote, and pocketbatch "
                    "runs only workers it launches)"
                    if plugin.worker is not None
                    else ""
                )
                misses.append(
                    UnknownComponent(
                        path,
                        f"component {path!r} is routed to plugin {plugin.name!r} of type "
                        f"{plugin.type!r} ({route.where}), which pocketbatch cannot run; "
                        "provide it instead with a ComponentRegistry "
                        f"(registry.register({path!r}, function)), a route to a Python "
                        f"module in pocketbatch.yaml, or a mock{remote}",
                    )
                )
            if not usable:
                tried.append(
                    f"{label}, whose rules all have conditions or allow/deny lists that "
                    "pocketbatch cannot apply to this path"
                )
        if workers and not misses_before_workers:
            # (a more specific route's miss, e.g. a builtin pocketbatch lacks, is
            # reported as such rather than handed to a catch-all worker)
            return _chain(workers, None)
        if misses:
            first = misses[0]
            if isinstance(first, UnknownComponent):
                raise UnknownComponent(path, first.message, tried)
            fix = _FIX if first.startswith("pocketbatch has no builtin") else ""
            raise self._unknown(path, first, tried, fix=fix)
        if config.plugin_routes and not matched_any:
            tried.append(f"the routes in {config.name} (none matches)")
        return None

    def _plugin_component(self, plugin: _Plugin, path: str, component: str) -> Component | None:
        """The component ``plugin`` serves as ``component`` (routed from ``path``),
        or ``None`` when it has none by that name or is a kind pocketbatch cannot run."""
        if plugin.type == "mock":
            for key in (path, component, component.lstrip("/")):
                if key in plugin.components:
                    return plugin.components[key]
        elif plugin.type == "builtin":
            for key in (path, f"/builtin{component}"):
                if key in self.builtins:
                    return self.builtins[key]
        return None

    @staticmethod
    def _miss(kind: str, name: str, path: str, component: str) -> str:
        if kind == "builtin":
            return f"pocketbatch has no builtin {path!r}"
        keys = dict.fromkeys((path, component))
        return (
            f"component {path!r} is routed to mock plugin {name!r}, which has no component "
            f"{' or '.join(repr(k) for k in keys)}"
        )

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


def _path_hint(path: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest component path, comparing a path with
    its siblings by their last segment only (a shared ``/builtin/`` must not make
    ``/builtin/udf`` look like ``/builtin/map``), and with other paths whole. A lone
    sibling is always suggested (the one thing offered at that place).

    Example:
        >>> _path_hint("/builtin/udf", ["/builtin/map", "/builtin/noop"])
        ''
        >>> _path_hint("/builtin/iterat", ["/builtin/iterate", "/builtin/map"])
        " (did you mean '/builtin/iterate'?)"
    """
    parent, _, leaf = path.rpartition("/")
    siblings = {c.rpartition("/")[2]: c for c in choices if c.rpartition("/")[0] == parent}
    close = list(siblings) if len(siblings) == 1 else []
    close = close or difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {siblings[close[0]]!r}?)"
    return did_you_mean(path, [c for c in choices if c.rpartition("/")[0] != parent])


def _chain(workers: list[WorkerComponent], last: Component | None) -> Component:
    """The first worker of a route's rules, each falling back to the next, the last to
    ``last`` (a builtin or mock a later rule found)."""
    for worker in reversed(workers):
        worker.fallback, last = last, worker
    assert last is not None
    return last


def _worker_component(
    plugin: WorkerPlugin, subpath: str, path: str, tried: list[str]
) -> WorkerComponent:
    """A path routed to a ``grpc`` plugin: its worker runs it (needs the ``stepflow`` extra)."""
    from pocketbatch.loader._worker_component import WorkerComponent

    if missing_extra():
        tried.append(f"plugin {plugin.name!r} ({plugin.where})")
        raise UnknownComponent(
            path,
            f"component {path!r} is routed to plugin {plugin.name!r} of type 'grpc' "
            f"({plugin.where}), whose Stepflow worker needs the 'stepflow' extra "
            "(stepflow-py, grpcio): pip install '.[stepflow]' in pocketbatch's checkout",
            tried,
        )
    return WorkerComponent(plugin, subpath, path)
