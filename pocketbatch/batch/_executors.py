"""Executors: where the items of a batch run.

The runner asks an executor for one thing, ``await executor.run(index, item)``,
which returns the item's :class:`~pocketbatch.FlowResult` and never raises for a
failing item. Executors are async context managers (``async with``) so they can
start and stop what they need. Two ship here, and the seam is small enough for
others (a Ray executor) to be added without touching the runner:

* :class:`AsyncExecutor` (``"async"``, the default): runs items in this process,
  on this event loop;
* :class:`ProcessExecutor` (``"process"``): a process pool for CPU-bound flows;
  each worker loads the flow once (not once per item), and a worker that dies
  fails only the items it was running: the pool is rebuilt and the others retried.

A third, ``"ray"`` (:class:`~pocketbatch.executors.ray.RayExecutor`), lives in the
layer above (``pocketbatch.executors``): this module names it by module path in
:data:`_FACTORIES_ELSEWHERE` and imports it only when asked for, so the batch layer
does not depend on it.

Which executor, and how it is set up, is an :class:`ExecutorSpec`, parsed once from
the name the CLI, the Python API and the server all take (``"async"``,
``"process"``, ``"ray"``, ``"ray://HOST:PORT"``); :func:`make_executor` builds the
executor for a spec (or a name) and a flow.

Each executor owns the run's services (:class:`~pocketbatch.loader._services.RunServices`:
the pooled HTTP client, the provider limiters, the usage counters) for the flows it
runs: the async executor one for the batch, the process executor one per worker
process (each item's usage travels back with its result), whose limiters are the
parent's (see :mod:`pocketbatch.batch._limit_host`: the workers spend one budget
together). They are set up from a
:class:`~pocketbatch.loader._services.ServiceSettings` and summed in the executor's
``usage`` (a :class:`~pocketbatch.Usage`). Both take ``limiters`` (a
:class:`~pocketbatch.loader._providers.ProviderLimiters`) to share the provider
limiters with other executors (the server's batches do).

A *flow* (:data:`RunnableFlow`) is a loaded flow file (:class:`~pocketbatch.LoadedFlow`),
or any core flow or node: its input is placed in the shared store under ``"input"``
and its result read from ``"output"`` (see :func:`flow_runner`).
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypeAlias, TypeGuard, cast

from pocketbatch._result import FlowResult
from pocketbatch.core import AsyncNode, BaseNode, Observer, Usage

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from pocketbatch.batch._limit_host import Address, LimiterClient, LimiterHost
    from pocketbatch.loader import FlowRecipe, LoadedFlow
    from pocketbatch.loader._providers import ProviderLimiters
    from pocketbatch.loader._services import RunServices, ServiceSettings

__all__ = (
    "INPUT_KEY",
    "OUTPUT_KEY",
    "AsyncExecutor",
    "RunnableFlow",
    "Executor",
    "ExecutorKind",
    "ExecutorSpec",
    "ProcessExecutor",
    "flow_runner",
    "make_executor",
)

INPUT_KEY = "input"
"""Where a core flow finds a batch item in its shared store."""
OUTPUT_KEY = "output"
"""Where a core flow leaves an item's result in its shared store."""

RunnableFlow: TypeAlias = "LoadedFlow | BaseNode"
"""What a batch runs: a loaded flow file, or a core flow or node."""
Runner = Callable[[Any], Awaitable["FlowResult"]]


class Executor(Protocol):
    """Runs the items of a batch. See the module docstring.

    Example:
        >>> import asyncio
        >>> from pocketbatch import load_flow
        >>> from pocketbatch.batch import AsyncExecutor
        >>> async def one():
        ...     async with AsyncExecutor(load_flow("output: {$input: x}\\n")) as ex:
        ...         return (await ex.run(0, {"x": 5})).result
        >>> asyncio.run(one())
        5
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def run(self, index: int, item: Any) -> FlowResult: ...


class UnboundExecutor(Executor, Protocol):
    """An executor made without its flow (``RayExecutor(address=...)``): the runner
    binds the batch's flow to it before entering it."""

    def bind(self, flow: RunnableFlow) -> None: ...


