"""Compile a flow spec into core graphs and run it: ``load_flow``, ``LoadedFlow``, ``FlowResult``.

Every step becomes a core node (:class:`StepNode`, an ``AsyncNode``; a
``for_each`` step an ``AsyncParallelBatchNode``), and every flow an
:class:`~pocketbatch.AsyncFlow`:

* **data-flow files** (no ``next`` anywhere, Stepflow's model): the flow's start
  node is a :class:`DataflowNode` that evaluates the ``output`` expression and
  runs each step the first time a value it produces is needed, so independent
  steps run concurrently and unneeded ones never run;
* **control-flow files** (``next`` on some step, PocketFlow's model): steps are
  wired by their ``next`` transitions, run from ``start:`` (or the first step),
  and each step's ``action:`` expression picks the transition; loops are allowed.

Each run gets its own :class:`RunState` (the flow's shared store), so one loaded
flow can serve many inputs at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketbatch._errors import ComponentError, LoadError, UnknownActionError
from pocketbatch._result import FlowError, FlowResult
from pocketbatch.core import AsyncFlow, AsyncNode, AsyncParallelBatchNode, ItemError, Observer
from pocketbatch.loader._component import CallContext, Component, LoaderOptions
from pocketbatch.loader._expr import EvalError, Expr, NeedStep, StepSkipped, truthy
from pocketbatch.loader._source import (
    MAX_DEPTH,
    DocPath,
    Document,
    nesting_depth,
    parse_document,
    read_document,
)
from pocketbatch.loader._spec import FlowSpec, StepSpec, TestCase, parse_flow

if TYPE_CHECKING:
    from pocketbatch.loader._testing import CaseOutcome

__all__ = ("MAX_NESTED_FLOWS", "FlowError", "FlowResult", "LoadedFlow", "load_flow")

MAX_NESTED_FLOWS = 16
"""How many flows deep /builtin/eval and /builtin/map may nest (a flow file that
names itself as its own nested flow stops here, with a LoadError)."""


class StepFailed(Exception):
    """A step failed; carries the error the flow fails with."""

    def __init__(self, step: str, error: FlowError) -> None:
        self.step = step
        self.error = error
        super().__init__(f"step {step!r} failed: [{error.code}] {error.message}")


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


_SKIP: Any = object()  # what a skipped step's prep hands to exec and post


def _failure_of(step: str, exc: BaseException) -> StepFailed:
    """The :class:`StepFailed` for an exception raised while running ``step``."""
    if isinstance(exc, _ComponentFailed):
        exc = exc.cause
    if isinstance(exc, StepFailed):
        return exc
    if isinstance(exc, ComponentError):
        return StepFailed(step, FlowError(exc.code, exc.message, exc.data))
    if isinstance(exc, EvalError):
        return StepFailed(step, FlowError(exc.code, f'step "{step}": {exc.message}'))
    if isinstance(exc, StepSkipped):
        message = f'step "{step}": an item needs step "{exc.step}", which was skipped'
        return StepFailed(step, FlowError("EXPRESSION_FAILURE", message))
    if isinstance(exc, TimeoutError):
        return StepFailed(step, FlowError("TIMEOUT", f'step "{step}" timed out: {exc}'))
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return StepFailed(step, FlowError("COMPONENT_FAILED", f'step "{step}" failed: {detail}'))


# -- one run's state ------------------------------------------------------------------------


class RunState:
    """The shared store of one run: input, variables, step results, running steps."""

    def __init__(self, flow: LoadedFlow, input: Any, variables: Mapping[str, Any]) -> None:
        self.flow = flow
        self.input = input
        self.variables = variables
        self.item: Any = None
        self.outputs: dict[str, Any] = {}
        self.status: dict[str, str] = {}
        self.failures: dict[str, StepFailed] = {}
        self.tasks: dict[str, asyncio.Future[None]] = {}
        self.result: Any = None
        self.steps_run = 0

    # Scope protocol -----------------------------------------------------------
    def step_output(self, step: str) -> Any:
        status = self.status.get(step)
        if status in ("completed", "defaulted"):
            return self.outputs[step]
        if status == "skipped":
            raise StepSkipped(step)
        if status == "failed":
            raise self.failures[step]
        if self.flow.spec.control_flow:
            raise StepSkipped(step)  # not run on this path: like a skipped step
        raise NeedStep(step)

    def undeclared_variable(self, name: str) -> Any:
        return self.flow._variable_fallback(name)

    # evaluation -------------------------------------------------------------------
    async def evaluate(self, expr: Expr, item: Any = _SKIP) -> Any:
        """Evaluate ``expr``, running the steps it needs (data-flow files only).

        Steps it needs in any case (its *eager* steps) start together, so
        independent steps run concurrently; a lone one runs right here, in this
        task. A step needed only on the branch taken starts when reached.
        """
        scope: Any = self if item is _SKIP else _ItemScope(self, item)
        if expr.constant:
            return expr.eval(scope)
        if expr.eager_steps and not self.flow.spec.control_flow:
            pending = [s for s in expr.eager_steps if s not in self.status]
            if len(pending) == 1:
                await self.need(pending[0])
            elif pending:
                # Every eager step is needed, so the first failure fails the whole
                # expression: do not wait for slower siblings (settle() stops them).
                started = [self.demand(s) for s in pending]
                await asyncio.wait(started, return_when=asyncio.FIRST_EXCEPTION)
                for step in expr.eager_steps:
                    if self.status.get(step) == "failed":
                        raise self.failures[step]
        while True:
            try:
                return expr.eval(scope)
            except NeedStep as need:
                await self.need(need.step)

    async def need(self, step: str) -> None:
        """Make sure ``step`` has run: wait for it if it has started, else run it here.

        Run here, it is still registered (as a future) so that other expressions
        needing it wait for this run instead of starting another. Its outcome is
        read from :attr:`status`.
        """
        running = self.tasks.get(step)
        if running is not None:
            await asyncio.wait([running])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tasks[step] = future
        node = self.flow._nodes[step]._pb_copy()
        try:
            await node._run_async(self)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # recorded in status/failures; waiters see it there
            future.set_exception(exc)
        else:
            future.set_result(None)

    def demand(self, step: str) -> asyncio.Future[None]:
        """The task (or future) running ``step`` in this run, started on first demand."""
        task = self.tasks.get(step)
        if task is None:
            node = self.flow._nodes[step]._pb_copy()
            task = asyncio.ensure_future(node._run_async(self))
            self.tasks[step] = task
        return task

    async def settle(self) -> None:
        """Cancel steps nobody waits for any more and collect every task's outcome."""
        unfinished = [t for t in self.tasks.values() if not t.done()]
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)
        for task in self.tasks.values():  # mark failures as seen: no "never retrieved"
            if not task.cancelled():
                task.exception()


