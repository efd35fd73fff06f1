"""Component adapters, the ComponentRegistry, mock components and the Resolver's order."""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import AsyncNode, Node, load_flow
from pocketbatch._errors import ComponentError, LoadError
from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import CallContext, Component, LoaderOptions
from pocketbatch.loader._config import ComponentConfig
from pocketbatch.loader._mocks import MockComponent
from pocketbatch.loader._registry import ComponentRegistry
from pocketbatch.loader._resolve import Resolver, UnknownComponent

CTX = CallContext(step_id="step", flow_dir=None, variables={})


async def call(component: Component, value: Any) -> Any:
    return await component(value, CTX)


# --------------------------------------------------------------------------- adapt: functions


@pytest.mark.asyncio
async def test_sync_function_runs_on_the_event_loop_thread() -> None:
    """A sync callable is called directly, on the loop's own thread."""
    seen: list[int] = []

    def double(n: int) -> int:
        seen.append(threading.get_ident())
        return 2 * n

    assert await call(adapt(double, path="/math/double"), 21) == 42
    assert seen == [threading.get_ident()]


@pytest.mark.asyncio
async def test_sync_function_with_offload_runs_in_another_thread() -> None:
    """offload=True moves a sync callable to a worker thread."""
    seen: list[int] = []

    def double(n: int) -> int:
        seen.append(threading.get_ident())
        return 2 * n

    assert await call(adapt(double, offload=True), 4) == 8
    assert len(seen) == 1
    assert seen[0] != threading.get_ident()


@pytest.mark.asyncio
async def test_async_function_is_awaited() -> None:
    """An async def component is awaited with the input."""

    async def shout(text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()

    component = adapt(shout, path="/text/shout")
    assert await call(component, "hi") == "HI"
    assert "async function" in repr(component)
    assert "'/text/shout'" in repr(component)


@pytest.mark.asyncio
async def test_sync_callable_returning_an_awaitable_is_awaited() -> None:
    """A sync callable that returns a coroutine has that coroutine awaited."""

    async def later(n: int) -> int:
        return n + 1

    def start(n: int) -> Any:
        return later(n)

    assert await call(adapt(start), 1) == 2
    assert await call(adapt(start, offload=True), 1) == 2


@pytest.mark.asyncio
async def test_callable_instance_with_async_call() -> None:
    """An object whose __call__ is async is treated as an async function."""

    class Greeter:
        async def __call__(self, name: str) -> str:
            return f"hello {name}"

    component = adapt(Greeter())
    assert "async function" in repr(component)
    assert await call(component, "ada") == "hello ada"


def test_adapt_returns_components_unchanged() -> None:
    """Adapting an adapted component or a mock gives back the same object."""
    component = adapt(len)
    mock = MockComponent("/m", [])
    assert adapt(component) is component
    assert adapt(mock) is mock


# --------------------------------------------------------------------------- adapt: nodes


class Upper(Node):
    """Sync node: shared['input'] -> shared['output'] upper-cased; counts instances."""

    created = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).created += 1
        self.calls = 0

    def prep(self, shared: Any) -> Any:
        return shared["input"]

    def exec(self, text: Any) -> Any:
        self.calls += 1
        return {"text": text.upper(), "calls": self.calls, "thread": threading.get_ident()}

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["output"] = exec_res


class AsyncReverse(AsyncNode):
    """Async node: reverses shared['input']."""

    async def prep_async(self, shared: Any) -> Any:
        return shared["input"]

    async def exec_async(self, text: Any) -> Any:
        await asyncio.sleep(0)
        return text[::-1]

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["output"] = exec_res


class Forgetful(Node):
    """A node that never writes shared['output']."""


@pytest.mark.asyncio
async def test_sync_node_class_gets_a_fresh_instance_per_call() -> None:
    """A node class is instantiated per call and run on {'input': ...}."""
    component = adapt(Upper, path="/text/upper")
    before = Upper.created
    first = await call(component, "ab")
    second = await call(component, "cd")
    assert first["text"] == "AB"
    assert second["text"] == "CD"
    assert first["calls"] == second["calls"] == 1
    assert Upper.created == before + 2
    assert first["thread"] == threading.get_ident()


@pytest.mark.asyncio
async def test_sync_node_class_with_offload_runs_in_another_thread() -> None:
    """offload=True runs a sync node's run() on a worker thread."""
    result = await call(adapt(Upper, offload=True), "x")
    assert result["text"] == "X"
    assert result["thread"] != threading.get_ident()


