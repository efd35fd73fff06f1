"""Step nodes: each flow-file step as a core node, and the node that runs a data-flow file.

Every step becomes a core node (:class:`StepNode`, an
:class:`~pocketbatch.AsyncNode`; a ``for_each`` step a :class:`ForEachStepNode`, an
:class:`~pocketbatch.AsyncParallelBatchNode`). A data-flow file's graph starts at
a :class:`DataflowNode`, which evaluates the ``output`` expression and so runs the
steps it needs. Failures, retries (``on_error``) and skips are decided here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pocketbatch._errors import ComponentError
from pocketbatch._result import FlowError
from pocketbatch.core import AsyncNode, AsyncParallelBatchNode, ItemError
from pocketbatch.loader._cache import StepCache, cache_key
from pocketbatch.loader._component import CallContext, Component, PluginFailure
from pocketbatch.loader._expr import EvalError, StepSkipped, truthy
from pocketbatch.loader._spec import StepSpec
from pocketbatch.loader._state import _SKIP, CompiledFlow, RunState, StepFailed

__all__ = ("DataflowNode", "ForEachStepNode", "StepNode")


class _ComponentFailed(Exception):
    """A component raised; ``on_error: use_default`` applies."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(str(cause))


class _Retryable(_ComponentFailed):
    """A component failure that another attempt may cure; ``on_error: retry`` applies."""


# Error codes worth another attempt (as Stepflow retries COMPONENT_FAILED and
# RESOURCE_UNAVAILABLE; our builtins add TIMEOUT and UNREACHABLE). Integer codes are
# Stepflow's enum numbers for the same.
_RETRYABLE_CODES = frozenset(
    {"COMPONENT_FAILED", "RESOURCE_UNAVAILABLE", "TIMEOUT", "UNREACHABLE", 1, 3, 5, 7}
)


def _component_failure(exc: Exception) -> _ComponentFailed:
    if isinstance(exc, ComponentError) and exc.code not in _RETRYABLE_CODES:
        return _ComponentFailed(exc)
    return _Retryable(exc)


def _failure_of(step: str, exc: BaseException) -> StepFailed:
    """The :class:`StepFailed` for an exception raised while running ``step``.

    The error has Stepflow's shape for the same failure: a component's own
    ``ComponentError`` unchanged; a plugin's failure as ``UNREACHABLE`` with
    ``step "<id>" failed`` and Stepflow's error stack as ``data``; any other
    exception's own message (no prefix). The step's id is in ``data["step"]`` of the
    errors pocketbatch makes itself, never in the message.
    """
    if isinstance(exc, _ComponentFailed):
        exc = exc.cause
    if isinstance(exc, StepFailed):
        return exc
    if isinstance(exc, ComponentError):
        return StepFailed(step, FlowError(exc.code, exc.message, exc.data))
    if isinstance(exc, PluginFailure):
        return StepFailed(step, _unreachable(step, exc))
    if isinstance(exc, EvalError):
        return StepFailed(step, FlowError(exc.code, exc.message, {"step": step}))
    if isinstance(exc, StepSkipped):
        message = f'an item needs step "{exc.step}", which was skipped'
        return StepFailed(step, FlowError("EXPRESSION_FAILURE", message, {"step": step}))
    data = {"step": step, "exception_type": type(exc).__name__}
    if isinstance(exc, TimeoutError):
        return StepFailed(step, FlowError("TIMEOUT", str(exc) or "the step timed out", data))
    return StepFailed(step, FlowError("COMPONENT_FAILED", str(exc) or type(exc).__name__, data))


def _unreachable(step: str, exc: PluginFailure) -> FlowError:
    """Stepflow's error for a plugin that failed (``step_runner.rs``): the report's
    frames as ``data.stack``, outermost first."""
    headline = f'step "{step}" failed'
    stack = [
        {
            "error": headline,
            "attachments": [
                f"Component: {exc.component}",
                f"Component execution failed for step '{step}'",
                exc.detail,
            ],
        },
        {"error": exc.context},
    ]
    return FlowError("UNREACHABLE", headline, {"stack": stack, "step": step})


def _step_error(step: str, code: str, message: str) -> StepFailed:
    """A failure pocketbatch finds in a step itself (not in its component)."""
    return StepFailed(step, FlowError(code, message, {"step": step}))