class _ItemScope:
    """A run's scope with ``$item`` bound to one for_each element."""

    __slots__ = ("item", "state")

    def __init__(self, state: RunState, item: Any) -> None:
        self.state = state
        self.item = item

    @property
    def input(self) -> Any:
        return self.state.input

    @property
    def variables(self) -> Mapping[str, Any]:
        return self.state.variables

    def step_output(self, step: str) -> Any:
        return self.state.step_output(step)

    def undeclared_variable(self, name: str) -> Any:
        return self.state.undeclared_variable(name)


# -- step nodes -------------------------------------------------------------------------------


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
    flow: LoadedFlow
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

    def _bind(self, spec: StepSpec, component: Component, flow: LoadedFlow) -> None:
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
        context = self.flow._call_context(self.spec.id, self.state.variables)
        try:
            return await self.component(value, context)
        except Exception as exc:
            raise _component_failure(exc) from exc

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
            message = f'step "{step}": action must be a string, got {type(action).__name__}'
            raise StepFailed(step, FlowError("EXPRESSION_FAILURE", message))
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
            failure = StepFailed(self.spec.id, FlowError("STEP_LIMIT", message))
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

    def __init__(self, spec: StepSpec, component: Component, flow: LoadedFlow) -> None:
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

    def __init__(self, spec: StepSpec, component: Component, flow: LoadedFlow) -> None:
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
            message = (
                f'step "{self.spec.id}": for_each must give a list, got {type(items).__name__}'
            )
            raise StepFailed(self.spec.id, FlowError("EXPRESSION_FAILURE", message))
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

    def __init__(self, flow: LoadedFlow) -> None:
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


