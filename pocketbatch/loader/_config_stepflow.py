"""Reading Stepflow's ``stepflow-config.yml`` as Stepflow reads it: plugins and routes.

Mock plugins become :class:`~pocketbatch.loader._mocks.MockComponent` objects,
builtin plugins map onto pocketbatch's builtins; other plugin types are recorded
so that a path routed to them fails with a message saying what to do instead.
Keys Stepflow reads and pocketbatch does not need (``storageConfig``, ``retry``...)
are accepted; other unknown top-level keys are accepted with a warning, as Stepflow
ignores them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pocketbatch.loader._config import ComponentConfig, _Pattern, _Plugin, _PluginRoute, _RouteRule
from pocketbatch.loader._config_reader import ConfigReader, child_path, kind_of, read_mock
from pocketbatch.loader._mocks import MockComponent
from pocketbatch.loader._source import DocPath, PairList, did_you_mean, listed
from pocketbatch.loader._worker_config import WorkerPlugin, read_grpc_plugin

__all__ = ("read_stepflow",)

# StepflowConfig's fields (stepflow-config/src/lib.rs), and pocketbatch's older 'routing'.
_TOP_KEYS = (
    "workingDirectory",
    "plugins",
    "routes",
    "storageConfig",
    "leaseManager",
    "recovery",
    "blobApi",
    "retry",
    "routing",
)


def read_stepflow(r: ConfigReader, data: dict[Any, Any], file: Path) -> ComponentConfig:
    config = ComponentConfig(file=file, format="stepflow", warnings=r.doc.warnings)
    r.keys(data, (), _TOP_KEYS, "a Stepflow config")
    plugins = r.mapping(data.get("plugins"), ("plugins",), "'plugins'")
    for index, (name, spec) in enumerate(plugins.items()):
        at = child_path(("plugins",), name, index)
        spec = r.mapping(spec, at, f"plugin {name!r}")
        kind = spec.get("type")
        if not isinstance(kind, str):
            raise r.error(f"plugin {name!r} needs a 'type' (builtin, mock, grpc, mcp, ...)", at)
        components: dict[str, MockComponent] = {}
        worker: WorkerPlugin | None = None
        if kind == "grpc":
            worker = read_grpc_plugin(r, str(name), spec, at, file, data.get("retry"))
        if kind == "mock":
            entries = r.mapping(
                spec.get("components"), (*at, "components"), f"the components of plugin {name!r}"
            )
            for i, (path, component) in enumerate(entries.items()):
                component_at = child_path((*at, "components"), path, i)
                components[str(path)] = read_mock(r, str(path), component, component_at)
        config.plugins[str(name)] = _Plugin(str(name), kind, components, r.where(at), worker)
    routes = r.mapping(data.get("routes"), ("routes",), "'routes'")
    for index, (pattern, rules) in enumerate(routes.items()):
        at = child_path(("routes",), pattern, index)
        compiled = _pattern(r, pattern, at)
        if not isinstance(rules, list) or isinstance(rules, PairList):
            raise r.error(
                f"route {pattern!r} must be a list of rules like [{{plugin: name}}], "
                f"got {kind_of(rules)}",
                at,
            )
        parsed = tuple(_rule(r, config, rule, (*at, i)) for i, rule in enumerate(rules))
        config.plugin_routes.append(_PluginRoute(compiled, parsed, r.where(at)))
    config.plugin_routes.sort(key=lambda route: route.pattern.specificity())
    routing = data.get("routing")
    if routing is not None:
        if not isinstance(routing, list) or isinstance(routing, PairList):
            raise r.error(
                f"'routing' must be a list of {{match, target}}, got {kind_of(routing)}",
                ("routing",),
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


def _pattern(r: ConfigReader, pattern: Any, where: DocPath) -> _Pattern:
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


def _known_plugin(r: ConfigReader, config: ComponentConfig, name: str, where: DocPath) -> None:
    if name not in config.plugins:
        hint = did_you_mean(name, config.plugins) or f" (plugins: {listed(sorted(config.plugins))})"
        raise r.error(f"unknown plugin {name!r}{hint}", where)


def _rule(r: ConfigReader, config: ComponentConfig, rule: Any, where: DocPath) -> _RouteRule:
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
                f"'{key}' must be a list of component names, got {kind_of(value)}",
                (*where, key),
            )
        lists.append(tuple(value) if value is not None else None)
    return _RouteRule(plugin, component, bool(rule.get("conditions")), lists[0], lists[1])
