"""One run's state: :class:`RunState`, the shared store a loaded flow's graph runs on.

Each run gets its own :class:`RunState` (input, variables, step outputs, running
steps), so one loaded flow can serve many inputs at once. In a data-flow file,
:meth:`RunState.evaluate` runs the steps an expression needs the first time it
needs them. What a run needs from its flow is the :class:`CompiledFlow` protocol
(a :class:`~pocketbatch.LoadedFlow`); the step nodes are in
:mod:`pocketbatch.loader._nodes`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pocketbatch._result import FlowError
from pocketbatch.loader._cache import StepCache
from pocketbatch.loader._component import CallContext
from pocketbatch.loader._expr import Expr, NeedStep, StepSkipped
from pocketbatch.loader._spec import FlowSpec

if TYPE_CHECKING:
    from pocketbatch.loader._services import RunServices

__all__ = ("CompiledFlow", "RunState", "StepFailed", "StepRunner")


class StepFailed(Exception):
    """A step failed; carries the error the flow fails with."""

    def __init__(self, step: str, error: FlowError) -> None:
        self.step = step
        self.error = error
        super().__init__(f"step {step!r} failed: [{error.code}] {error.message}")


_SKIP: Any = object()  # what a skipped step's prep hands to exec and post


class StepRunner(Protocol):
    """A step's node as a run starts it (a :class:`~pocketbatch.loader._nodes.StepNode`
    or :class:`~pocketbatch.loader._nodes.ForEachStepNode`)."""

    def _pb_copy(self) -> StepRunner: ...

    async def _run_async(self, shared: RunState) -> Any: ...


class CompiledFlow(Protocol):
    """What a run and its step nodes need from their flow (a :class:`~pocketbatch.LoadedFlow`):
    its spec, its step nodes, variable defaults, and the context for a component call."""

    @property
    def spec(self) -> FlowSpec: ...

    @property
    def _nodes(self) -> Mapping[str, StepRunner]: ...

    def _variable_fallback(self, name: str) -> Any: ...

    def _call_context(
        self, step: str, variables: Mapping[str, Any], services: RunServices | None = None
    ) -> CallContext: ...

    def _step_cache(self) -> StepCache | None: ...


class RunState:
    """The shared store of one run: input, variables, step results, running steps."""

    def __init__(
        self,
        flow: CompiledFlow,
        input: Any,
        variables: Mapping[str, Any],
        services: RunServices | None = None,
    ) -> None:
        self.flow = flow
        self.input = input
        self.variables = variables
        self.services = services  # the run's HTTP clients, limiters and usage
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