# -- the loaded flow ----------------------------------------------------------------------------


class LoadedFlow:
    """A flow file compiled into a reusable core graph.

    Safe to run concurrently for many inputs: each run has its own store.

    Attributes:
        spec: the parsed flow file.
        graph: the compiled core :class:`~pocketbatch.AsyncFlow`.
        name: the flow's ``name`` (or the file name).

    Example:
        >>> from pocketbatch import load_flow
        >>> flow = load_flow('''
        ... steps:
        ...   - id: greet
        ...     component: /builtin/create_messages
        ...     input: {user_prompt: {$template: "Hello {input.name}"}}
        ... output: {$step: greet, path: "messages[0].content"}
        ... ''')
        >>> flow.run({"name": "Ada"}).to_dict()
        {'outcome': 'success', 'result': 'Hello Ada'}
    """

    def __init__(
        self,
        spec: FlowSpec,
        resolve: Callable[[str], Component],
        *,
        options: LoaderOptions,
        variables: Mapping[str, Any] | None = None,
        subflow_loader: Callable[[Any, LoadedFlow, DocPath | None], LoadedFlow] | None = None,
    ) -> None:
        self.spec = spec
        self.options = options
        self.variables = dict(variables or {})
        self.name = spec.name or (spec.doc.path.name if spec.doc.path else "flow")
        self.flow_dir = spec.doc.path.parent if spec.doc.path else None
        self._subflow_loader = subflow_loader
        self._resolve = resolve
        self.recipe: FlowRecipe | None = None  # set by load_flow
        self._subflows: dict[str, LoadedFlow] = {}
        self._nesting = 0  # flows around this one (nested flows: 1 and more)
        self._validator: Any = None
        self._variables_validator: Any = None
        self._nodes: dict[str, StepNode | ForEachStepNode] = {}
        for step in spec.steps:
            try:
                component = resolve(step.component)
            except _UnknownComponentError as exc:
                raise spec.doc.error(
                    exc.message, (*step.where, "component"), step=step.id
                ) from None
            node_cls = ForEachStepNode if step.for_each is not None else StepNode
            self._nodes[step.id] = node_cls(step, component, self)
        self.graph: AsyncFlow[RunState] = self._build_graph()

    def _build_graph(self) -> AsyncFlow[RunState]:
        if not self.spec.control_flow:
            return AsyncFlow(start=DataflowNode(self), name=self.name, strict=True)
        for step in self.spec.steps:
            for action, target in (step.next or {}).items():
                self._nodes[step.id].next(self._nodes[target], action)
        start = self.spec.start or (self.spec.steps[0].id if self.spec.steps else None)
        assert start is not None  # control flow implies a step with next
        return AsyncFlow(start=self._nodes[start], name=self.name, strict=True)

    # -- running -------------------------------------------------------------------------

    def run(self, input: Any, *, variables: Mapping[str, Any] | None = None) -> FlowResult:
        """Run the flow once on ``input`` (blocking) and return its :class:`FlowResult`.

        Raises:
            RuntimeError: called from inside a running event loop; use
                ``await run_async(...)`` there.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run_async(input, variables=variables))
        raise RuntimeError("LoadedFlow.run() cannot run inside an event loop; await run_async()")

    async def run_async(
        self,
        input: Any,
        *,
        variables: Mapping[str, Any] | None = None,
        observer: Observer | None = None,
    ) -> FlowResult:
        """Run the flow once on ``input`` and return its :class:`FlowResult`.

        Failures of the flow (an invalid input, a failing step, a bad expression)
        are returned as ``outcome: failed``, never raised.

        Args:
            input: the flow's input (validated against its input schema).
            variables: run variables, over those given to :func:`load_flow`.
            observer: receives core events for the steps (see :class:`~pocketbatch.Event`).
        """
        problem = self.check_input(input)
        if problem is not None:
            return FlowResult("failed", error=problem)
        merged = {**self.variables, **(variables or {})}
        problem = self.check_variables(merged)
        if problem is not None:
            return FlowResult("failed", error=problem)
        state = RunState(self, input, merged)
        try:
            await self.graph.run_async(state, observer=observer)
            if self.spec.control_flow:
                state.result = await state.evaluate(self.spec.output)
        except StepFailed as exc:
            return FlowResult("failed", error=exc.error, steps=dict(state.status))
        except StepSkipped:
            return FlowResult("skipped", steps=dict(state.status))
        except EvalError as exc:
            error = FlowError(exc.code, exc.message)
            return FlowResult("failed", error=error, steps=dict(state.status))
        except UnknownActionError as exc:
            error = FlowError("UNKNOWN_ACTION", str(exc))
            return FlowResult("failed", error=error, steps=dict(state.status))
        return FlowResult("success", state.result, steps=dict(state.status))

    def check_input(self, input: Any) -> FlowError | None:
        """The ``INVALID_INPUT`` error for ``input``, or ``None`` when it fits the schema.

        Example:
            >>> from pocketbatch import load_flow
            >>> flow = load_flow("input_schema: {type: object, required: [name]}\\noutput: 1")
            >>> flow.check_input({}).message
            "input $: 'name' is a required property"
        """
        if nesting_depth(input, MAX_DEPTH) > MAX_DEPTH:
            return FlowError(
                "INVALID_INPUT",
                f"the input nests more than {MAX_DEPTH} levels of objects and arrays "
                f"(the limit is {MAX_DEPTH})",
            )
        schema = self.spec.input_schema
        if schema is None:
            return None
        if self._validator is None:
            from jsonschema import Draft202012Validator

            self._validator = Draft202012Validator(schema)
        try:
            errors = list(self._validator.iter_errors(input))
        except RecursionError:  # a recursive schema may descend many frames per level
            return FlowError(
                "INVALID_INPUT", "the input is nested too deeply to check against the input schema"
            )
        if not errors:
            return None
        from jsonschema.exceptions import best_match

        error = best_match(errors)
        return FlowError("INVALID_INPUT", f"input {error.json_path}: {error.message}")

    def check_variables(self, variables: Mapping[str, Any]) -> FlowError | None:
        """The ``INVALID_INPUT`` error for run variables that do not fit the flow's
        ``variables_schema`` (variables nobody supplied are not checked), or ``None``."""
        schema = self.spec.variables_schema
        if not isinstance(schema, dict):
            return None
        if self._variables_validator is None:
            from jsonschema import Draft202012Validator

            relaxed = {k: v for k, v in schema.items() if k != "required"}
            self._variables_validator = Draft202012Validator(relaxed)
        errors = list(self._variables_validator.iter_errors(dict(variables)))
        if not errors:
            return None
        from jsonschema.exceptions import best_match

        error = best_match(errors)
        path = error.json_path.replace("$", "variables", 1)
        return FlowError("INVALID_INPUT", f"{path}: {error.message}")

    # -- helpers for steps and builtins ----------------------------------------------------

    def _call_context(self, step: str, variables: Mapping[str, Any]) -> CallContext:
        return CallContext(
            step_id=step,
            flow_dir=self.flow_dir,
            variables=variables,
            options=self.options,
            load_subflow=self.load_subflow,
        )

    def load_subflow(self, source: Any, where: DocPath | None = None) -> LoadedFlow:
        """Compile a nested flow (a mapping, or a path relative to this flow's folder)
        with this flow's components and options; compiled once per distinct source.
        A path is confined as ``/builtin/load_file``'s are (see
        :func:`~pocketbatch.loader._builtins.confined_path`), before it is read.

        Raises:
            ComponentError: ``INVALID_INPUT`` when the nested flow does not load,
                ``PERMISSION_DENIED`` for a path outside the root (at load time, for
                a sub-flow written in the file, a :class:`LoadError` with its line
                and column instead).
        """
        if where is None and nesting_depth(source, MAX_DEPTH) > MAX_DEPTH:
            # Made while running (the flow reader checks what it reads itself).
            raise ComponentError(
                "INVALID_INPUT", f"nested flow: the flow nests more than {MAX_DEPTH} levels deep"
            )
        key = source if isinstance(source, str) else json.dumps(source, sort_keys=True, default=str)
        found = self._subflows.get(key)
        if found is None:
            if self._subflow_loader is None:
                raise ComponentError("INVALID_INPUT", "nested flows are not available here")
            try:
                found = self._subflow_loader(source, self, where)
            except LoadError as exc:
                if where is not None:
                    raise
                raise ComponentError("INVALID_INPUT", f"nested flow: {exc}") from None
            self._subflows[key] = found
        return found

    def _load_literal_subflows(self) -> None:
        """Compile the sub-flows written into /builtin/map and /builtin/eval steps now,
        so their mistakes are load errors at their own line and column."""
        from pocketbatch.loader._expr import Const, Obj
        from pocketbatch.loader._spec import LITERAL_INPUT_KEYS

        for step in self.spec.steps:
            literal_keys = LITERAL_INPUT_KEYS.get(step.component, ())
            if not literal_keys or not isinstance(step.input, Obj):
                continue
            for key, expr in step.input.items:
                if key not in literal_keys or not isinstance(expr, Const):
                    continue
                if isinstance(expr.value, dict | str):
                    self.load_subflow(expr.value, (*step.where, "input", key))

    def _variable_fallback(self, name: str) -> Any:
        schema = self.spec.variables_schema or {}
        declared = schema.get("properties", {}).get(name) if isinstance(schema, dict) else None
        if isinstance(declared, dict):
            if "default" in declared:
                return declared["default"]
            kind = declared.get("type")
            if kind == "string":
                return ""
            if kind in ("integer", "number"):
                return 0
            if kind == "boolean":
                return False
        raise EvalError(f"Undefined variable: {name}")

    # -- tests and pictures ------------------------------------------------------------------

    @property
    def tests(self) -> tuple[TestCase, ...]:
        """The file's ``test.cases``."""
        return self.spec.tests

    def run_tests(self) -> list[CaseOutcome]:
        """Run the file's ``test.cases`` (as ``pocketbatch test`` does); blocking.

        Each :class:`~pocketbatch.loader._testing.CaseOutcome` has ``name``,
        ``passed``, ``result`` and ``problems``.
        """
        from pocketbatch.loader._testing import run_cases

        return asyncio.run(run_cases(self))

    async def run_tests_async(self, *, max_concurrency: int = 10) -> list[CaseOutcome]:
        """Run the file's ``test.cases`` concurrently; outcomes in case order."""
        from pocketbatch.loader._testing import run_cases

        return await run_cases(self, max_concurrency=max_concurrency)

    def to_mermaid(self) -> str:
        """A Mermaid flowchart: the ``next`` graph for control-flow files, the data
        dependencies (input → steps → output) for data-flow files."""
        if self.spec.control_flow:
            return self.graph.to_mermaid()
        return _dataflow_mermaid(self.spec)

    def __repr__(self) -> str:
        mode = "control-flow" if self.spec.control_flow else "data-flow"
        return f"<LoadedFlow {self.name!r}: {len(self.spec.steps)} steps, {mode}>"


