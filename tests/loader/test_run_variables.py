"""Run variables reach expressions and components; load-time ones are the defaults."""

from __future__ import annotations

import asyncio
from typing import Any

from pocketbatch import ComponentRegistry, load_flow
from pocketbatch.loader import CallContext

FLOW = """
steps:
  - id: peek
    component: /test/peek
    input: {greeting: {$variable: greeting, default: "hello"}}
output: {$step: peek}
"""


def make_flow(**variables: Any) -> Any:
    registry = ComponentRegistry()

    class Peek:
        async def __call__(self, data: Any, ctx: CallContext) -> Any:
            return {"input": data["greeting"], "seen": dict(ctx.variables)}

    registry.register("/test/peek", Peek())
    return load_flow(FLOW, registry=registry, variables=variables or None)


def test_default_when_no_variable_is_given() -> None:
    """$variable's default applies when nobody supplies the variable."""
    assert make_flow().run({}).result == {"input": "hello", "seen": {}}


def test_load_time_variables_are_defaults_for_every_run() -> None:
    """Variables given to load_flow reach expressions and the component's context."""
    flow = make_flow(greeting="hi", model="small")
    assert flow.run({}).result == {"input": "hi", "seen": {"greeting": "hi", "model": "small"}}


def test_run_variables_override_and_reach_components() -> None:
    """run(variables=...) wins over load-time ones, in expressions and in CallContext."""
    flow = make_flow(greeting="hi", model="small")
    result = flow.run({}, variables={"model": "large", "extra": 1}).result
    assert result == {"input": "hi", "seen": {"greeting": "hi", "model": "large", "extra": 1}}


def test_concurrent_runs_keep_their_own_variables() -> None:
    """Runs side by side each see their own variables."""
    flow = make_flow()

    async def both() -> list[Any]:
        runs = [flow.run_async({}, variables={"greeting": f"g{i}"}) for i in range(20)]
        return [r.result["input"] for r in await asyncio.gather(*runs)]

    assert asyncio.run(both()) == [f"g{i}" for i in range(20)]


def run_component(fn: Any) -> Any:
    registry = ComponentRegistry()
    registry.register("/test/fn", fn)
    flow = load_flow(
        "steps: [{id: s, component: /test/fn, input: {x: 1}}]\noutput: {$step: s}",
        registry=registry,
    )
    return flow.run({}, variables={"v": 2}).to_dict()


def test_sync_function_taking_ctx_gets_the_call_context() -> None:
    """A sync f(input, ctx) receives the CallContext."""

    def fn(data: Any, ctx: CallContext) -> Any:
        return {"x": data["x"], "step": ctx.step_id, "v": ctx.variables["v"]}

    assert run_component(fn) == {"outcome": "success", "result": {"x": 1, "step": "s", "v": 2}}


def test_async_function_taking_context_gets_the_call_context() -> None:
    """An async f(input, context=None) named 'context' receives it too."""

    async def fn(data: Any, context: CallContext | None = None) -> Any:
        assert context is not None
        return {"step": context.step_id}

    assert run_component(fn)["result"] == {"step": "s"}


def test_optional_second_parameter_is_left_alone() -> None:
    """f(input, extra=None) is called with the input only."""

    def fn(data: Any, extra: Any = "untouched") -> Any:
        return {"extra": extra}

    assert run_component(fn)["result"] == {"extra": "untouched"}
