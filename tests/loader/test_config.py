"""Component config files: pocketbatch.yaml, Stepflow's stepflow-config.yml, and find_config."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from pocketbatch import load_flow
from pocketbatch._errors import ComponentError, LoadError
from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import CallContext, Component, LoaderOptions, PluginFailure
from pocketbatch.loader._config import ComponentConfig
from pocketbatch.loader._config_files import find_config, load_config
from pocketbatch.loader._mocks import MockComponent
from pocketbatch.loader._registry import ComponentRegistry
from pocketbatch.loader._resolve import Resolver, UnknownComponent

CTX = CallContext(step_id="step", flow_dir=None, variables={})

STEPFLOW_CONFIG = """\
plugins:
  builtin:
    type: builtin
  mock:
    type: mock
    components:
      /mock/error:
        input_schema: {type: object}
        behaviors:
          { mode: "error" }:
            outcome: failed
            error: {code: 8, message: "error"}
          { mode: "succeed" }:
            outcome: success
            result: {output: "succeeded"}
  python:
    type: grpc
    queueName: python
routes:
  "/mock/{*component}":
    - plugin: mock
  "/python/{*component}":
    - plugin: python
  "/builtin/{*component}":
    - plugin: builtin
"""

DATA_MODULE = """\
from pocketbatch import Node


def validate(record):
    return {"valid": "id" in record}


async def clean_text(text):
    return text.strip()


class tools:
    @staticmethod
    def count(items):
        return len(items)


class Double(Node):
    def prep(self, shared):
        return shared["input"]

    def exec(self, n):
        return 2 * n

    def post(self, shared, prep_res, exec_res):
        shared["output"] = exec_res


LIMIT = 3


def _private(x):
    return x
"""


async def call(component: Component, value: Any) -> Any:
    return await component(value, CTX)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text), encoding="utf-8")
    return path


def resolver(config: ComponentConfig, builtins: dict[str, Component] | None = None) -> Resolver:
    return Resolver(None, config, LoaderOptions(), builtins or {})


@pytest.fixture
def fresh_modules(tmp_path: Path) -> Iterator[None]:
    """Forget the modules a test imported from its tmp_path, so each test's
    my_components is its own."""
    yield
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).is_relative_to(tmp_path):
            del sys.modules[name]


# --------------------------------------------------------------------------- pocketbatch.yaml

POCKETBATCH_YAML = """\
routes:                      # path prefix -> Python module
  /data: my_components.data
  /pkg: my_components
mocks:
  /mock/error:
    behaviors:
      - input: {mode: error}
        outcome: failed
        error: {code: 8, message: error}
      - input: {mode: succeed}
        outcome: success
        result: {output: succeeded}
python_imports: true
load_file:
  root: data
  anywhere: false
"""


@pytest.fixture
def project(tmp_path: Path, fresh_modules: None) -> Path:
    """A pocketbatch.yaml beside a real package my_components with a data module."""
    write(tmp_path, "my_components/__init__.py", "")
    write(tmp_path, "my_components/data.py", DATA_MODULE)
    write(tmp_path, "my_components/broken.py", "raise RuntimeError('broken on import')\n")
    return write(tmp_path, "pocketbatch.yaml", POCKETBATCH_YAML)


def test_pocketbatch_yaml_fields(project: Path) -> None:
    """Routes, mocks and the options the file sets are exposed on the config."""
    config = load_config(project)
    assert config.format == "pocketbatch"
    assert config.file == project
    assert config.routes == {"/data": "my_components.data", "/pkg": "my_components"}
    assert config.mock_paths() == ["/mock/error"]
    assert config.python_imports is True
    assert config.load_file_root == (project.parent / "data").resolve()
    assert config.load_file_anywhere is False


def test_options_are_none_when_not_set(tmp_path: Path) -> None:
    """A file that sets no options leaves them None."""
    config = load_config(write(tmp_path, "pocketbatch.yaml", "routes: {}\n"))
    assert (config.python_imports, config.load_file_root, config.load_file_anywhere) == (
        None,
        None,
        None,
    )
    assert config.routes == {}
    assert config.mocks == {}


@pytest.mark.asyncio
async def test_route_imports_the_module_from_the_config_directory(project: Path) -> None:
    """'/data/validate' -> my_components.data.validate, imported with the config dir on sys.path."""
    path_before = list(sys.path)
    found = resolver(load_config(project))
    assert await call(found.resolve("/data/validate"), {"id": 1}) == {"valid": True}
    assert sys.path == path_before
    assert "my_components.data" in sys.modules


@pytest.mark.asyncio
async def test_route_path_forms(project: Path) -> None:
    """Dashes become underscores, node classes work; deeper paths (attributes of a
    class, submodules) are refused unless the route lists them."""
    found = resolver(load_config(project))
    assert await call(found.resolve("/data/clean-text"), "  x ") == "x"
    assert await call(found.resolve("/data/clean_text"), " y") == "y"
    assert await call(found.resolve("/data/Double"), 21) == 42
    for nested in ("/data/tools/count", "/pkg/data/validate"):
        with pytest.raises(UnknownComponent, match="is not allowed"):
            found.resolve(nested)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/data/validte",
            "unknown component '/data/validte' (did you mean '/data/validate'?); "
            "tried: the mocks in pocketbatch.yaml; route '/data' -> module "
            "'my_components.data' ({file}:2:3), which has no 'validte'; the builtins",
        ),
        ("/data/_private", "which has no '_private'"),
        ("/data/LIMIT", "component '/data/LIMIT': expected a function"),
        ("/pkg/broken/f", "'broken/f' goes deeper (into attributes, submodules or classes"),
        ("/pkg/missing/f", "'missing/f' goes deeper"),
        ("/data", "the routes in pocketbatch.yaml (no prefix matches)"),
        ("/data/", "but the path names no function after the prefix"),
    ],
)
def test_route_failures(project: Path, path: str, expected: str) -> None:
    """Route failures say which route was tried and what was wrong with it."""
    with pytest.raises(UnknownComponent) as info:
        resolver(load_config(project)).resolve(path)
    assert expected.format(file=project) in info.value.message


# --------------------------------------------------------------------------- what routes reach

COOKBOOK_CONFIG = Path(__file__).parents[2] / "cookbook" / "data-pipeline" / "pocketbatch.yaml"

EXPLOIT_FLOW = """\
steps:
  - id: x
    component: {component}
    input: "__import__('subprocess').getoutput('id')"