def _dataflow_mermaid(spec: FlowSpec) -> str:
    def label(text: str) -> str:
        return text.replace('"', "#quot;")

    lines = ["flowchart TD", '    input(["input"])']
    for step in spec.steps:
        kind = " (for_each)" if step.for_each is not None else ""
        lines.append(f'    {step.id}["{label(step.id)}<br/>{label(step.component)}{kind}"]')
    lines.append('    output(["output"])')
    edges: list[str] = []

    def reads_input(expr: Expr | None) -> bool:
        from pocketbatch.loader._expr import InputRef

        return expr is not None and _any_node(expr, (InputRef,))

    for step in spec.steps:
        if reads_input(step.input) or reads_input(step.skip) or reads_input(step.for_each):
            edges.append(f"    input --> {step.id}")
        for dep in sorted(step.deps):
            edges.append(f"    {dep} --> {step.id}")
    for dep in sorted(spec.output.all_steps):
        edges.append(f"    {dep} --> output")
    if reads_input(spec.output):
        edges.append("    input --> output")
    return "\n".join(lines + edges)


def _any_node(expr: Any, kinds: tuple[type, ...]) -> bool:
    return any(isinstance(node, kinds) for node in expr.walk())


class _UnknownComponentError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


# -- loading --------------------------------------------------------------------------------------