@pytest.mark.asyncio
async def test_node_built_with_offload_runs_in_another_thread() -> None:
    """A node instance created with Node(offload=True) is offloaded without being told."""

    class Where(Node):
        def exec(self, prep_res: Any) -> Any:
            return threading.get_ident()

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["output"] = exec_res

    assert await call(adapt(Where(offload=True)), None) != threading.get_ident()


@pytest.mark.asyncio
async def test_async_node_class_is_run_with_run_async() -> None:
    """An AsyncNode subclass is awaited with run_async."""
    assert await call(adapt(AsyncReverse), "abc") == "cba"


@pytest.mark.asyncio
async def test_node_instance_is_copied_per_call() -> None:
    """A node instance is copy.copy'd per call, so state set during a call does not leak."""
    node = Upper()
    component = adapt(node)
    assert (await call(component, "a"))["calls"] == 1
    assert (await call(component, "b"))["calls"] == 1
    assert node.calls == 0
    assert (await call(adapt(AsyncReverse()), "xy")) == "yx"


@pytest.mark.asyncio
async def test_node_that_sets_no_output_fails_with_component_failed() -> None:
    """A node that does not write shared['output'] fails with COMPONENT_FAILED."""
    with pytest.raises(ComponentError) as info:
        await call(adapt(Forgetful), {})
    assert info.value.code == "COMPONENT_FAILED"
    assert info.value.message == "Forgetful did not set shared['output']"


def test_node_class_that_needs_arguments_is_refused_at_once() -> None:
    """A node class whose constructor needs arguments fails when adapted, naming the path."""

    class NeedsModel(Node):
        def __init__(self, model: str) -> None:
            super().__init__()
            self.model = model

    with pytest.raises(TypeError, match=r"component '/llm/ask': node class .*NeedsModel"):
        adapt(NeedsModel, path="/llm/ask")


@pytest.mark.parametrize(
    ("target", "kind"),
    [(42, "int"), ("not code", "str"), (None, "NoneType"), ({"a": 1}, "dict")],
)
def test_bad_targets_raise_type_error_naming_path_and_type(target: Any, kind: str) -> None:
    """Anything not callable is refused with the path and the type in the message."""
    with pytest.raises(TypeError) as info:
        adapt(target, path="/bad/target")
    assert "'/bad/target'" in str(info.value)
    assert kind in str(info.value)


def test_non_node_class_is_refused() -> None:
    """A plain class is not mistaken for a component factory."""

    class Plain:
        pass

    with pytest.raises(TypeError, match=r"component '/x': .*Plain is a class but not a node"):
        adapt(Plain, path="/x")


# --------------------------------------------------------------------------- the registry


def test_decorator_registers_and_returns_the_target_unchanged() -> None:
    """@registry.component(path) returns the very function it decorates."""
    registry = ComponentRegistry()

    def validate(record: dict[str, Any]) -> dict[str, Any]:
        return {"ok": "id" in record}

    assert registry.component("/data/validate")(validate) is validate
    assert registry.component("/data/node")(Upper) is Upper
    assert "/data/validate" in registry
    assert "/data/missing" not in registry
    assert len(registry) == 2
    assert registry.paths() == ["/data/node", "/data/validate"]
    assert repr(registry) == "ComponentRegistry(['/data/node', '/data/validate'])"


@pytest.mark.asyncio
async def test_register_and_get() -> None:
    """register() adapts the target; get() returns it, or None for an unknown path."""
    registry = ComponentRegistry()
    registry.register("/math/double", lambda n: 2 * n)
    component = registry.get("/math/double")
    assert component is not None
    assert await call(component, 5) == 10
    assert registry.get("/math/triple") is None


@pytest.mark.asyncio
async def test_decorator_with_offload() -> None:
    """The decorator passes offload through to adapt."""
    registry = ComponentRegistry()

    @registry.component("/where", offload=True)
    def where(_: Any) -> int:
        return threading.get_ident()

    component = registry.get("/where")
    assert component is not None
    assert await call(component, None) != threading.get_ident()


@pytest.mark.parametrize("path", ["data/validate", "", "/", "validate"])
def test_paths_must_start_with_a_slash(path: str) -> None:
    """A path that does not start with '/' (or is just '/') is a ValueError."""
    registry = ComponentRegistry()
    with pytest.raises(ValueError, match="must start with '/'"):
        registry.register(path, len)
    with pytest.raises(ValueError, match="must start with '/'"):
        registry.component(path)
    assert len(registry) == 0