output: {{$step: x}}
"""

EXPOSURE_MODULE = """\
import re
import subprocess
from builtins import eval
from subprocess import getoutput

from pocketbatch import Node

run_eval = eval
shell = getoutput


def validate(record):
    return {"valid": "id" in record}


class Tools:
    @staticmethod
    def count(items):
        return len(items)
"""


def test_the_reported_exploit_is_a_load_error_with_the_cookbook_config() -> None:
    """Issue 10: with the cookbook's own config (routes: {/data: components}), the
    path '/data/re/enum/bltns/eval' walked module attributes to builtins.eval. It is
    now a load error naming the path, even before anything is imported or run."""
    flow = EXPLOIT_FLOW.format(component="/data/re/enum/bltns/eval")
    with pytest.raises(LoadError) as info:
        load_flow(flow, config=COOKBOOK_CONFIG, allow_python_imports=False)
    message = str(info.value)
    assert message.startswith("<string>:3:5: step 'x': component '/data/re/enum/bltns/eval'")
    assert "is not allowed" in message
    assert "goes deeper" in message
    assert (info.value.line, info.value.column) == (3, 5)


@pytest.fixture
def exposure(tmp_path: Path, fresh_modules: None) -> Path:
    """A folder with a routed module that imports modules, functions and builtins."""
    write(tmp_path, "pb_exposure_mod.py", EXPOSURE_MODULE)
    write(tmp_path, "pocketbatch.yaml", "routes:\n  /data: pb_exposure_mod\n")
    return tmp_path


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        ("/data/re/enum/bltns/eval", "'re/enum/bltns/eval' goes deeper"),
        ("/data/re", "'re' is a module"),
        ("/data/subprocess", "'subprocess' is a module"),
        ("/data/getoutput", "'getoutput' is defined in module 'subprocess'"),
        ("/data/shell", "'shell' is defined in module 'subprocess'"),
        ("/data/eval", "'eval' is defined in module 'builtins'"),
        ("/data/run-eval", "'run_eval' is defined in module 'builtins'"),
        ("/data/Node", "'Node' is defined in module 'pocketbatch.core._node'"),
        ("/data/validate/__globals__", "'validate/__globals__' goes deeper"),
        ("/data/validate/__class__", "'validate/__class__' goes deeper"),
        ("/data/Tools/count", "'Tools/count' goes deeper"),
        ("/data/Tools/__init__/__globals__", "goes deeper"),
        ("/data/__class__", "which has no '__class__' (a name starting with '_' is private"),
        ("/data/__globals__", "which has no '__globals__'"),
        ("/data/__builtins__", "which has no '__builtins__'"),
        ("/data/__dict__", "which has no '__dict__'"),
    ],
)
def test_routes_reach_only_what_the_module_defines(
    exposure: Path, component: str, expected: str
) -> None:
    """Imported modules, imported or re-exported functions and builtins, anything
    private and anything nested are load errors that name the path and the step."""
    flow = write(exposure, "flow.yaml", EXPLOIT_FLOW.format(component=component))
    with pytest.raises(LoadError) as info:
        load_flow(flow, allow_python_imports=False)
    message = str(info.value)
    assert message.startswith(f"{flow}:3:5: step 'x': ")
    assert repr(component) in message
    assert expected in message


@pytest.mark.asyncio
async def test_routes_still_reach_what_the_module_defines(exposure: Path) -> None:
    """The module's own functions resolve; did-you-mean suggests only those."""
    found = resolver(load_config(exposure / "pocketbatch.yaml"))
    assert await call(found.resolve("/data/validate"), {"id": 1}) == {"valid": True}
    with pytest.raises(UnknownComponent) as info:
        found.resolve("/data/getoutptu")
    assert "getoutput" not in info.value.message
    with pytest.raises(UnknownComponent, match=r"did you mean '/data/validate'\?"):
        found.resolve("/data/validat")


