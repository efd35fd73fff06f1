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