def test_registering_a_path_twice_is_an_error_naming_it() -> None:
    """The second registration of a path raises ValueError and keeps the first."""
    registry = ComponentRegistry()
    registry.register("/data/validate", len)
    first = registry.get("/data/validate")
    with pytest.raises(ValueError, match=r"'/data/validate' is already registered"):
        registry.register("/data/validate", abs)
    assert registry.get("/data/validate") is first


def test_registering_a_bad_target_fails_and_registers_nothing() -> None:
    """A target adapt() refuses is not half-registered."""
    registry = ComponentRegistry()
    with pytest.raises(TypeError, match="'/x'"):
        registry.register("/x", 3)
    assert "/x" not in registry


def test_registries_are_independent() -> None:
    """Two registries never share components."""
    one, two = ComponentRegistry(), ComponentRegistry()
    one.register("/a", len)
    assert "/a" not in two
    two.register("/a", abs)
    assert one.get("/a") is not two.get("/a")


# --------------------------------------------------------------------------- mocks

MOCK = MockComponent(
    "/mock/error",
    [
        ({"mode": "error"}, "failed", {"code": 8, "message": "error", "data": {"why": "asked"}}),
        ({"mode": "succeed"}, "success", {"output": "succeeded"}),
        ({"mode": "succeed"}, "success", {"output": "shadowed"}),
        ({"mode": "default"}, "failed", {}),
        ({"flag": True}, "success", "bool"),
        ({"flag": 1}, "success", "int"),
    ],
)


@pytest.mark.asyncio
async def test_mock_success_returns_a_copy_of_the_first_match() -> None:
    """The first behaviour with an equal input wins; its result is copied."""
    result = await call(MOCK, {"mode": "succeed"})
    assert result == {"output": "succeeded"}
    result["output"] = "changed"
    assert await call(MOCK, {"mode": "succeed"}) == {"output": "succeeded"}


@pytest.mark.asyncio
async def test_mock_failure_passes_the_code_through() -> None:
    """outcome failed raises ComponentError with the error's code, message and data."""
    with pytest.raises(ComponentError) as info:
        await call(MOCK, {"mode": "error"})
    assert (info.value.code, info.value.message, info.value.data) == (8, "error", {"why": "asked"})


@pytest.mark.asyncio
async def test_mock_failure_defaults() -> None:
    """An error with no code or message fails with COMPONENT_FAILED and an empty message."""
    with pytest.raises(ComponentError) as info:
        await call(MOCK, {"mode": "default"})
    assert (info.value.code, info.value.message, info.value.data) == ("COMPONENT_FAILED", "", None)


@pytest.mark.asyncio
async def test_mock_without_a_matching_behavior() -> None:
    """No match fails with COMPONENT_FAILED naming the path and the input as sorted JSON."""
    with pytest.raises(ComponentError) as info:
        await call(MOCK, {"mode": "other", "a": [1, None]})
    assert info.value.code == "COMPONENT_FAILED"
    assert info.value.message == (
        'no behavior defined for /mock/error on {"a": [1, null], "mode": "other"}'
    )


@pytest.mark.asyncio
async def test_mock_matching_is_json_equality() -> None:
    """true and 1 are different JSON values; 1 and 1.0 are the same; key order is irrelevant."""
    assert await call(MOCK, {"flag": True}) == "bool"
    assert await call(MOCK, {"flag": 1}) == "int"
    assert await call(MOCK, {"flag": 1.0}) == "int"
    mock = MockComponent("/m", [({"a": 1, "b": [1, 2]}, "success", "yes")])
    assert await call(mock, {"b": [1, 2], "a": 1}) == "yes"
    with pytest.raises(ComponentError):
        await call(mock, {"a": 1, "b": [2, 1]})
    with pytest.raises(ComponentError):
        await call(mock, {"a": "1", "b": [1, 2]})


def test_mock_rejects_bad_behaviors() -> None:
    """Unknown outcomes, non-mapping errors and non-triples are refused when built."""
    with pytest.raises(ValueError, match="outcome 'skipped'"):
        MockComponent("/m", [({}, "skipped", None)])
    with pytest.raises(TypeError, match="must be a mapping"):
        MockComponent("/m", [({}, "failed", "boom")])
    with pytest.raises(TypeError, match=r"must be \(input, outcome"):
        MockComponent("/m", [({}, "success")])  # type: ignore[list-item]
    assert repr(MOCK) == "MockComponent('/mock/error', 6 behaviors)"


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
