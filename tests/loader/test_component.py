"""The component contract's context: ``CallContext.evaluate_batch`` (Stepflow's "batch
within a workflow") and ``CallContext.attempt``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import ComponentError, ComponentRegistry, load_flow
from pocketbatch.loader._component import CallContext

STEP = "steps:\n  - id: s\n    component: /t/batch\n    input: {$input: $}\noutput: {$step: s}\n"


def batch_flow(body: Any, text: str = STEP, path: Path | None = None) -> Any:
    registry = ComponentRegistry()
    registry.register("/t/batch", body)
    if path is not None:
        path.write_text(text, encoding="utf-8")
        return load_flow(path, registry=registry)
    return load_flow(text, registry=registry)


def test_results_in_input_order_at_most_max_concurrency_at_a_time() -> None:
    in_flight = {"now": 0, "most": 0}
    inner = ComponentRegistry()

    async def slow(value: dict[str, int]) -> int:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        for _ in range(5 - value["n"]):  # later items finish first
            await asyncio.sleep(0)
        in_flight["now"] -= 1
        return value["n"] * 10

    inner.register("/t/slow", slow)

    async def body(data: dict[str, Any], ctx: CallContext) -> Any:
        flow = {
            "steps": [{"id": "x", "component": "/t/slow", "input": {"$input": "$"}}],
            "output": {"$step": "x"},
        }
        results = await ctx.evaluate_batch(flow, [{"n": n} for n in range(5)], max_concurrency=2)
        return [r.result for r in results]

    inner.register("/t/batch", body)
    flow = load_flow(STEP, registry=inner)
    assert flow.run({}).result == [0, 10, 20, 30, 40]
    assert in_flight["most"] == 2


def test_a_failing_input_fails_only_its_own_result() -> None:
    async def body(data: Any, ctx: CallContext) -> Any:
        results = await ctx.evaluate_batch({"output": {"$input": "x"}}, [{"x": 1}, {}, {"x": 3}])
        return [r.to_dict() for r in results]

    out = batch_flow(body).run({}).result
    assert out[0] == {"outcome": "success", "result": 1}
    assert out[1]["outcome"] == "failed"
    assert out[1]["error"]["code"] == "EXPRESSION_FAILURE"
    assert out[2] == {"outcome": "success", "result": 3}


def test_no_inputs_no_runs() -> None:
    async def body(data: Any, ctx: CallContext) -> Any:
        return await ctx.evaluate_batch({"output": 1}, [])

    assert batch_flow(body).run({}).result == []


def test_a_path_is_relative_to_the_flow_file_and_confined(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text("output: {got: {$input: v}}\n", encoding="utf-8")
    (tmp_path / "flows").mkdir()

    async def body(data: Any, ctx: CallContext) -> Any:
        results = await ctx.evaluate_batch(data["flow"], [{"v": 1}, {"v": 2}])
        return [r.result for r in results]

    flow = batch_flow(body, path=tmp_path / "outer.yaml")
    assert flow.run({"flow": "inner.yaml"}).result == [{"got": 1}, {"got": 2}]
    nested = batch_flow(body, path=tmp_path / "flows" / "outer.yaml")
    error = nested.run({"flow": "../inner.yaml"}).error
    assert error is not None
    assert error.code == "PERMISSION_DENIED"


def test_variables_and_services_are_the_runs() -> None:
    async def body(data: Any, ctx: CallContext) -> Any:
        results = await ctx.evaluate_batch(
            {
                "steps": [{"id": "p", "component": "/builtin/put_blob", "input": {"data": 7}}],
                "output": {"v": {"$variable": "greeting"}, "id": {"$step": "p", "path": "blob_id"}},
            },
            [{}],
        )
        stored, _ = await ctx.services.blobs.get(results[0].result["id"])  # type: ignore[union-attr]
        return {"v": results[0].result["v"], "stored": stored}

    flow = batch_flow(body)
    assert flow.run({}, variables={"greeting": "hi"}).result == {"v": "hi", "stored": 7}


@pytest.mark.asyncio
async def test_a_context_without_nested_flows_says_so() -> None:
    ctx = CallContext(step_id="s", flow_dir=None, variables={})
    with pytest.raises(ComponentError) as info:
        await ctx.evaluate_batch({"output": 1}, [{}])
    assert info.value.code == "INVALID_INPUT"
    assert "nested flows are not available" in info.value.message


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
async def test_max_concurrency_must_be_a_whole_number_of_at_least_one(bad: Any) -> None:
    ctx = CallContext(step_id="s", flow_dir=None, variables={})
    with pytest.raises(ValueError, match="max_concurrency"):
        await ctx.evaluate_batch({"output": 1}, [{}], max_concurrency=bad)


def test_attempt_counts_from_one_and_grows_with_retries() -> None:
    seen: list[int] = []

    def body(data: Any, ctx: CallContext) -> Any:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("again")
        return ctx.attempt

    flow = batch_flow(
        body,
        "steps:\n  - id: s\n    component: /t/batch\n    input: {}\n"
        "    on_error: {action: retry, max_retries: 3, wait: 0}\n"
        "output: {$step: s}\n",
    )
    assert flow.run({}).result == 3
    assert seen == [1, 2, 3]