def load_flow(
    path_or_text: str | Path,
    *,
    registry: Any = None,
    config: str | Path | None = None,
    variables: Mapping[str, Any] | None = None,
    allow_python_imports: bool = True,
    options: LoaderOptions | None = None,
) -> LoadedFlow:
    """Load a flow file (YAML or JSON; a path, or the text itself) into a :class:`LoadedFlow`.

    Components are found through, in order: ``registry`` (a
    :class:`~pocketbatch.ComponentRegistry`); the config file (``config``, else a
    ``pocketbatch.yaml`` or Stepflow ``stepflow-config.yml`` beside the flow): its
    mocks and routes; the builtins (``/builtin/...``, ``/http/request``); and
    ``/python/<module>.<function>`` imports when ``allow_python_imports``.

    Args:
        path_or_text: a file path, or flow text (anything containing a newline or
            starting with ``{`` is taken as text).
        registry: components registered in Python.
        config: a ``pocketbatch.yaml`` or ``stepflow-config.yml`` path.
        variables: default run variables (``$variable`` references).
        allow_python_imports: whether ``/python/...`` components may import code.
        options: settings that override what the config file and the flow's folder
            say about imports and ``load_file`` (a server passes its own). With
            ``options``, only ``config`` is read: the flow's own ``test.config`` /
            ``test.config_file`` and files beside it are ignored, so a submitted flow
            cannot choose its own routes.

    Raises:
        LoadError: the file is invalid; the message leads with ``file:line:column``.

    Example:
        >>> from pocketbatch import ComponentRegistry, load_flow
        >>> components = ComponentRegistry()
        >>> @components.component("/text/shout")
        ... def shout(data):
        ...     return {"text": data["text"].upper()}
        >>> flow = load_flow('''
        ... steps:
        ...   - id: shout
        ...     component: /text/shout
        ...     input: {text: {$input: text}}
        ... output: {$step: shout, path: text}
        ... ''', registry=components)
        >>> flow.run({"text": "hi"}).result
        'HI'
    """
    doc = _read(path_or_text)
    flow = _load(doc, registry, config, variables, allow_python_imports, options=options)
    source = str(doc.path) if doc.path is not None else path_or_text
    flow.recipe = FlowRecipe(
        str(source),
        None if config is None else str(config),
        dict(variables or {}),
        allow_python_imports,
        registry,
        options,
    )
    return flow