class _StepBehaviour(AsyncNode[RunState, Any, Any]):
    """What every flow-file step node does, whichever core class runs its items.

    ``prep_async`` decides skip and evaluates the input; ``exec_async`` calls the
    component (retried per ``on_error: retry``); ``exec_fallback_async`` applies
    ``on_error: use_default``; ``post_async`` records the output and returns the
    action for ``next``. A failure is recorded in the run and raised as
    :class:`StepFailed`.
    """

    spec: StepSpec
    component: Component
    flow: CompiledFlow
    state: RunState | None = None
    _defaulted = False  # this run's output is on_error's default_value

    @staticmethod
    def _retry_args(spec: StepSpec) -> tuple[int, float, dict[str, Any]]:
        retry = spec.on_error.action == "retry"
        options = {
            "backoff": spec.on_error.backoff,
            "max_wait": 30.0,
            "retry_on": _Retryable,
            "name": spec.id,
        }
        return (
            spec.on_error.max_retries + 1 if retry else 1,
            spec.on_error.wait if retry else 0,
            options,
        )

    def _bind(self, spec: StepSpec, component: Component, flow: CompiledFlow) -> None:
        self.spec = spec
        self.component = component
        self.flow = flow

    async def _skipped(self, shared: RunState) -> bool:
        """Whether the step's skip condition holds (StepSkipped propagates)."""
        self.state = shared
        if self.spec.skip is None:
            return False
        return truthy(await shared.evaluate(self.spec.skip))

    async def _call(self, value: Any) -> Any:
        assert self.state is not None
        context = self.flow._call_context(self.spec.id, self.state.variables, self.state.services)
        if self.spec.on_error.action == "retry":
            context.step_retries = True
        context.attempt = self.cur_retry + 1
        cache = self.flow._step_cache() if self.spec.cache is not None else None
        key = self._cache_key(cache, value, context) if cache is not None else None
        if cache is not None and key is not None:
            found, stored = await cache.lookup_async(key)
            if found:
                if context.services is not None:
                    context.services.usage.cache_hits += 1
                return stored
        try:
            result = await self.component(value, context)
        except Exception as exc:
            raise _component_failure(exc) from exc
        if cache is not None and key is not None:
            # Stored (and committed) before the step's output is used: a crash after
            # this never pays for the answer again.
            try:
                return await cache.put_async(
                    key, result, component=self.spec.component, step=self.spec.id
                )
            except (TypeError, ValueError):  # not JSON: returned, not cached
                cache.note_unstorable()
        return result

    def _cache_key(self, cache: StepCache, value: Any, context: CallContext) -> str | None:
        """The call's cache key; ``None`` (counted) when its input is not JSON."""
        extra_of = getattr(self.component, "cache_key_extra", None)
        try:
            extra = extra_of(value, context) if extra_of is not None else None
        except ComponentError:
            return None  # a bad input: the component's call will say so
        try:
            return cache_key(self.spec.component, value, self.spec.cache or "", extra)
        except (TypeError, ValueError):
            cache.note_unstorable()
            return None

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        if isinstance(exc, _ComponentFailed) and self.spec.on_error.action == "use_default":
            return self.spec.on_error.default_value
        raise _failure_of(self.spec.id, exc) from None

    async def _finish(self, shared: RunState, output: Any) -> Any:
        """Record the step's output (or its skip) and pick the next action."""
        step = self.spec.id
        if output is _SKIP:
            shared.status[step] = "skipped"
            shared.outputs.pop(step, None)
            return "skipped" if self.spec.next and "skipped" in self.spec.next else None
        shared.outputs[step] = output
        shared.status[step] = "defaulted" if self._defaulted else "completed"
        if self.spec.action is None:
            return "default" if self.spec.next else None
        action = await shared.evaluate(self.spec.action)
        if action is not None and not isinstance(action, str):
            message = f"action must be a string, got {type(action).__name__}"
            raise _step_error(step, "EXPRESSION_FAILURE", message)
        return action

    async def _run_async(self, shared: RunState) -> Any:
        # In a next loop the step runs again: its previous output stays readable
        # (by its own input too) until this run records a new one.
        shared.steps_run += 1
        limit = self.flow.spec.max_steps
        if shared.steps_run > limit:
            message = (
                f"the flow ran {limit} steps without ending: a next loop whose action never "
                f"leaves it? (raise max_steps if it needs more)"
            )
            failure = _step_error(self.spec.id, "STEP_LIMIT", message)
            shared.status[self.spec.id] = "failed"
            shared.failures[self.spec.id] = failure
            raise failure
        try:
            return await super()._run_async(shared)
        except Exception as exc:
            failure = _failure_of(self.spec.id, exc)
            shared.status[self.spec.id] = "failed"
            shared.failures[self.spec.id] = failure
            raise failure from None


