"""The component contract: what a flow step calls, and what it may raise.

A *component* is anything a step's ``component:`` path resolves to. Inside the
loader every component is an object with one coroutine method::

    async def __call__(self, input: Any, ctx: CallContext) -> Any

User code does not have to look like that: plain sync or async callables
``f(input) -> output`` and node classes are wrapped by
:func:`pocketbatch.loader._adapt.adapt` into this shape.

A component signals a failure by raising. :class:`ComponentError` carries an
explicit error ``code`` and ``message`` (a mock's ``outcome: failed`` behaviour,
an HTTP error); :class:`PluginFailure` fails as a Stepflow plugin's own error does
(``UNREACHABLE``, with Stepflow's error stack as ``data``); any other exception
becomes a ``COMPONENT_FAILED`` error with the exception's own message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pocketbatch._errors import ComponentError
from pocketbatch._result import FlowResult
from pocketbatch.loader._network import NetworkPolicy

if TYPE_CHECKING:
    from pocketbatch.loader._services import RunServices

__all__ = (
    "CallContext",
    "Component",
    "ComponentError",
    "LoaderOptions",
    "PluginFailure",
    "Subflow",
    "run_each",
)


class PluginFailure(Exception):
    """The plugin serving a component failed, rather than the component's code
    (Stepflow's mock plugin with no behaviour for an input, a builtin's error).

    Stepflow reports such a failure as ``UNREACHABLE`` with the message
    ``step "<id>" failed`` and its error stack as ``data``; a step that raises
    this fails the same way (see :mod:`pocketbatch.loader._nodes`).

    Attributes:
        component: the component's id within its plugin (``/one_output``).
        detail: what went wrong (``No behavior defined for /one_output on {...}``).
        context: the plugin's error (``error executing user-defined function``).

    Example:
        >>> failure = PluginFailure("/one_output", "No behavior defined", "error executing")
        >>> str(failure)
        'No behavior defined'
    """

    def __init__(self, component: str, detail: str, context: str) -> None:
        self.component = component
        self.detail = detail
        self.context = context
        super().__init__(detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.component, self.detail, self.context), self.__dict__)


@dataclass(frozen=True)
class LoaderOptions:
    """Settings that shape how components are found and what they may touch.

    Attributes:
        allow_python_imports: whether ``/python/<module>.<function>`` paths may
            import code (the server turns this off).
        load_file_root: the directory ``/builtin/load_file`` and the sub-flow
            paths of ``/builtin/eval`` and ``/builtin/map`` are confined to
            (default: the flow file's directory; ``None`` with no flow file means
            the current directory).
        load_file_anywhere: lift the confinement entirely.
        python_modules: when set, ``/python/`` imports are limited to these modules
            (and their submodules); the server's ``--allow-module``.
        network: where ``/http/request`` and ``/builtin/openai`` may connect, and
            where the environment's API key may go (a
            :class:`~pocketbatch.loader.NetworkPolicy`); ``None``, the default, means
            anywhere (the server sets one: ``--allow-host``, ``--allow-network``).
        provider_limits: ``(base_url, requests_per_minute, tokens_per_minute)`` set
            by hand for ``/builtin/openai`` (``providers`` in ``pocketbatch.yaml``).
        check_input_schema: whether a run's input is checked against the flow's
            input schema (``INVALID_INPUT`` when it does not fit); ``False`` runs it
            unchecked, as Stepflow does (``--no-input-schema``).
    """

    allow_python_imports: bool = True
    load_file_root: Path | None = None
    load_file_anywhere: bool = False
    python_modules: frozenset[str] | None = None
    network: NetworkPolicy | None = None
    provider_limits: tuple[tuple[str, float | None, float | None], ...] = ()
    check_input_schema: bool = True


@dataclass
class CallContext:
    """What a component may know about the call it serves, and what it may do within
    the run: run a nested flow over many inputs (:meth:`evaluate_batch`, Stepflow's
    "batch within a workflow").

    A component gets it as its second argument (``def f(input, ctx)``; see
    :func:`~pocketbatch.loader._adapt.adapt`).

    Example:
        >>> from pocketbatch import ComponentRegistry, load_flow
        >>> components = ComponentRegistry()
        >>> @components.component("/text/each")
        ... async def each(data, ctx):
        ...     results = await ctx.evaluate_batch(
        ...         {"output": {"upper": {"$input": "w"}}},
        ...         [{"w": w} for w in data["words"]],
        ...         max_concurrency=2,
        ...     )
        ...     return [r.result["upper"] for r in results if r.ok]
        >>> flow = load_flow('''
        ... steps:
        ...   - id: each
        ...     component: /text/each
        ...     input: {words: {$input: words}}
        ... output: {$step: each}
        ... ''', registry=components)
        >>> flow.run({"words": ["a", "b", "c"]}).result
        ['a', 'b', 'c']

    Attributes:
        step_id: the step being run.
        flow_dir: the directory of the flow file (``None`` for a flow given as text).
        variables: the run's variables.
        options: the loader's :class:`LoaderOptions`.
        load_subflow: compile a nested flow (a dict, or a path relative to
            ``flow_dir``) with the same registry and config; used by
            ``/builtin/eval`` and ``/builtin/map``.
        services: the run's HTTP client pool, provider limiters and usage
            counters (:class:`~pocketbatch.loader._services.RunServices`); ``None``
            outside a run (a builtin then uses a client for the one call).
        step_retries: the step has ``on_error: retry``: the flow retries it, so a
            component that retries by itself (``/builtin/openai``) sends once per
            call instead (retries of retries would multiply the requests).
        attempt: which attempt of the step this call is, from 1 (``on_error: retry``
            calls again with 2, 3...), like Stepflow's ``context.attempt``.
    """

    step_id: str
    flow_dir: Path | None
    variables: Mapping[str, Any]
    options: LoaderOptions = field(default_factory=LoaderOptions)
    load_subflow: Callable[[Any], Subflow] | None = None
    services: RunServices | None = None
    step_retries: bool = False
    attempt: int = 1

    async def evaluate_batch(
        self, flow: Any, inputs: Sequence[Any], *, max_concurrency: int | None = None
    ) -> list[FlowResult]:
        """Run a nested flow once per input, concurrently, within this run (its
        variables, HTTP clients, limiters and blobs).

        Args:
            flow: a flow mapping, or a path relative to the flow file (confined as
                ``/builtin/eval``'s sub-flow paths are).
            inputs: one input per run.
            max_concurrency: at most this many runs at a time (``None``: all at once).

        Returns:
            One :class:`~pocketbatch.FlowResult` per input, in input order; a failing
            input fails only its own result (never raised).

        Raises:
            ComponentError: ``INVALID_INPUT`` when the flow does not load, or nested
                flows are not available here (a context made by hand);
                ``PERMISSION_DENIED`` for a path outside the root.
            ValueError: ``max_concurrency`` is not a whole number >= 1.
        """
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ValueError(
                f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}"
            )
        if self.load_subflow is None:
            raise ComponentError(
                "INVALID_INPUT", f'step "{self.step_id}": nested flows are not available here'
            )
        sub = self.load_subflow(flow)
        return await run_each(
            sub,
            inputs,
            variables=self.variables,
            services=self.services,
            max_concurrency=max_concurrency,
        )


class Subflow(Protocol):
    """What a component can do with a nested flow from :attr:`CallContext.load_subflow`
    (a :class:`~pocketbatch.LoadedFlow`): run it on an input, with run variables.

    Failures of the nested flow come back as ``outcome: failed``, never raised.
    """

    async def run_async(
        self,
        input: Any,
        *,
        variables: Mapping[str, Any] | None = None,
        services: RunServices | None = None,
    ) -> FlowResult: ...


async def run_each(
    sub: Subflow,
    inputs: Sequence[Any],
    *,
    variables: Mapping[str, Any],
    services: RunServices | None,
    max_concurrency: int | None,
) -> list[FlowResult]:
    """Run ``sub`` once per input, at most ``max_concurrency`` at a time (``None`` or
    0: all at once); one result per input, in input order (what
    :meth:`CallContext.evaluate_batch` and a worker's ``submit_run`` do).

    Example:
        >>> import asyncio
        >>> from pocketbatch import load_flow
        >>> sub = load_flow("output: {twice: [{$input: n}, {$input: n}]}\\n")
        >>> runs = run_each(sub, [{"n": 1}, {"n": 2}], variables={}, services=None,
        ...                 max_concurrency=1)
        >>> [r.result for r in asyncio.run(runs)]
        [{'twice': [1, 1]}, {'twice': [2, 2]}]
    """
    gate = asyncio.Semaphore(max_concurrency or max(1, len(inputs)))

    async def one(item: Any) -> FlowResult:
        async with gate:
            return await sub.run_async(item, variables=variables, services=services)

    return list(await asyncio.gather(*(one(item) for item in inputs)))


class Component(Protocol):
    """The loader's view of a component: an async callable on ``(input, ctx)``."""

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any: ...
