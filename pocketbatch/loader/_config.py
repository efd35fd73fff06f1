"""What a component config file says: :class:`ComponentConfig`, its routes and plugins.

A config file (``pocketbatch.yaml``, or Stepflow's ``stepflow-config.yml``) sits
beside a flow and says where its components come from: routes from path prefixes
to Python modules, mocks, and (Stepflow's format) plugin routes. Reading the files
is :mod:`pocketbatch.loader._config_files`' job; resolving paths with a config is
:mod:`pocketbatch.loader._resolve`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pocketbatch._warnings import LoadWarning
from pocketbatch.loader._mocks import MockComponent
from pocketbatch.loader._worker_config import WorkerPlugin

__all__ = ("ComponentConfig",)

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _public_dotted(name: Any) -> bool:
    """Whether ``name`` is a dotted Python name none of whose parts is private."""
    return (
        isinstance(name, str)
        and _MODULE_NAME.fullmatch(name) is not None
        and not any(part.startswith("_") for part in name.split("."))
    )


@dataclass(frozen=True)
class _Pattern:
    """A Stepflow route key: ``/x/{name}`` (one segment), ``/x/{*name}`` (the rest),
    ``/prefix`` (a prefix), ``/`` (every path: Stepflow's catch-all, tried after
    the other routes, with the whole path as the component), or an older-form glob
    such as ``/mock/*``."""

    text: str
    glob: bool = False

    @property
    def segments(self) -> list[str]:
        return self.text.split("/")[1:]

    def specificity(self) -> tuple[int, int]:
        """Sort key: more literal segments first, catch-alls last."""
        if self.text == "/":
            return (0, 1)
        segments = self.segments
        literal = sum(1 for s in segments if not s.startswith("{"))
        catch_all = any(s.startswith("{*") for s in segments)
        return (-literal, int(catch_all))

    def match(self, path: str) -> tuple[dict[str, str], str] | None:
        """``(captures, remainder)`` when ``path`` matches, else ``None``."""
        if self.text == "/":
            whole = path[1:] if path.startswith("/") else ""
            return ({}, whole) if whole and all(whole.split("/")) else None
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

    def allows(self, path: str, remainder: str) -> bool:
        """Whether the rule's ``componentAllow``/``componentDeny`` lists let the path through."""
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
    worker: WorkerPlugin | None = None  # a ``type: grpc`` plugin's worker


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
        providers: base URL -> ``(requests_per_minute, tokens_per_minute)`` set by
            hand for ``/builtin/openai`` (pocketbatch format's ``providers``).
        warnings: what the file has that Stepflow ignores (unknown keys of a
            ``stepflow-config.yml``), each at its ``file:line:column``.
        offload: whether sync functions reached through routes and ``/python/`` run
            on the run's thread pool (``None``, the default, means yes; ``offload:
            false`` in ``pocketbatch.yaml`` runs them on the event loop).
        route_offload: the same, per route prefix (a route's own ``offload``).

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
    providers: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    offload: bool | None = None
    route_offload: dict[str, bool] = field(default_factory=dict)
    plugins: dict[str, _Plugin] = field(default_factory=dict, repr=False)
    plugin_routes: list[_PluginRoute] = field(default_factory=list, repr=False)
    locations: dict[str, str] = field(default_factory=dict, repr=False)
    warnings: list[LoadWarning] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        """The file's name, for messages."""
        return self.file.name if self.file is not None else "the component config"

    @property
    def directory(self) -> Path | None:
        """The directory holding the file: routed modules are imported from it."""
        return self.file.resolve().parent if self.file is not None else None

    def offloads(self, prefix: str | None = None) -> bool:
        """Whether sync functions of route ``prefix`` (or of ``/python/``, with no
        prefix) run off the event loop: yes unless the config says ``offload: false``.

        Example:
            >>> ComponentConfig(offload=False, route_offload={"/io": True}).offloads("/io")
            True
        """
        if prefix is not None and prefix in self.route_offload:
            return self.route_offload[prefix]
        return self.offload is not False

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
