"""The Resolver: its order of precedence, /python/ imports and unknown-component messages."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import load_flow
from pocketbatch._errors import LoadError
from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import CallContext, Component, LoaderOptions
from pocketbatch.loader._config import ComponentConfig
from pocketbatch.loader._mocks import MockComponent
from pocketbatch.loader._registry import ComponentRegistry
from pocketbatch.loader._resolve import Resolver, UnknownComponent

CTX = CallContext(step_id="step", flow_dir=None, variables={})


async def call(component: Component, value: Any) -> Any:
    return await component(value, CTX)


# --------------------------------------------------------------------------- the resolver


def builtins() -> dict[str, Component]:
    return {"/builtin/noop": adapt(lambda x: ("builtin", x), path="/builtin/noop")}


@pytest.mark.asyncio
async def test_resolution_order_registry_then_config_then_builtins() -> None:
    """The registry beats a config mock, which beats a builtin of the same path."""
    mock = MockComponent("/builtin/noop", [(1, "success", "mock")])
    config = ComponentConfig(mocks={"/builtin/noop": mock})
    registry = ComponentRegistry()
    registry.register("/builtin/noop", lambda x: "registry")

    assert (
        await call(
            Resolver(registry, config, LoaderOptions(), builtins()).resolve("/builtin/noop"), 1
        )
        == "registry"
    )
    assert (
        Resolver(ComponentRegistry(), config, LoaderOptions(), builtins()).resolve("/builtin/noop")
        is mock
    )
    only_builtin = Resolver(ComponentRegistry(), ComponentConfig(), LoaderOptions(), builtins())
    assert await call(only_builtin.resolve("/builtin/noop"), 1) == ("builtin", 1)


def test_resolve_caches_per_path() -> None:
    """Resolving a path twice gives the same component object."""
    resolver = Resolver(None, None, LoaderOptions(), {})
    first = resolver.resolve("/python/json.dumps")
    assert resolver.resolve("/python/json.dumps") is first


@pytest.mark.asyncio
async def test_python_imports_with_a_dotted_module() -> None:
    """/python/<module>.<function> imports the function; the module may be dotted."""
    resolver = Resolver(None, None, LoaderOptions(), {})
    assert await call(resolver.resolve("/python/os.path.basename"), "/a/b.txt") == "b.txt"
    assert await call(resolver.resolve("/python/json.dumps"), [1]) == "[1]"


def test_python_imports_refused_by_the_options() -> None:
    """With allow_python_imports=False the message says imports are disabled here."""
    resolver = Resolver(None, None, LoaderOptions(allow_python_imports=False), {})
    with pytest.raises(UnknownComponent, match="/python/ imports are disabled here") as info:
        resolver.resolve("/python/json.dumps")
    assert info.value.path == "/python/json.dumps"


def test_python_imports_refused_by_the_config() -> None:
    """python_imports: false in the config refuses them too, and says where."""
    config = ComponentConfig(python_imports=False)
    resolver = Resolver(None, config, LoaderOptions(), {})
    with pytest.raises(UnknownComponent, match="disabled here by 'python_imports: false'"):
        resolver.resolve("/python/json.dumps")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/python/json.dumsp", "which has no 'dumsp'"),
        ("/python/no_such_module_here.f", "cannot be imported (ModuleNotFoundError"),
        ("/python/json", "names a module and a public function"),
        ("/python/json._default_encoder", "names a module and a public function"),
        ("/python/json.decoder", "expected a function"),
    ],
)
def test_python_import_failures(path: str, expected: str) -> None:
    """Bad /python/ paths fail with UnknownComponent saying why."""
    resolver = Resolver(None, None, LoaderOptions(), {})
    with pytest.raises(UnknownComponent) as info:
        resolver.resolve(path)
    assert expected in info.value.message
    assert path in info.value.message


PB_PY_MOD = """\
import re
from builtins import eval
from subprocess import getoutput

run_eval = eval


def shout(text):
    return text.upper()
