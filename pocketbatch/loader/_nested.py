"""Builtins that run nested flows: ``/builtin/eval`` (once), ``/builtin/map`` (per
item) and ``/builtin/iterate`` (until the flow answers ``{result}``).

``/builtin/map`` is an :class:`~pocketbatch.AsyncParallelBatchFlow` over the
sub-flow: one sub-flow run per item, ``max_concurrency`` at a time (unbounded by
default, as in Stepflow), each item's failure isolated in its own result.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pocketbatch._errors import ComponentError
from pocketbatch._result import FlowResult
from pocketbatch.core import AsyncNode, AsyncParallelBatchFlow
from pocketbatch.loader._builtin_blobs import blob_store
from pocketbatch.loader._component import CallContext, Component, Subflow

__all__ = ("EvalComponent", "IterateComponent", "MapComponent", "nested_components")

_BLOB_ID = re.compile(r"[0-9a-f]{64}")


def nested_components() -> dict[str, Component]:
    """The builtins that run nested flows, by path.

    Example:
        >>> sorted(nested_components())
        ['/builtin/eval', '/builtin/iterate', '/builtin/map']
    """
    return {
        "/builtin/eval": EvalComponent(),
        "/builtin/map": MapComponent(),
        "/builtin/iterate": IterateComponent(),
    }


async def _subflow(input: Any, ctx: CallContext, path: str, keys: tuple[str, ...]) -> Subflow:
    """The nested flow named by the first of ``keys`` in ``input``: a mapping, a path
    relative to the flow file, or (for ``flow_id``) the id of a stored flow blob."""
    if not isinstance(input, dict):
        raise ComponentError("INVALID_INPUT", f"{path}: input must be a mapping")
    key = next((k for k in keys if input.get(k) is not None), None)
    if key is None:
        names = " or ".join(repr(k) for k in keys)
        raise ComponentError("INVALID_INPUT", f"{path}: {names} is required (a flow or a path)")
    source = input[key]
    if ctx.load_subflow is None:
        raise ComponentError("INVALID_INPUT", f"{path}: nested flows are not available here")
    if key == "flow_id" and isinstance(source, str) and _BLOB_ID.fullmatch(source):
        # Stepflow's flow_id: a blob put with blob_type "flow". (A path still works.)
        source, _kind = await blob_store(ctx).get(source)
        if not isinstance(source, dict):
            message = f"{path}: blob {input[key]} holds {type(source).__name__}, not a flow"
            raise ComponentError("INVALID_INPUT", message)
    return ctx.load_subflow(source)


class EvalComponent:
    """``/builtin/eval``: run a nested flow once.

    Input ``{flow_id: <blob id>, input: ...}`` as in Stepflow, where the id is one
    ``/builtin/put_blob`` answered for a flow; ``flow`` (a flow mapping, or a path
    relative to the flow file) works too, and so does a path given as ``flow_id``.
    Output ``{result: <FlowResult>, run_id}``.

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
        sub = await _subflow(input, ctx, "/builtin/eval", ("flow", "flow_id", "workflow"))
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
        sub = await _subflow(input, ctx, "/builtin/map", ("workflow", "flow"))
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


class IterateComponent:
    """``/builtin/iterate``: run a nested flow again and again on its own answer.

    Input ``{flow: <flow mapping or path>, initial_input, max_iterations?: 1000}``
    (``flow_id``, a stored flow blob, works too). Each run's result must be
    ``{result: v}`` (stop: the output is ``{result: v, iterations, terminated:
    false}``) or ``{next: v}`` (run again on ``v``). After ``max_iterations`` runs the
    output is ``{result: <the last next value>, iterations, terminated: true}``. A
    failing run fails the step with that run's error, as in Stepflow.

    Example:
        >>> from pocketbatch import load_flow
        >>> flow = load_flow('''
        ... steps:
        ...   - id: loop
        ...     component: /builtin/iterate
        ...     input:
        ...       flow:
        ...         output:
        ...           $if: {$input: done}
        ...           then: {result: {$input: n}}
        ...           else: {next: {n: {$input: n}, done: true}}
        ...       initial_input: {n: 3, done: false}
        ... output: {$step: loop}
        ... ''')
        >>> flow.run({}).result
        {'result': 3, 'iterations': 2, 'terminated': False}
    """

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        sub = await _subflow(input, ctx, "/builtin/iterate", ("flow", "flow_id"))
        if "initial_input" not in input:
            raise ComponentError("INVALID_INPUT", "/builtin/iterate: 'initial_input' is required")
        limit = input.get("max_iterations", 1000)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ComponentError(
                "INVALID_INPUT", "/builtin/iterate: 'max_iterations' must be a whole number >= 0"
            )
        current = input["initial_input"]
        for iteration in range(1, limit + 1):
            run = await sub.run_async(current, variables=ctx.variables, services=ctx.services)
            if run.outcome != "success":
                error = run.error
                if error is None:  # skipped
                    raise ComponentError("COMPONENT_FAILED", "the iterated flow was skipped")
                raise ComponentError(error.code, error.message, error.data)
            value = run.result
            if isinstance(value, dict) and "result" in value:
                return {"result": value["result"], "iterations": iteration, "terminated": False}
            if isinstance(value, dict) and "next" in value:
                current = value["next"]
                continue
            raise ComponentError(
                "INVALID_INPUT", "Workflow result must contain either 'result' or 'next' field"
            )
        return {"result": current, "iterations": limit, "terminated": True}
