"""Component adapters and the ComponentRegistry (which adapts what it registers)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pocketbatch import AsyncNode, Node
from pocketbatch._errors import ComponentError
from pocketbatch.loader._adapt import adapt
from pocketbatch.loader._component import CallContext, Component
from pocketbatch.loader._mocks import MockComponent
from pocketbatch.loader._registry import ComponentRegistry

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