"""


@pytest.fixture
def py_mod(tmp_path: Path) -> Iterator[Path]:
    """A module pb_py_mod beside the flow that imports a module, a function and a builtin."""
    (tmp_path / "pb_py_mod.py").write_text(PB_PY_MOD, encoding="utf-8")
    yield tmp_path
    sys.modules.pop("pb_py_mod", None)


@pytest.mark.parametrize("allowed", [None, frozenset({"pb_py_mod"})])
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/python/pb_py_mod.getoutput", "'getoutput' is defined in module 'subprocess'"),
        ("/python/pb_py_mod.eval", "'eval' is defined in module 'builtins'"),
        ("/python/pb_py_mod.run_eval", "'run_eval' is defined in module 'builtins'"),
        ("/python/pb_py_mod.re", "'re' is a module"),
        ("/python/pb_py_mod.__builtins__", "no part may start with '_'"),
        ("/python/pb_py_mod.shout.__globals__", "no part may start with '_'"),
        ("/python/pb_py_mod.shout.upper", "cannot be imported"),
        ("/python/pb_py_mod.re.enum.bltns.eval", "cannot be imported"),
    ],
)
def test_python_imports_reach_only_what_the_module_defines(
    py_mod: Path, allowed: frozenset[str] | None, path: str, expected: str
) -> None:
    """/python/<module>.<name> (with or without --allow-module) takes the name from
    the module itself: imported modules, functions and builtins are refused, and the
    module part is imported, never walked through attributes."""
    options = LoaderOptions(python_modules=allowed)
    resolver = Resolver(None, None, options, {}, base_dir=py_mod)
    with pytest.raises(UnknownComponent) as info:
        resolver.resolve(path)
    assert repr(path) in info.value.message
    assert expected in info.value.message


@pytest.mark.asyncio
async def test_python_imports_reach_defined_and_exported_functions(py_mod: Path) -> None:
    """A function the module defines, or lists in __all__ (os.path's exists comes
    from genericpath), still resolves."""
    resolver = Resolver(None, None, LoaderOptions(), {}, base_dir=py_mod)
    assert await call(resolver.resolve("/python/pb_py_mod.shout"), "hi") == "HI"
    assert await call(resolver.resolve("/python/os.path.exists"), os.sep) is True


def test_python_import_of_a_private_module_is_refused() -> None:
    """No part of a /python/ path may start with '_', the module's included."""
    resolver = Resolver(None, None, LoaderOptions(), {})
    with pytest.raises(UnknownComponent, match="no part may start with '_'"):
        resolver.resolve("/python/concurrent.futures._base.wait")


def test_python_import_refusal_is_a_load_error_naming_the_path(py_mod: Path) -> None:
    """Through load_flow with --allow-module's options: a load error at the step."""
    flow = py_mod / "flow.yaml"
    flow.write_text(
        "steps:\n  - id: x\n    component: /python/pb_py_mod.getoutput\n    input: id\n"
        "output: {$step: x}\n",
        encoding="utf-8",
    )
    options = LoaderOptions(python_modules=frozenset({"pb_py_mod"}))
    with pytest.raises(LoadError) as info:
        load_flow(flow, options=options)
    assert str(info.value).startswith(
        f"{flow}:3:5: step 'x': component '/python/pb_py_mod.getoutput' is not allowed"
    )


def test_python_import_suggests_a_close_function() -> None:
    """A misspelt function in an importable module gets a did-you-mean."""
    resolver = Resolver(None, None, LoaderOptions(), {})
    with pytest.raises(UnknownComponent, match=r"did you mean '/python/json.loads'\?"):
        resolver.resolve("/python/json.laods")


def test_unknown_component_message() -> None:
    """The message names the path, the closest known path and what was tried."""
    registry = ComponentRegistry()
    registry.register("/data/validate", len)
    config = ComponentConfig(mocks={"/mock/error": MockComponent("/mock/error", [])})
    resolver = Resolver(registry, config, LoaderOptions(), builtins())
    assert resolver.known_paths() == ["/builtin/noop", "/data/validate", "/mock/error"]

    with pytest.raises(UnknownComponent) as info:
        resolver.resolve("/data/validte")
    assert info.value.path == "/data/validte"
    assert info.value.message == (
        "unknown component '/data/validte' (did you mean '/data/validate'?); "
        "tried: the ComponentRegistry; the mocks in the component config; the builtins"
    )
    assert info.value.tried == (
        "the ComponentRegistry",
        "the mocks in the component config",
        "the builtins",
    )
    assert str(info.value) == info.value.message

    with pytest.raises(UnknownComponent, match=r"did you mean '/mock/error'\?"):
        resolver.resolve("/mock/eror")


def test_unknown_component_without_suggestion_says_how_to_fix_it() -> None:
    """With nothing close, the message says how to provide the component."""
    resolver = Resolver(None, None, LoaderOptions(), {})
    with pytest.raises(UnknownComponent) as info:
        resolver.resolve("/nothing/like/it")
    assert info.value.message.startswith(
        "unknown component '/nothing/like/it'; tried: the builtins"
    )
    assert "register it in a ComponentRegistry" in info.value.message


def test_path_without_a_leading_slash_gets_a_hint() -> None:
    """'data/validate' is suggested its '/'-prefixed spelling."""
    registry = ComponentRegistry()
    registry.register("/data/validate", len)
    resolver = Resolver(registry, None, LoaderOptions(), {})
    with pytest.raises(UnknownComponent) as info:
        resolver.resolve("data/validate")
    assert info.value.message.startswith(
        "unknown component 'data/validate' (component paths start with '/') "
        "(did you mean '/data/validate'?)"
    )


def test_unknown_component_pickles() -> None:
    """UnknownComponent survives pickling with its fields."""
    err = UnknownComponent("/x", "unknown component '/x'", ["the builtins"])
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.message, copy.tried) == (
        "/x",
        "unknown component '/x'",
        ("the builtins",),
    )