@dataclass(frozen=True)
class FlowRecipe:
    """How to load a flow again, e.g. in a worker process: ``load_flow``'s arguments.

    Example:
        >>> from pocketbatch import load_flow
        >>> recipe = load_flow("output: 1\\n").recipe
        >>> recipe.load().run({}).result
        1
    """

    source: str
    config: str | None
    variables: Mapping[str, Any]
    allow_python_imports: bool
    registry: Any = None
    options: LoaderOptions | None = None

    def load(self) -> LoadedFlow:
        """Load the flow from this recipe."""
        return load_flow(
            self.source
            if "\n" in self.source or self.source.lstrip().startswith("{")
            else Path(self.source),
            registry=self.registry,
            config=self.config,
            variables=self.variables,
            allow_python_imports=self.allow_python_imports,
            options=self.options,
        )


def _read(path_or_text: str | Path) -> Document:
    if isinstance(path_or_text, Path):
        return read_document(path_or_text)
    text = path_or_text
    if "\n" in text or text.lstrip().startswith("{"):
        return parse_document(text)
    return read_document(text)


def _load(
    doc: Document,
    registry: Any,
    config: str | Path | None,
    variables: Mapping[str, Any] | None,
    allow_python_imports: bool,
    *,
    parent: LoadedFlow | None = None,
    options: LoaderOptions | None = None,
) -> LoadedFlow:
    from pocketbatch.loader import _registry
    from pocketbatch.loader._builtins import builtin_components
    from pocketbatch.loader._nested import nested_components

    spec = parse_flow(doc)
    flow_dir = doc.path.parent if doc.path else None
    resolve: Callable[[str], Component]
    if parent is not None:
        resolve = parent._resolve
        options = parent.options
        assert options is not None
    else:
        if options is not None:
            # The caller (a server) decides: a submitted flow's own test.config or
            # test.config_file must never choose which code it may run.
            from pocketbatch.loader import _registry as registry_module

            parsed = registry_module.load_config(config) if config is not None else None
        else:
            parsed = _find_config(spec, doc, config, flow_dir)
        options = options or _options(parsed, flow_dir, allow_python_imports)
        builtins: dict[str, Component] = {**builtin_components(), **nested_components()}
        resolver = _registry.Resolver(registry, parsed, options, builtins, base_dir=flow_dir)

        def resolve(path: str) -> Component:
            try:
                component: Component = resolver.resolve(path)
            except _registry.UnknownComponent as exc:
                raise _UnknownComponentError(exc.message) from None
            return component

    def subflow(source: Any, owner: LoadedFlow, where: DocPath | None) -> LoadedFlow:
        if owner._nesting >= MAX_NESTED_FLOWS:
            raise doc.error(
                f"nested flows go more than {MAX_NESTED_FLOWS} deep (does a flow run itself?)",
                where or (),
            )
        if isinstance(source, str):
            # Confined like /builtin/load_file, and checked before the file is read.
            from pocketbatch.loader._builtins import confined_path

            try:
                file = confined_path(
                    source, owner.options, owner.flow_dir, what="nested flow", base=owner.flow_dir
                )
            except ComponentError as exc:
                if where is None:
                    raise
                raise doc.error(exc.message, where) from None
            sub_doc = read_document(file)
        elif isinstance(source, dict):
            # Written in this file: keep its positions, so errors point into the file.
            inside = len(where) if where is not None else None
            positions = (
                {p[inside:]: pos for p, pos in doc.positions.items() if p[:inside] == where}
                if where is not None and inside is not None
                else {}
            )
            name = doc.name if where is not None else f"{doc.name} (nested flow)"
            sub_doc = Document(data=source, name=name, path=doc.path, positions=positions)
        else:
            raise ComponentError(
                "INVALID_INPUT",
                f"a nested flow is a mapping or a path, got {type(source).__name__}",
            )
        return _load(sub_doc, registry, None, owner.variables, allow_python_imports, parent=owner)

    flow = LoadedFlow(spec, resolve, options=options, variables=variables, subflow_loader=subflow)
    flow._nesting = parent._nesting + 1 if parent is not None else 0
    flow._load_literal_subflows()
    return flow