def flow_runner(
    flow: RunnableFlow, *, observer: Observer | None = None, services: RunServices | None = None
) -> Runner:
    """``async run(item) -> FlowResult`` for a loaded flow file or a core flow/node.

    A loaded flow's runs share ``services`` (HTTP client, limiters, usage; without
    them each run makes its own); a core flow's nodes bring their own (share a
    :class:`~pocketbatch.ProviderLimiter` between them).

    For a core flow, each item runs on a fresh shared store ``{"input": item}``
    and on its own copy of the flow; the result is ``shared.get("output")``, and
    an exception fails the item with ``COMPONENT_FAILED``.

    Example:
        >>> import asyncio
        >>> from pocketbatch import Flow, Node
        >>> class Double(Node):
        ...     def prep(self, shared): return shared["input"]
        ...     def exec(self, x): return 2 * x
        ...     def post(self, shared, x, y): shared["output"] = y
        >>> run = flow_runner(Flow(start=Double()))
        >>> asyncio.run(run(21)).to_dict()
        {'outcome': 'success', 'result': 42}
    """
    from pocketbatch.loader import LoadedFlow

    if isinstance(flow, LoadedFlow):
        loaded = flow

        async def run_loaded(item: Any) -> FlowResult:
            return await loaded.run_async(item, observer=observer, services=services)

        return run_loaded
    if not isinstance(flow, BaseNode):
        raise _not_a_flow(flow)
    core = flow

    async def run_core(item: Any) -> FlowResult:
        shared: dict[str, Any] = {INPUT_KEY: item}
        node = core._pb_copy()
        try:
            if isinstance(node, AsyncNode):
                await node.run_async(shared, observer=observer)
            else:
                await asyncio.to_thread(node.run, shared, observer=observer)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return FlowResult.failed("COMPONENT_FAILED", detail)
        return FlowResult("success", shared.get(OUTPUT_KEY))

    return run_core


class AsyncExecutor:
    """Runs items in this process, on the running event loop (the default).

    Args:
        flow: a :class:`~pocketbatch.LoadedFlow` or a core flow/node.
        observer: receives the flows' events (steps, retries) for every item.
        services: how the batch's shared HTTP client and limiters are set up.
        limiters: provider limiters shared with other executors (default: the
            batch's own, with ``services``' limits).

    Attributes:
        usage: what the batch's HTTP builtins spent (requests, tokens, 429s, ...).
    """

    def __init__(
        self,
        flow: RunnableFlow,
        *,
        observer: Observer | None = None,
        services: ServiceSettings | None = None,
        limiters: ProviderLimiters | None = None,
    ) -> None:
        from pocketbatch.loader._services import RunServices

        self.usage = Usage()
        self._services = RunServices(services, usage=self.usage, providers=limiters)
        self._run = flow_runner(flow, observer=observer, services=self._services)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._services.aclose()

    async def run(self, index: int, item: Any) -> FlowResult:
        """Run one item."""
        return await self._run(item)

    def __repr__(self) -> str:
        return "AsyncExecutor()"


# -- process pool -------------------------------------------------------------------------

# In a worker process: the flow, loaded once by the pool's initializer, an event
# loop and the run's services kept for the worker's life.
_worker_run: Runner | None = None
_worker_loop: asyncio.AbstractEventLoop | None = None
_worker_services: RunServices | None = None
_worker_limits: LimiterClient | None = None


def _init_worker(
    source: FlowRecipe | BaseNode, settings: ServiceSettings | None, limits: Address
) -> None:
    global _worker_run, _worker_loop, _worker_services, _worker_limits
    import signal
    from multiprocessing.util import Finalize

    from pocketbatch.batch._limit_host import LimiterClient
    from pocketbatch.loader import FlowRecipe
    from pocketbatch.loader._services import RunServices

    # Ctrl-C is the parent's to handle (finish, then cancel): a worker forked from
    # it must neither die of SIGINT nor write it into the parent's event loop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)

    flow = source.load() if isinstance(source, FlowRecipe) else source
    # The parent's limiters, and its clock for the retry waits.
    _worker_limits = LimiterClient(limits)
    _worker_services = RunServices(settings, providers=_worker_limits, sleep=_worker_limits.sleep)
    _worker_run = flow_runner(flow, services=_worker_services)
    _worker_loop = asyncio.new_event_loop()
    Finalize(None, _close_worker, exitpriority=10)  # run as the worker process exits


