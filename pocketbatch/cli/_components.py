"""``pocketbatch list-components``: the components a flow can name, as the config
routes them: the builtins, a config's mocks and the components its routes list,
the route prefixes that reach a Python module or a Stepflow plugin, and whether
``/python/<module>.<function>`` imports are allowed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pocketbatch.cli._common import EXIT_OK, UsageError

__all__ = ("component_listing", "list_components")


def component_listing(config_path: Path | None) -> list[dict[str, Any]]:
    """One entry per path or route: ``{"path", "kind", "via"}``, sorted by path.

    ``kind`` is ``builtin``, ``mock``, ``route`` (a listed component), ``module``
    (a prefix: every public function or node class of the module), ``plugin`` (a
    Stepflow route pattern) or ``python`` (``/python/<module>.<function>``).

    Example:
        >>> [e["path"] for e in component_listing(None)][:2]
        ['/builtin/create_messages', '/builtin/eval']
    """
    from pocketbatch.loader._builtins import builtin_components
    from pocketbatch.loader._config_files import load_config
    from pocketbatch.loader._nested import nested_components

    entries = [
        {"path": path, "kind": "builtin", "via": "pocketbatch"}
        for path in {**builtin_components(), **nested_components()}
    ]
    config = load_config(config_path) if config_path is not None else None
    if config is not None:
        via = config.name
        entries += [{"path": p, "kind": "mock", "via": via} for p in config.mock_paths()]
        for prefix, listed in config.route_components.items():
            module = config.routes.get(prefix, "")
            entries += [
                {"path": f"{prefix}/{rest}", "kind": "route", "via": f"{module}.{dotted}"}
                for rest, dotted in listed.items()
            ]
        entries += [
            {"path": f"{prefix}/*", "kind": "module", "via": module}
            for prefix, module in config.routes.items()
            if prefix not in config.route_components
        ]
        for route in config.plugin_routes:
            plugins = sorted({rule.plugin for rule in route.rules})
            entries.append(
                {"path": route.pattern.text, "kind": "plugin", "via": ", ".join(plugins)}
            )
    if config is None or config.python_imports is not False:
        entries.append({"path": "/python/<module>.<function>", "kind": "python", "via": "import"})
    return sorted(entries, key=lambda e: (e["path"], e["kind"]))


def _config_path(args: argparse.Namespace) -> Path | None:
    from pocketbatch.loader._config_files import find_config

    if args.config is not None:
        if not Path(args.config).is_file():
            raise UsageError(f"--config {args.config}: no such file")
        return Path(args.config)
    if args.flow is not None:
        if not Path(args.flow).is_file():
            raise UsageError(f"--flow {args.flow}: no such file")
        return find_config(Path(args.flow).resolve().parent)
    return find_config(Path.cwd())


def list_components(args: argparse.Namespace) -> int:
    path = _config_path(args)
    entries = component_listing(path)
    if args.format == "json":
        print(json.dumps({"config": str(path) if path else None, "components": entries}))
    elif args.format == "yaml":
        import yaml

        document = {"config": str(path) if path else None, "components": entries}
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")
    else:
        print(f"config: {path if path is not None else '(none: builtins only)'}")
        width = max(len(e["path"]) for e in entries)
        for entry in entries:
            print(f"  {entry['path']:<{width}}  {entry['kind']:<7}  {entry['via']}")
    return EXIT_OK