@pytest.mark.asyncio
async def test_routes_reach_names_the_module_exports_in_all(
    tmp_path: Path, fresh_modules: None
) -> None:
    """A name listed in the module's __all__ is exported on purpose, wherever it is
    defined; other imported names are not."""
    write(tmp_path, "pb_exporting_mod.py", "from json import dumps, loads\n__all__ = ['dumps']\n")
    config = load_config(write(tmp_path, "pocketbatch.yaml", "routes:\n  /x: pb_exporting_mod\n"))
    found = resolver(config)
    assert await call(found.resolve("/x/dumps"), [1]) == "[1]"
    with pytest.raises(UnknownComponent, match="'loads' is defined in module 'json'"):
        found.resolve("/x/loads")


@pytest.mark.asyncio
async def test_two_folders_with_same_named_modules_keep_their_own_functions(
    tmp_path: Path, fresh_modules: None
) -> None:
    """The second 'components' is loaded under a private alias; its functions are
    still defined in the routed module, so the rule lets them through."""
    found = []
    for name in ("a", "b"):
        write(tmp_path, f"{name}/components.py", f"def who(x):\n    return {name!r}\n")
        config = write(tmp_path, f"{name}/pocketbatch.yaml", "routes:\n  /c: components\n")
        found.append(await call(resolver(load_config(config)).resolve("/c/who"), None))
    assert found == ["a", "b"]


def test_a_refused_walk_imports_nothing(project: Path) -> None:
    """'/pkg/broken/f' is refused from its shape: the submodule is never imported."""
    with pytest.raises(UnknownComponent, match="is not allowed"):
        resolver(load_config(project)).resolve("/pkg/broken/f")
    assert "my_components.broken" not in sys.modules


LISTED_CONFIG = """\
routes:
  /data: pb_exposure_mod
  /listed:
    module: pb_exposure_mod
    components: [validate, Tools.count]
  /mapped:
    module: pb_exposure_mod
    components:
      count: Tools.count
      check/valid: validate
      re: re
"""


@pytest.mark.asyncio
async def test_a_route_may_list_its_components_explicitly(exposure: Path) -> None:
    """A route's 'components' (a list of dotted names, or path -> dotted name) reaches
    exactly those names, nested ones included, and nothing else."""
    config = load_config(write(exposure, "pocketbatch.yaml", LISTED_CONFIG))
    assert config.routes["/listed"] == "pb_exposure_mod"
    assert config.route_components == {
        "/listed": {"validate": "validate", "Tools/count": "Tools.count"},
        "/mapped": {"count": "Tools.count", "check/valid": "validate", "re": "re"},
    }
    found = resolver(config)
    assert await call(found.resolve("/listed/Tools/count"), [1, 2]) == 2
    assert await call(found.resolve("/listed/validate"), {}) == {"valid": False}
    assert await call(found.resolve("/mapped/count"), [1]) == 1
    assert await call(found.resolve("/mapped/check/valid"), {"id": 2}) == {"valid": True}
    assert "/mapped/check/valid" in found.known_paths()
    with pytest.raises(UnknownComponent, match="whose listed components have no 'getoutput'"):
        found.resolve("/listed/getoutput")
    with pytest.raises(UnknownComponent, match=r"did you mean '/mapped/count'\?"):
        found.resolve("/mapped/cuont")
    with pytest.raises(UnknownComponent, match="the listed 're' is a module"):
        found.resolve("/mapped/re")
    with pytest.raises(UnknownComponent, match="goes deeper"):
        found.resolve("/data/Tools/count")  # the plain route is unchanged


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes:\n  /x:\n    module: m\n    components: [_secret]\n",
            "4:18: route '/x': a listed component must be a public (dotted) name",
        ),
        (
            "routes:\n  /x:\n    module: m\n    components: [validate.__globals__]\n",
            "4:18: route '/x': a listed component must be a public (dotted) name",
        ),
        (
            "routes:\n  /x:\n    module: m\n    components: {f: Tools.__dict__}\n",
            "4:18: route '/x': component 'f' must name a public (dotted) name",
        ),
        (
            "routes:\n  /x:\n    module: m\n    components: {_f: f}\n",
            "4:18: route '/x': a component's path after the prefix is one or more segments",
        ),
        (
            "routes:\n  /x:\n    module: m\n    components: {a//b: f}\n",
            "a component's path after the prefix",
        ),
        (
            "routes:\n  /x:\n    module: m\n    components: validate\n",
            "4:5: route '/x': 'components' must be a list of names in the module",
        ),
        (
            "routes:\n  /x:\n    components: [f]\n",
            "2:3: route '/x' must name a Python module",
        ),
        (
            "routes:\n  /x:\n    modul: m\n",
            "3:5: unknown key 'modul' in route '/x' (did you mean 'module'?)",
        ),
    ],
)
def test_listed_route_components_errors(tmp_path: Path, text: str, expected: str) -> None:
    """Mistakes in a route's explicit components are config errors at their position."""
    path = write(tmp_path, "pocketbatch.yaml", text)
    with pytest.raises(LoadError) as info:
        load_config(path)
    assert expected in str(info.value)