class StepNode(_StepBehaviour):
    """One flow-file step as a core :class:`~pocketbatch.AsyncNode`."""

    def __init__(self, spec: StepSpec, component: Component, flow: CompiledFlow) -> None:
        attempts, wait, options = self._retry_args(spec)
        super().__init__(attempts, wait, **options)
        self._bind(spec, component, flow)

    async def prep_async(self, shared: RunState) -> Any:
        try:
            if await self._skipped(shared):
                return _SKIP
            return await shared.evaluate(self.spec.input)
        except StepSkipped:
            return _SKIP

    async def exec_async(self, prep_res: Any) -> Any:
        return _SKIP if prep_res is _SKIP else await self._call(prep_res)

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        value = await super().exec_fallback_async(prep_res, exc)
        self._defaulted = True
        return value

    async def post_async(self, shared: RunState, prep_res: Any, exec_res: Any) -> Any:
        return await self._finish(shared, exec_res)


class ForEachStepNode(_StepBehaviour, AsyncParallelBatchNode[RunState, Any, Any]):
    """A ``for_each`` step: a core :class:`~pocketbatch.AsyncParallelBatchNode` that
    calls the component once per element, ``max_concurrency`` at a time. With
    ``on_item_error: collect`` a failed element's output is ``{"error": {code, message}}``.
    """

    def __init__(self, spec: StepSpec, component: Component, flow: CompiledFlow) -> None:
        attempts, wait, options = self._retry_args(spec)
        AsyncParallelBatchNode.__init__(
            self,
            attempts,
            wait,
            max_concurrency=spec.max_concurrency,
            on_item_error=spec.on_item_error,
            **options,
        )
        self._bind(spec, component, flow)

    async def prep_async(self, shared: RunState) -> Any:
        assert self.spec.for_each is not None
        try:
            if await self._skipped(shared):
                return _SKIP
            items = await shared.evaluate(self.spec.for_each)
        except StepSkipped:
            return _SKIP
        if not isinstance(items, list):
            message = f"for_each must give a list, got {type(items).__name__}"
            raise _step_error(self.spec.id, "EXPRESSION_FAILURE", message)
        inputs = []
        for item in items:  # inputs are evaluated up front: a bad one is not retried
            try:
                inputs.append(await shared.evaluate(self.spec.input, item))
            except (EvalError, StepSkipped) as exc:
                inputs.append(_BadItem(exc))
        return inputs

    async def _exec(self, items: Any) -> Any:
        return _SKIP if items is _SKIP else await super()._exec(items)

    async def exec_async(self, item: Any) -> Any:
        if isinstance(item, _BadItem):
            raise item.error
        return await self._call(item)

    async def post_async(self, shared: RunState, prep_res: Any, exec_res: Any) -> Any:
        if exec_res is not _SKIP:
            exec_res = [
                {"error": _failure_of(self.spec.id, r.exception).error.to_dict()}
                if isinstance(r, ItemError)
                else r
                for r in exec_res
            ]
        return await self._finish(shared, exec_res)


class _BadItem:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class DataflowNode(AsyncNode[RunState, Any, Any]):
    """Runs a data-flow file: evaluates ``output``, running the steps it needs.

    ``must_execute`` steps run even when nothing needs them; as in Stepflow, their
    failure does not fail the flow.
    """

    def __init__(self, flow: CompiledFlow) -> None:
        super().__init__(name="output")
        self.flow = flow

    async def prep_async(self, shared: RunState) -> Any:
        for step in self.flow.spec.steps:
            if step.must_execute:
                shared.demand(step.id)
        try:
            shared.result = await shared.evaluate(self.flow.spec.output)
            must = [shared.tasks[s.id] for s in self.flow.spec.steps if s.must_execute]
            if must:
                await asyncio.wait(must)
        finally:
            await shared.settle()
        return None
