"""Reading pocketbatch's own config format, ``pocketbatch.yaml``: routes, mocks and options.

Unknown keys are errors here (Stepflow's format, read by
:mod:`pocketbatch.loader._config_stepflow`, accepts them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pocketbatch.loader._config import _MODULE_NAME, ComponentConfig, _public_dotted
from pocketbatch.loader._config_reader import ConfigReader, child_path, kind_of, read_mock
from pocketbatch.loader._source import DocPath, PairList

__all__ = ("read_pocketbatch",)

_TOP_KEYS = ("routes", "mocks", "python_imports", "load_file", "providers", "offload")
_PROVIDER_KEYS = ("requests_per_minute", "tokens_per_minute")
_ROUTE_KEYS = ("module", "components", "offload")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def read_pocketbatch(r: ConfigReader, data: dict[Any, Any], file: Path) -> ComponentConfig:
    r.keys(data, (), _TOP_KEYS, "")
    config = ComponentConfig(file=file, format="pocketbatch")
    routes = r.mapping(data.get("routes"), ("routes",), "'routes'")
    for index, (prefix, value) in enumerate(routes.items()):
        at = child_path(("routes",), prefix, index)
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
            offload = r.boolean(
                value.get("offload"), (*at, "offload"), f"route {prefix!r}'s offload"
            )
            if offload is not None:
                config.route_offload[prefix] = offload
            if "components" in value:
                config.route_components[prefix] = _route_components(
                    r, prefix, value["components"], (*at, "components")
                )
        if not isinstance(module, str) or not _MODULE_NAME.fullmatch(module):
            raise r.error(
                f"route {prefix!r} must name a Python module, like 'my_components.data' "
                f"or {{module: my_components.data, components: [validate]}}; got {kind_of(module)}",
                module_at,
            )
        config.routes[prefix] = module
        config.locations[prefix] = r.where(at)
    mocks = r.mapping(data.get("mocks"), ("mocks",), "'mocks'")
    for index, (mock_path, spec) in enumerate(mocks.items()):
        at = child_path(("mocks",), mock_path, index)
        if not isinstance(mock_path, str) or not mock_path.startswith("/"):
            raise r.error(
                f"a mock's path must start with '/', like '/mock/error'; got {mock_path!r}", at
            )
        config.mocks[mock_path] = read_mock(r, mock_path, spec, at)
    config.python_imports = r.boolean(
        data.get("python_imports"), ("python_imports",), "'python_imports'"
    )
    config.offload = r.boolean(data.get("offload"), ("offload",), "'offload'")
    load_file = r.mapping(data.get("load_file"), ("load_file",), "'load_file'")
    r.keys(load_file, ("load_file",), ("root", "anywhere"), "'load_file'")
    if load_file.get("root") is not None:
        root = r.string(load_file["root"], ("load_file", "root"), "'load_file.root'")
        config.load_file_root = (file.parent / root).resolve()
    config.load_file_anywhere = r.boolean(
        load_file.get("anywhere"), ("load_file", "anywhere"), "'load_file.anywhere'"
    )
    providers = r.mapping(data.get("providers"), ("providers",), "'providers'")
    for index, (base_url, limits) in enumerate(providers.items()):
        config.providers[str(base_url).rstrip("/")] = _provider_limits(
            r, base_url, limits, child_path(("providers",), base_url, index)
        )
    return config


def _provider_limits(
    r: ConfigReader, base_url: Any, value: Any, where: DocPath
) -> tuple[float | None, float | None]:
    """A provider's limits by hand: ``{requests_per_minute?, tokens_per_minute?}``,
    each a number > 0, under its base URL (``https://api.openai.com/v1``)."""
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise r.error(
            f"a provider is named by its base URL, like 'https://api.openai.com/v1'; "
            f"got {base_url!r}",
            where,
        )
    limits = r.mapping(value, where, f"provider {base_url!r}")
    r.keys(limits, where, _PROVIDER_KEYS, f"provider {base_url!r}")
    found: list[float | None] = []
    for key in _PROVIDER_KEYS:
        number = limits.get(key)
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int | float) or not number > 0
        ):
            raise r.error(
                f"provider {base_url!r}: {key!r} must be a number > 0, got {kind_of(number)}",
                (*where, key),
            )
        found.append(None if number is None else float(number))
    return found[0], found[1]


def _route_components(r: ConfigReader, prefix: str, value: Any, where: DocPath) -> dict[str, str]:
    """A route's explicit ``components``: a list of dotted names in the module
    (``tools.count`` is reached at ``<prefix>/tools/count``), or a mapping from the
    path after the prefix to a dotted name. Nothing private, nothing but names."""
    found: dict[str, str] = {}
    if isinstance(value, list) and not isinstance(value, PairList):
        for index, name in enumerate(value):
            if not _public_dotted(name):
                raise r.error(
                    f"route {prefix!r}: a listed component must be a public (dotted) name in "
                    f"the module, like 'validate' or 'tools.count'; got {kind_of(name)}",
                    (*where, index),
                )
            found[name.replace(".", "/")] = name
        return found
    if isinstance(value, dict):
        for index, (key, name) in enumerate(value.items()):
            at = child_path(where, key, index)
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
                    f"the module, like 'validate' or 'tools.count'; got {kind_of(name)}",
                    at,
                )
            found[key] = name
        return found
    raise r.error(
        f"route {prefix!r}: 'components' must be a list of names in the module, or a mapping "
        f"from the path after the prefix to a name in the module; got {kind_of(value)}",
        where,
    )
