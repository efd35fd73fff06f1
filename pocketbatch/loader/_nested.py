"""Builtins that run nested flows: ``/builtin/eval`` (once) and ``/builtin/map`` (per item).

``/builtin/map`` is an :class:`~pocketbatch.AsyncParallelBatchFlow` over the
sub-flow: one sub-flow run per item, ``max_concurrency`` at a time (unbounded by
default, as in Stepflow), each item's failure isolated in its own result.
"""

from __future__ import annotations

import uuid
from typing import Any

from pocketbatch._errors import ComponentError
from pocketbatch._result import FlowResult
from pocketbatch.core import AsyncNode, AsyncParallelBatchFlow
from pocketbatch.loader._component import CallContext, Component, Subflow

__all__ = ("EvalComponent", "MapComponent", "nested_components")


def nested_components() -> dict[str, Component]:
    """The builtins that run nested flows, by path."""
    return {"/builtin/eval": EvalComponent(), "/builtin/map": MapComponent()}


def _subflow(input: Any, ctx: CallContext, path: str, keys: tuple[str, ...]) -> Subflow:
    if not isinstance(input, dict):
        raise ComponentError("INVALID_INPUT", f"{path}: input must be a mapping")
    source = next((input[k] for k in keys if k in input), None)
    if source is None:
        names = " or ".join(repr(k) for k in keys)
        raise ComponentError("INVALID_INPUT", f"{path}: {names} is required (a flow or a path)")
    if ctx.load_subflow is None:
        raise ComponentError("INVALID_INPUT", f"{path}: nested flows are not available here")
    return ctx.load_subflow(source)


class EvalComponent:
    """``/builtin/eval``: run a nested flow once.

    Input ``{flow: <flow mapping or path>, input: ...}`` (``flow_id`` is accepted
    as a path, for Stepflow files); output ``{result: <FlowResult>, run_id}``.

    Example:
        >>> from pocketbatch import load_flow
        >>> flow = load_flow('''
        ... steps:
        ...   - id: inner
        ...     component: /builtin/eval
        ...     input:
        ...       flow: {output: {n: {$input: n}}}
        ...       input: {n: {$input: n}}
        ... output: {$step: inner, path: "result.result.n"}
        ... ''')
        >>> flow.run({"n": 7}).result
        7
    """

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        sub = _subflow(input, ctx, "/builtin/eval", ("flow", "flow_id", "workflow"))
        result = await sub.run_async(
            input.get("input"), variables=ctx.variables, services=ctx.services
        )
        return {"result": result.to_dict(), "run_id": uuid.uuid4().hex}


class _RunItem(AsyncNode[dict[str, Any], Any, Any]):
    """One item of a map: runs the sub-flow on ``params["item"]``."""

    async def exec_async(self, prep_res: Any) -> Any:
        return None

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        flow: Subflow = shared["flow"]
        result = await flow.run_async(
            self.params["item"], variables=shared["variables"], services=shared["services"]
        )
        shared["results"][self.params["index"]] = result
        return None


class _MapBatch(AsyncParallelBatchFlow[dict[str, Any]]):
    """The parallel batch flow behind ``/builtin/map``."""

    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return ({"index": i, "item": item} for i, item in enumerate(shared["items"]))


class MapComponent:
    """``/builtin/map``: run a nested flow over a list of items, concurrently.

    Input ``{workflow: <flow mapping or path>, items: [...], max_concurrency?}``
    (``flow`` is accepted for ``workflow``); output ``{results: [<FlowResult>...],
    successful, failed, skipped}`` with results in item order. A failing item
    fails only its own result.

    Example:
        >>> from pocketbatch import load_flow
        >>> flow = load_flow('''
        ... steps:
        ...   - id: each
        ...     component: /builtin/map
        ...     input:
        ...       workflow: {output: {$input: x}}
        ...       items: [{x: 1}, {x: 2}]
        ...       max_concurrency: 2
        ... output: {$step: each}
        ... ''')
        >>> flow.run({}).result["results"]
        [{'outcome': 'success', 'result': 1}, {'outcome': 'success', 'result': 2}]
    """

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        sub = _subflow(input, ctx, "/builtin/map", ("workflow", "flow"))
        items = input.get("items")
        if not isinstance(items, list):
            raise ComponentError("INVALID_INPUT", "/builtin/map: 'items' must be a list")
        limit = input.get("max_concurrency")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise ComponentError(
                "INVALID_INPUT", "/builtin/map: 'max_concurrency' must be a whole number >= 1"
            )
        results: list[FlowResult | None] = [None] * len(items)
        shared = {
            "flow": sub,
            "items": items,
            "results": results,
            "variables": ctx.variables,
            "services": ctx.services,
        }
        await _MapBatch(start=_RunItem(), max_concurrency=limit, name=ctx.step_id).run_async(shared)
        done = [r for r in results if r is not None]
        return {
            "results": [r.to_dict() for r in done],
            "successful": sum(r.outcome == "success" for r in done),
            "failed": sum(r.outcome == "failed" for r in done),
            "skipped": sum(r.outcome == "skipped" for r in done),
        }