def _close_worker() -> None:
    if _worker_loop is not None and _worker_services is not None:
        _worker_loop.run_until_complete(_worker_services.aclose())
        if _worker_limits is not None:
            _worker_loop.run_until_complete(_worker_limits.aclose())


def _run_in_worker(item: Any) -> tuple[FlowResult, dict[str, int]]:
    """The item's result, and what it spent (the worker runs one item at a time)."""
    assert _worker_run is not None, "worker not initialised"
    assert _worker_loop is not None, "worker not initialised"
    assert _worker_services is not None, "worker not initialised"
    before = _worker_services.usage.copy()
    result = _worker_loop.run_until_complete(_worker_run(item))
    return result, _worker_services.usage.minus(before).to_dict()


class ProcessExecutor:
    """Runs items on a pool of worker processes: for CPU-bound flows.

    Each worker loads the flow once: a loaded flow file is loaded again in the
    worker from its :attr:`~pocketbatch.LoadedFlow.recipe` (so its components must
    be importable there: module-level functions, routes, builtins); a core flow
    is sent as is (it must pickle). Items and results must pickle.

    A worker that dies (a crash, ``os._exit``, the OOM killer) breaks the pool and
    every item running on it. The pool is rebuilt, and each of those items runs
    again on a separate one-process pool, one at a time: an innocent item
    succeeds there, and the item that kills its worker even alone fails with
    ``WORKER_CRASHED``. So a crash fails only the items that cause it.

    Args:
        flow: a :class:`~pocketbatch.LoadedFlow` or a picklable core flow.
        max_workers: processes (default: the number of CPUs).
        services: how each worker's HTTP client is set up, and the limits set
            by hand (for all the workers together).
        limiters: the provider limiters the workers share (default: the
            executor's own, with ``services``' limits); they stay in this
            process, and the workers ask them for each request (see
            :mod:`pocketbatch.batch._limit_host`), so N workers spend one budget
            and a provider's ``retry-after`` pauses all of them.

    Attributes:
        usage: what the items spent, summed as their results come back.
    """

    def __init__(
        self,
        flow: RunnableFlow,
        *,
        max_workers: int | None = None,
        services: ServiceSettings | None = None,
        limiters: ProviderLimiters | None = None,
    ) -> None:
        from pocketbatch.loader import LoadedFlow
        from pocketbatch.loader._providers import ProviderLimiters
        from pocketbatch.loader._services import ServiceSettings

        self._source: FlowRecipe | BaseNode
        if isinstance(flow, LoadedFlow):
            if flow.recipe is None:
                raise ValueError("the process executor needs a flow from pocketbatch.load_flow")
            self._source = flow.recipe
        else:
            flow_runner(flow)  # type check
            self._source = flow
        self.max_workers = max_workers or os.cpu_count() or 1
        self._settings = services
        if limiters is None:
            settings = services or ServiceSettings()
            limiters = ProviderLimiters(settings.requests_per_minute, settings.tokens_per_minute)
        self.limiters = limiters
        self._host: LimiterHost | None = None
        self.usage = Usage()
        self._pool: ProcessPoolExecutor | None = None
        # one process, for items suspected of killing workers
        self._solo: ProcessPoolExecutor | None = None
        self._generation = 0
        self._rebuild = asyncio.Lock()
        self._solo_lock = asyncio.Lock()

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        from concurrent.futures import ProcessPoolExecutor

        address = self._host.address if self._host is not None else None
        assert address is not None, "the executor is not entered"
        return ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=(self._source, self._settings, address)
        )

    async def __aenter__(self) -> Self:
        from pocketbatch.batch._limit_host import LimiterHost

        self._host = await LimiterHost(self.limiters).__aenter__()
        self._pool = self._new_pool(self.max_workers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pools = [p for p in (self._pool, self._solo) if p is not None]
        self._pool = self._solo = None
        try:
            for pool in pools:
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        finally:
            host, self._host = self._host, None
            if host is not None:
                await host.__aexit__(None, None, None)

    async def run(self, index: int, item: Any) -> FlowResult:
        """Run one item in a worker process."""
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        generation = self._generation
        try:
            result, spent = await loop.run_in_executor(self._pool, _run_in_worker, item)
            self.usage.add(spent)
            return result
        except BrokenProcessPool:
            async with self._rebuild:
                if generation == self._generation:  # the first to notice rebuilds
                    old, self._pool = self._pool, self._new_pool(self.max_workers)
                    self._generation += 1
                    if old is not None:
                        old.shutdown(wait=False, cancel_futures=True)
        except Exception as exc:  # the item or its result does not pickle
            return FlowResult.failed("COMPONENT_FAILED", f"{type(exc).__name__}: {exc}")
        return await self._run_alone(item)

    async def _run_alone(self, item: Any) -> FlowResult:
        """Run a suspect item with nothing else beside it."""
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        async with self._solo_lock:
            if self._solo is None:
                self._solo = self._new_pool(1)
            try:
                result, spent = await loop.run_in_executor(self._solo, _run_in_worker, item)
                self.usage.add(spent)
                return result
            except BrokenProcessPool:
                self._solo.shutdown(wait=False, cancel_futures=True)
                self._solo = None
                return FlowResult.failed(
                    "WORKER_CRASHED",
                    "the worker process running this item died (the item was run alone)",
                )
            except Exception as exc:
                return FlowResult.failed("COMPONENT_FAILED", f"{type(exc).__name__}: {exc}")

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers})"