def test_route_to_a_missing_module_leaves_sys_path_alone(
    tmp_path: Path, fresh_modules: None
) -> None:
    """A module that cannot be found is reported, and sys.path is restored."""
    before = list(sys.path)
    config = load_config(
        write(tmp_path, "pocketbatch.yaml", "routes:\n  /x: no_such_pkg_here.mod\n")
    )
    with pytest.raises(UnknownComponent, match=r"which cannot be imported \(ModuleNotFoundError"):
        resolver(config).resolve("/x/f")
    assert sys.path == before


@pytest.mark.asyncio
async def test_longest_route_prefix_wins(tmp_path: Path, fresh_modules: None) -> None:
    """With '/a' and '/a/b' both routed, '/a/b/f' uses the '/a/b' module."""
    write(tmp_path, "short_mod.py", "def f(x):\n    return 'short'\n")
    write(tmp_path, "long_mod.py", "def f(x):\n    return 'long'\n")
    config = load_config(
        write(tmp_path, "pocketbatch.yaml", "routes:\n  /a: short_mod\n  /a/b: long_mod\n")
    )
    assert await call(resolver(config).resolve("/a/b/f"), None) == "long"
    assert await call(resolver(config).resolve("/a/f"), None) == "short"


@pytest.mark.asyncio
async def test_pocketbatch_yaml_mocks(project: Path) -> None:
    """Mocks in pocketbatch.yaml behave as Stepflow's mock plugin."""
    mock = resolver(load_config(project)).resolve("/mock/error")
    assert isinstance(mock, MockComponent)
    assert await call(mock, {"mode": "succeed"}) == {"output": "succeeded"}
    with pytest.raises(ComponentError) as info:
        await call(mock, {"mode": "error"})
    assert (info.value.code, info.value.message) == (8, "error")


@pytest.mark.asyncio
async def test_pocketbatch_yaml_accepts_stepflow_style_behaviors(tmp_path: Path) -> None:
    """Behaviours keyed by a YAML mapping or by JSON text (Stepflow's way) work here too."""
    config = load_config(
        write(
            tmp_path,
            "pocketbatch.yaml",
            """\
            mocks:
              /echo:
                input_schema: {type: object}
                behaviors:
                  {x: 1}: {outcome: success, result: one}
                  '{"x": [2]}': {outcome: success, result: two}
                  plain: {outcome: success, result: three}
                  oops: {error: internal failure}
            """,
        )
    )
    mock = resolver(config).resolve("/echo")
    assert isinstance(mock, MockComponent)
    assert mock.input_schema == {"type": "object"}
    assert await call(mock, {"x": 1}) == "one"
    assert await call(mock, {"x": [2]}) == "two"
    assert await call(mock, "plain") == "three"
    with pytest.raises(ComponentError) as info:
        await call(mock, "oops")
    assert (info.value.code, info.value.message) == ("COMPONENT_FAILED", "internal failure")