def _find_config(
    spec: FlowSpec, doc: Document, config: str | Path | None, flow_dir: Path | None
) -> Any:
    """The component config, looked up as Stepflow does: ``config`` (``--config``),
    else the flow's ``test.config_file``, else its inline ``test.config``, else a
    ``pocketbatch.yaml`` / ``stepflow-config.yml`` beside the flow."""
    from pocketbatch.loader import _registry

    if config is not None:
        return _registry.load_config(config)
    if spec.test_config_file:
        return _registry.load_config((flow_dir or Path.cwd()) / spec.test_config_file)
    if spec.test_config is not None:
        at = ("test", "config")
        inline = Document(
            data=spec.test_config,
            name=doc.name,
            path=doc.path,
            positions={p[2:]: pos for p, pos in doc.positions.items() if p[:2] == at},
        )
        return _registry.config_from_document(inline, doc.path or Path.cwd() / "<flow>")
    found = _registry.find_config(flow_dir)
    return _registry.load_config(found) if found is not None else None


def _options(parsed: Any, flow_dir: Path | None, allow_python_imports: bool) -> LoaderOptions:
    allow = allow_python_imports
    root = None
    anywhere = False
    if parsed is not None:
        if parsed.python_imports is False:
            allow = False
        root = parsed.load_file_root
        anywhere = bool(parsed.load_file_anywhere)
    return LoaderOptions(
        allow_python_imports=allow,
        load_file_root=root or flow_dir,
        load_file_anywhere=anywhere,
    )