# -- which executor ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorSpec:
    """Which executor runs a batch, and how it is set up; see :meth:`parse`.

    Args:
        kind: ``"async"``, ``"process"`` or ``"ray"``.
        address: for ``"ray"``: ``"ray://HOST:PORT"`` (a cluster, through Ray
            Client), or ``None`` (start or join a local Ray instance).
        workers: processes for ``"process"``; for ``"ray"``, the actors of a pool
            the server's batches share (default: one per CPU).
        chunk_size: items per call to a Ray worker (default 16).
        runtime_env: Ray's ``runtime_env`` for the batch's Ray job (``"ray"`` only).

    Example:
        >>> spec = ExecutorSpec.parse("ray://head:10001", chunk_size=32)
        >>> spec.kind, spec.address, spec.chunk_size
        ('ray', 'ray://head:10001', 32)
        >>> spec.name
        'ray://head:10001'
    """

    kind: Literal["async", "process", "ray"]
    address: str | None = None
    workers: int | None = None
    chunk_size: int | None = None
    runtime_env: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.runtime_env is not None and self.kind != "ray":
            raise ValueError(f"runtime_env is for the ray executor, not {self.name!r}")

    @classmethod
    def parse(
        cls,
        name: str,
        *,
        workers: int | None = None,
        chunk_size: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> ExecutorSpec:
        """The spec for an executor name: ``"async"``, ``"process"``, ``"ray"`` or
        ``"ray://HOST:PORT"``.

        Raises:
            ValueError: an unknown name, or ``runtime_env`` for an executor not Ray.

        Example:
            >>> ExecutorSpec.parse("process", workers=4).workers
            4
            >>> ExecutorSpec.parse("fiber")
            Traceback (most recent call last):
            ...
            ValueError: executor must be 'async', 'process', 'ray' or 'ray://HOST:PORT', got 'fiber'
        """
        options: dict[str, Any] = {
            "workers": workers,
            "chunk_size": chunk_size,
            "runtime_env": runtime_env,
        }
        if name in ("async", "process", "ray"):
            return cls(cast(Literal["async", "process", "ray"], name), **options)
        if isinstance(name, str) and name.startswith("ray://"):
            return cls("ray", address=name, **options)
        raise ValueError(
            f"executor must be 'async', 'process', 'ray' or 'ray://HOST:PORT', got {name!r}"
        )

    @property
    def name(self) -> str:
        """The name this spec is parsed from (``"ray://HOST:PORT"`` for a cluster)."""
        return self.address if self.kind == "ray" and self.address else self.kind

    def with_options(
        self,
        *,
        workers: int | None = None,
        chunk_size: int | None = None,
        runtime_env: Mapping[str, Any] | None = None,
    ) -> ExecutorSpec:
        """This spec with the options given (those left ``None`` keep their value)."""
        return replace(
            self,
            workers=self.workers if workers is None else workers,
            chunk_size=self.chunk_size if chunk_size is None else chunk_size,
            runtime_env=self.runtime_env if runtime_env is None else runtime_env,
        )


ExecutorKind: TypeAlias = "str | ExecutorSpec"
"""An executor by name (``"async"``, ``"process"``, ``"ray"``, ``"ray://HOST:PORT"``) or spec."""

ExecutorFactory = Callable[
    [
        ExecutorSpec,
        "RunnableFlow | None",
        "Observer | None",
        "ServiceSettings | None",
        "ProviderLimiters | None",
    ],
    Executor,
]
"""Makes the executor of a spec for a flow (``None``: bound later, by the runner),
with the run's service settings and the provider limiters it shares (``None``:
its own)."""


def _async_executor(
    spec: ExecutorSpec,
    flow: RunnableFlow | None,
    observer: Observer | None,
    services: ServiceSettings | None,
    limiters: ProviderLimiters | None = None,
) -> Executor:
    return AsyncExecutor(_needs(flow), observer=observer, services=services, limiters=limiters)


def _process_executor(
    spec: ExecutorSpec,
    flow: RunnableFlow | None,
    observer: Observer | None,
    services: ServiceSettings | None,
    limiters: ProviderLimiters | None = None,
) -> Executor:
    return ProcessExecutor(
        _needs(flow), max_workers=spec.workers, services=services, limiters=limiters
    )


def _needs(flow: RunnableFlow | None) -> RunnableFlow:
    if flow is None:
        raise _not_a_flow(flow)
    return flow


def _not_a_flow(flow: object) -> TypeError:
    return TypeError(
        "a batch runs a LoadedFlow (pocketbatch.load_flow) or a core Flow/AsyncFlow/node, "
        f"got {type(flow).__name__}"
    )


_FACTORIES: dict[str, ExecutorFactory] = {"async": _async_executor, "process": _process_executor}

_FACTORIES_ELSEWHERE = {"ray": ("pocketbatch.executors.ray", "ray_executor")}
"""Executors of the layer above, by kind: (module, factory), imported only when used."""


def _factory(kind: str) -> ExecutorFactory:
    found = _FACTORIES.get(kind)
    if found is not None:
        return found
    module, name = _FACTORIES_ELSEWHERE[kind]
    factory: ExecutorFactory = getattr(importlib.import_module(module), name)
    return factory


def make_executor(
    kind: ExecutorKind | Executor,
    flow: RunnableFlow | None,
    *,
    max_workers: int | None = None,
    observer: Observer | None = None,
    chunk_size: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    services: ServiceSettings | None = None,
    limiters: ProviderLimiters | None = None,
) -> Executor:
    """The executor for ``kind`` (``"async"``, ``"process"``, ``"ray"``,
    ``"ray://HOST:PORT"``, an :class:`ExecutorSpec`, or one you made). The options
    given override the spec's; ``chunk_size`` and ``runtime_env`` are the ray
    executor's (see :class:`~pocketbatch.executors.ray.RayExecutor`). ``services``
    sets up the shared HTTP client and limiters of the executors made here (not of
    one you made); ``limiters`` are provider limiters they share with others.

    Example:
        >>> from pocketbatch import load_flow
        >>> make_executor("async", load_flow("output: 1\\n"))
        AsyncExecutor()
    """
    if isinstance(kind, str | ExecutorSpec):
        spec = kind if isinstance(kind, ExecutorSpec) else ExecutorSpec.parse(kind)
        spec = spec.with_options(
            workers=max_workers, chunk_size=chunk_size, runtime_env=runtime_env
        )
        return _factory(spec.kind)(spec, flow, observer, services, limiters)
    if runtime_env is not None:
        raise ValueError(f"runtime_env is for the ray executor, not {kind!r}")
    if flow is not None and _is_unbound(kind):
        kind.bind(flow)  # an executor made without its flow (RayExecutor(address=...))
    return kind


def _is_unbound(executor: Executor) -> TypeGuard[UnboundExecutor]:
    return callable(getattr(executor, "bind", None))