def test_unknown_top_level_key_position(tmp_path: Path) -> None:
    """An unknown key is reported at its file:line:column with a did-you-mean."""
    path = write(
        tmp_path,
        "pocketbatch.yaml",
        """\
        routes:
          /data: my_components.data
        mockz:
          /m: {behaviors: []}
        """,
    )
    with pytest.raises(LoadError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:3:1: unknown key 'mockz' (did you mean 'mocks'?)"
    assert (info.value.line, info.value.column) == (3, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "mocks:\n  /m:\n    behaviors:\n"
            "      - input: 1\n        outcome: success\n        reslt: 2\n",
            "6:9: unknown key 'reslt' in a mock behavior (did you mean 'result'?)",
        ),
        (
            "mocks:\n  /m:\n    behaviours: []\n",
            "3:5: unknown key 'behaviours' in mock '/m' (did you mean 'behaviors'?)",
        ),
        (
            "mocks:\n  /m:\n    behaviors:\n      - {outcome: success, result: 1}\n",
            "4:9: a mock behavior in a list needs an 'input'",
        ),
        (
            "mocks:\n  /m:\n    behaviors:\n      - input: 1\n        outcome: failed\n",
            "5:9: 'outcome: failed' needs an 'error' mapping",
        ),
        (
            "mocks:\n  /m:\n    behaviors:\n"
            "      - {input: 1, outcome: failed, error: {code: 1, mesage: x}}\n",
            "4:54: unknown key 'mesage' in a mock error (did you mean 'message'?)",
        ),
        ("routes:\n  data: my_components.data\n", "2:3: a route prefix must start with '/'"),
        ("routes:\n  /data: my-components\n", "2:3: route '/data' must name a Python module"),
        ("routes: [/data]\n", "1:1: 'routes' must be a mapping, got a list"),
        ("python_imports: yes please\n", "1:1: 'python_imports' must be true or false"),
        (
            "load_file: {rot: data}\n",
            "1:13: unknown key 'rot' in 'load_file' (did you mean 'root'?)",
        ),
        ("- just a list\n", "1:1: a component config must be a mapping, got a list"),
    ],
)
def test_pocketbatch_yaml_errors(tmp_path: Path, text: str, expected: str) -> None:
    """Every problem is a LoadError at the offending file:line:column."""
    path = write(tmp_path, "pocketbatch.yaml", text)
    with pytest.raises(LoadError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{expected}")


def test_invalid_yaml_is_a_load_error(tmp_path: Path) -> None:
    """A syntax error comes through as the reader's LoadError."""
    path = write(tmp_path, "pocketbatch.yaml", "routes: {\n")
    with pytest.raises(LoadError, match="invalid YAML"):
        load_config(path)


def test_missing_file_is_a_load_error(tmp_path: Path) -> None:
    """A config path that does not exist is a LoadError naming it."""
    with pytest.raises(LoadError, match="no such file"):
        load_config(tmp_path / "pocketbatch.yaml")


# --------------------------------------------------------------------------- stepflow-config.yml


def stepflow_builtins() -> dict[str, Component]:
    return {"/builtin/noop": adapt(lambda x: ("noop", x), path="/builtin/noop")}


@pytest.fixture
def stepflow(tmp_path: Path) -> ComponentConfig:
    return load_config(write(tmp_path, "stepflow-config.yml", STEPFLOW_CONFIG))


@pytest.mark.asyncio
async def test_stepflow_config_as_is_mock(stepflow: ComponentConfig) -> None:
    """Stepflow's own config: '/mock/error' routes to the mock plugin's component."""
    assert stepflow.format == "stepflow"
    assert stepflow.mock_paths() == ["/mock/error"]
    mock = resolver(stepflow).resolve("/mock/error")
    assert await call(mock, {"mode": "succeed"}) == {"output": "succeeded"}
    with pytest.raises(ComponentError) as info:
        await call(mock, {"mode": "error"})
    assert (info.value.code, info.value.message) == (8, "error")
    with pytest.raises(
        PluginFailure, match=re.escape('No behavior defined for /mock/error on {"mode":"other"}')
    ):
        await call(mock, {"mode": "other"})


def test_stepflow_grpc_route_cannot_run_here(stepflow: ComponentConfig, tmp_path: Path) -> None:
    """A path routed to a grpc plugin fails, naming the plugin, its type and the ways out."""
    with pytest.raises(UnknownComponent) as info:
        resolver(stepflow).resolve("/python/udf")
    message = info.value.message
    assert message.startswith(
        "component '/python/udf' is routed to plugin 'python' of type 'grpc' "
        f"({tmp_path / 'stepflow-config.yml'}:22:3), which pocketbatch cannot run; "
    )
    for way in ("ComponentRegistry", "pocketbatch.yaml", "a mock"):
        assert way in message


def test_registry_provides_a_grpc_routed_component(stepflow: ComponentConfig) -> None:
    """The registry is consulted before the config, so it can stand in for a worker."""
    registry = ComponentRegistry()
    registry.register("/python/udf", len)
    found = Resolver(registry, stepflow, LoaderOptions(), {})
    assert found.resolve("/python/udf") is registry.get("/python/udf")


@pytest.mark.asyncio
async def test_stepflow_builtin_route(stepflow: ComponentConfig) -> None:
    """A path routed to the builtin plugin resolves to pocketbatch's builtin of that path."""
    found = resolver(stepflow, stepflow_builtins())
    assert await call(found.resolve("/builtin/noop"), 1) == ("noop", 1)
    with pytest.raises(UnknownComponent) as info:
        found.resolve("/builtin/nop")
    assert info.value.message.startswith(
        "pocketbatch has no builtin '/builtin/nop' (did you mean '/builtin/noop'?)"
    )


def test_stepflow_mock_route_without_the_component(stepflow: ComponentConfig) -> None:
    """A path routed to a mock plugin that lacks it fails with a did-you-mean."""
    with pytest.raises(UnknownComponent) as info:
        resolver(stepflow).resolve("/mock/eror")
    assert info.value.message.startswith(
        "component '/mock/eror' is routed to mock plugin 'mock', which has no component "
        "'/mock/eror' or '/eror' (did you mean '/mock/error'?)"
    )


def test_unrouted_path_falls_through(stepflow: ComponentConfig) -> None:
    """A path no Stepflow route matches goes on to the builtins and fails as unknown."""
    with pytest.raises(UnknownComponent) as info:
        resolver(stepflow).resolve("/other/thing")
    assert info.value.tried == ("the routes in stepflow-config.yml (none matches)", "the builtins")


@pytest.mark.asyncio
async def test_stepflow_mock_keyed_by_the_part_after_the_prefix(tmp_path: Path) -> None:
    """Under '/mock/{*component}' a mock may be keyed '/error'; rules with conditions are
    skipped; unknown Stepflow keys are accepted."""
    config = load_config(
        write(
            tmp_path,
            "stepflow-config.yml",
            """\
            plugins:
              mock:
                type: mock
                components:
                  /error:
                    behaviors:
                      { mode: "succeed" }: {outcome: success, result: short key}
              remote:
                type: mcp
                command: some-server
            routes:
              "/mock/{*component}":
                - plugin: remote
                  conditions: [{path: "$.model", value: gpt}]
                - plugin: mock
            storageConfig: {type: inMemory}
            retry: {transportMaxRetries: 3}
            """,
        )
    )
    assert config.mock_paths() == ["/mock/error"]
    assert await call(resolver(config).resolve("/mock/error"), {"mode": "succeed"}) == "short key"


def test_only_conditional_rules_fall_through(tmp_path: Path) -> None:
    """A route whose rules all have conditions cannot be used before the input is known."""
    config = load_config(
        write(
            tmp_path,
            "stepflow-config.yml",
            """\
            plugins:
              remote: {type: grpc, queueName: q}
            routes:
              "/svc/{*component}":
                - plugin: remote
                  conditions: [{path: "$.model", value: gpt}]
            """,
        )
    )
    with pytest.raises(UnknownComponent, match="whose rules all have conditions"):
        resolver(config).resolve("/svc/x")


@pytest.mark.asyncio
async def test_older_routing_form(tmp_path: Path) -> None:
    """routing: [{match: '/mock/*', target: mock}] is understood too."""
    config = load_config(
        write(
            tmp_path,
            "stepflow-config.yml",
            """\
            plugins:
              mock:
                type: mock
                components:
                  /mock/error:
                    behaviors:
                      '{"mode": "succeed"}': {outcome: success, result: old form}
            routing:
              - match: "/mock/*"
                target: mock
            """,
        )
    )
    assert await call(resolver(config).resolve("/mock/error"), {"mode": "succeed"}) == "old form"
    with pytest.raises(UnknownComponent, match="no component '/mock/nope'"):
        resolver(config).resolve("/mock/nope")


@pytest.mark.asyncio
async def test_route_patterns_and_component_templates(tmp_path: Path) -> None:
    """'{name}' matches one segment; a rule's 'component' renames what the plugin gets;
    the most specific pattern wins."""
    config = load_config(
        write(
            tmp_path,
            "stepflow-config.yml",
            """\
            plugins:
              mock:
                type: mock
                components:
                  /x: {behaviors: {1: {outcome: success, result: one segment}}}
                  /mock/renamed: {behaviors: {1: {outcome: success, result: renamed}}}
                  /any/special: {behaviors: {1: {outcome: success, result: special}}}
              remote: {type: grpc, queueName: q}
            routes:
              "/one/{name}":
                - plugin: mock
              "/alias/{*name}":
                - plugin: mock
                  component: "/mock/{name}"
              "/any/{*rest}":
                - plugin: remote
              "/any/special":
                - plugin: mock
            """,
        )
    )
    found = resolver(config)
    assert await call(found.resolve("/one/x"), 1) == "one segment"
    assert await call(found.resolve("/alias/renamed"), 1) == "renamed"
    assert await call(found.resolve("/any/special"), 1) == "special"
    with pytest.raises(UnknownComponent, match="of type 'grpc'"):
        found.resolve("/any/other")
    with pytest.raises(UnknownComponent, match=r"the routes in stepflow-config\.yml"):
        found.resolve("/one/x/y")


def test_malformed_stepflow_behavior_position(tmp_path: Path) -> None:
    """A bad outcome in a mapping-keyed behaviour is reported at its line and column."""
    path = write(
        tmp_path,
        "stepflow-config.yml",
        """\
        plugins:
          mock:
            type: mock
            components:
              /mock/error:
                behaviors:
                  { mode: "error" }:
                    outcome: failed
                    error: {code: 8, message: "error"}
                  { mode: "succeed" }:
                    outcome: sucess
                    result: {output: "succeeded"}
        """,
    )
    with pytest.raises(LoadError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:11:13: unknown outcome 'sucess' (did you mean 'success'?)"


@pytest.mark.parametrize(
    ("behaviors", "expected"),
    [
        ('{ mode: "a" }:\n  outcome: failed\n', "8:13: 'outcome: failed' needs an 'error' mapping"),
        ('{ mode: "a" }:\n  result: 1\n', "7:11: a mock behavior needs 'outcome: success'"),
        ('{ mode: "a" }:\n  outcome: success\n', "8:13: 'outcome: success' needs a 'result'"),
        ('{ mode: "a" }:\n  outcome: skipped\n', "8:13: pocketbatch mocks cannot skip a step"),
        (
            "'{not json': {outcome: success, result: 1}\n",
            "7:11: the behavior key '{not json' looks like JSON",
        ),
        ("- just a string\n", "7:13: a mock behavior in a list needs an 'input'"),
    ],
)
def test_stepflow_behavior_errors(tmp_path: Path, behaviors: str, expected: str) -> None:
    """Malformed behaviours are LoadErrors at the offending spot."""
    indented = "".join(f"          {line}\n" for line in behaviors.splitlines())
    text = (
        "plugins:\n  mock:\n    type: mock\n    components:\n      /m:\n        behaviors:\n"
        + indented
    )
    path = write(tmp_path, "stepflow-config.yml", text)
    with pytest.raises(LoadError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{expected}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "plugins:\n  mock: {type: mock}\nroutes:\n  /m/{*c}:\n    - plugin: mokc\n",
            "5:7: unknown plugin 'mokc' (did you mean 'mock'?)",
        ),
        (
            "plugins:\n  mock: {type: mock}\nroutes:\n  /m/{*c}:\n    plugin: mock\n",
            "4:3: route '/m/{*c}' must be a list of rules",
        ),
        ("plugins:\n  mock: {components: {}}\n", "2:3: plugin 'mock' needs a 'type'"),
        (
            "plugins:\n  mock: {type: mock}\nroutes:\n  /m/{*c}/x:\n    - plugin: mock\n",
            "4:3: route '/m/{*c}/x': a '{*...}' placeholder must be the last segment",
        ),
        (
            "plugins:\n  mock: {type: mock}\nroutes:\n  /m/x{c}:\n    - plugin: mock\n",
            "4:3: route '/m/x{c}': pocketbatch understands placeholders only as whole segments",
        ),
        (
            "plugins:\n  mock: {type: mock}\nrouting:\n  - {match: /m/*, target: mok}\n",
            "4:19: unknown plugin 'mok' (did you mean 'mock'?)",
        ),
    ],
)
def test_stepflow_routing_errors(tmp_path: Path, text: str, expected: str) -> None:
    """Routes that name unknown plugins or malformed patterns are LoadErrors with positions."""
    path = write(tmp_path, "stepflow-config.yml", text)
    with pytest.raises(LoadError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{expected}")


def test_stepflow_format_is_detected_by_plugins_key(tmp_path: Path) -> None:
    """Any file with a top-level 'plugins' key is read as Stepflow's format."""
    config = load_config(write(tmp_path, "custom.yml", "plugins: {b: {type: builtin}}\nextra: 1\n"))
    assert config.format == "stepflow"


# --------------------------------------------------------------------------- find_config


def test_find_config_order(tmp_path: Path) -> None:
    """pocketbatch.yaml, pocketbatch.yml, stepflow-config.test.yml, stepflow-config.yml."""
    names = [
        "pocketbatch.yaml",
        "pocketbatch.yml",
        "stepflow-config.test.yml",
        "stepflow-config.yml",
    ]
    for name in names:
        write(tmp_path, name, "routes: {}\n")
    for name in names:
        assert find_config(tmp_path) == tmp_path / name
        (tmp_path / name).unlink()
    assert find_config(tmp_path) is None


def test_find_config_without_a_directory(tmp_path: Path) -> None:
    """No flow directory, or a directory named like a config, finds nothing."""
    assert find_config(None) is None
    (tmp_path / "pocketbatch.yaml").mkdir()
    assert find_config(tmp_path) is None


# --------------------------------------------------------------------------- /python/ imports


@pytest.mark.asyncio
async def test_python_imports_from_the_base_directory(tmp_path: Path, fresh_modules: None) -> None:
    """/python/ imports find modules in base_dir (default: the config's directory)."""
    write(tmp_path, "local_tools.py", "def shout(text):\n    return text.upper()\n")
    before = list(sys.path)
    explicit = Resolver(None, None, LoaderOptions(), {}, base_dir=tmp_path)
    assert await call(explicit.resolve("/python/local_tools.shout"), "a") == "A"
    config = load_config(write(tmp_path, "pocketbatch.yaml", "python_imports: true\n"))
    assert await call(resolver(config).resolve("/python/local_tools.shout"), "b") == "B"
    assert sys.path == before


@pytest.mark.asyncio
async def test_stepflow_allow_and_deny_lists(tmp_path: Path) -> None:
    """componentAllow / componentDeny decide which rule applies to a path."""
    config = load_config(
        write(
            tmp_path,
            "stepflow-config.yml",
            """\
            plugins:
              mock:
                type: mock
                components:
                  /svc/ok: {behaviors: {1: {outcome: success, result: allowed}}}
              remote: {type: grpc, queueName: q}
            routes:
              "/svc/{*component}":
                - plugin: mock
                  componentAllow: [ok]
                  componentDeny: [bad]
                - plugin: remote
            """,
        )
    )
    found = resolver(config)
    assert await call(found.resolve("/svc/ok"), 1) == "allowed"
    with pytest.raises(UnknownComponent, match="routed to plugin 'remote' of type 'grpc'"):
        found.resolve("/svc/other")


# ------------------------------------------------------------ issue 13: Stepflow's routing


def routed(tmp_path: Path, routes: str, plugins: str = "") -> Resolver:
    config = load_config(
        write(
            tmp_path,
            "stepflow-config.yml",
            "plugins:\n"
            "  builtin: {type: builtin}\n"
            "  mock:\n"
            "    type: mock\n"
            "    components:\n"
            "      /only_mock:\n"
            "        behaviors: {'{\"a\": 1}': {outcome: success, result: from mock}}\n"
            "      /noop:\n"
            "        behaviors: {'{\"a\": 1}': {outcome: success, result: mock noop}}\n"
            f"{plugins}"
            f"routes:\n{routes}",
        )
    )
    return resolver(config, stepflow_builtins())


@pytest.mark.asyncio
async def test_catch_all_route_matches_every_path(tmp_path: Path) -> None:
    """Regression (issue 13): '"/"' matched nothing ("none matches"); as in Stepflow's
    openai and data-pipeline examples it now routes every path, the whole path being
    the component ('/noop' is the builtin plugin's noop)."""
    found = routed(tmp_path, '  "/":\n    - plugin: builtin\n')
    assert await call(found.resolve("/noop"), 1) == ("noop", 1)
    assert await call(found.resolve("/builtin/noop"), 2) == ("noop", 2)
    with pytest.raises(UnknownComponent) as info:
        found.resolve("/nope")
    assert info.value.message.startswith("pocketbatch has no builtin '/nope'")
    assert "none matches" not in info.value.message


@pytest.mark.asyncio
async def test_rules_are_tried_in_order_and_fall_through(tmp_path: Path) -> None:
    """'/': [mock, builtin] (langchain's example shape): the first plugin that has the
    component serves it; one that lacks it hands on to the next rule."""
    found = routed(tmp_path, '  "/":\n    - plugin: mock\n    - plugin: builtin\n')
    assert await call(found.resolve("/only_mock"), {"a": 1}) == "from mock"
    assert await call(found.resolve("/noop"), {"a": 1}) == "mock noop"  # first rule wins
    swapped = routed(tmp_path, '  "/":\n    - plugin: builtin\n    - plugin: mock\n')
    assert await call(swapped.resolve("/noop"), 1) == ("noop", 1)
    assert await call(swapped.resolve("/only_mock"), {"a": 1}) == "from mock"


@pytest.mark.asyncio
async def test_specific_route_first_then_the_catch_all(tmp_path: Path) -> None:
    """A prefix route is tried before '/'; a path its plugin lacks goes on to '/'."""
    found = routed(tmp_path, '  "/":\n    - plugin: builtin\n  "/m":\n    - plugin: mock\n')
    assert await call(found.resolve("/m/only_mock"), {"a": 1}) == "from mock"
    assert await call(found.resolve("/noop"), 1) == ("noop", 1)
    with pytest.raises(UnknownComponent) as info:
        found.resolve("/m/absent")
    assert info.value.message.startswith(
        "component '/m/absent' is routed to mock plugin 'mock', which has no component "
        "'/m/absent' or '/absent'"
    )
    assert [t.split(" (")[0] for t in info.value.tried] == ["route '/m'", "route '/'"]


@pytest.mark.asyncio
async def test_plugin_pocketbatch_cannot_run_is_passed_over(tmp_path: Path) -> None:
    """'/': [grpc worker, builtin]: a builtin is served by the builtin plugin; a path no
    later rule serves names the plugin pocketbatch cannot run."""
    found = routed(
        tmp_path,
        '  "/":\n    - plugin: worker\n    - plugin: builtin\n',
        "  worker: {type: grpc, queueName: q, command: uv}\n",
    )
    # A worker's components are known once it runs: it is tried first, the builtin
    # plugin serves the path when the worker has no such component.
    noop = found.resolve("/noop")
    assert type(noop).__name__ == "WorkerComponent"
    assert await call(noop.fallback, 1) == ("noop", 1)  # type: ignore[attr-defined]
    assert found.resolve("/langchain/thing").fallback is None  # type: ignore[attr-defined]
    remote = routed(
        tmp_path / "remote",
        '  "/":\n    - plugin: worker\n    - plugin: builtin\n',
        "  worker: {type: grpc, queueName: q}\n",
    )
    assert await call(remote.resolve("/noop"), 1) == ("noop", 1)
    with pytest.raises(UnknownComponent) as info:
        remote.resolve("/langchain/thing")
    assert info.value.message.startswith(
        "component '/langchain/thing' is routed to plugin 'worker' of type 'grpc' "
    )
    # Stepflow's langchain example: '/builtin' first, then '/': [worker, builtin]. A
    # builtin pocketbatch lacks is reported as such, not as the worker's path.
    langchain = routed(
        tmp_path,
        '  "/builtin":\n    - plugin: builtin\n  "/":\n    - plugin: worker\n'
        "    - plugin: builtin\n",
        "  worker: {type: grpc, queueName: q, command: uv}\n",
    )
    assert await call(langchain.resolve("/builtin/noop"), 3) == ("noop", 3)
    with pytest.raises(UnknownComponent) as info:
        langchain.resolve("/builtin/absent")
    assert info.value.message.startswith("pocketbatch has no builtin '/builtin/absent'")


def test_unknown_stepflow_config_key_is_a_warning(tmp_path: Path) -> None:
    """Stepflow ignores unknown config keys: pocketbatch loads the config and the flow,
    with a warning at the key's file:line:column."""
    cfg = write(
        tmp_path,
        "stepflow-config.yml",
        "plugins:\n  builtin: {type: builtin}\nroutes:\n  /builtin:\n    - plugin: builtin\n"
        "storageConfig: {type: inMemory}\nroutez: {}\n",
    )
    config = load_config(cfg)
    assert [str(w) for w in config.warnings] == [
        f"{cfg}:7:1: unknown key 'routez' in a Stepflow config (did you mean 'routes'?), "
        "which Stepflow ignores"
    ]
    flow = load_flow("steps:\n- {id: a, component: /builtin/noop}\noutput: 1\n", config=cfg)
    assert [(w.file, w.line, w.column) for w in flow.warnings] == [(str(cfg), 7, 1)]
    with pytest.raises(LoadError, match="7:1: unknown key 'routez'"):
        load_flow("output: 1\n", config=cfg, strict=True)
