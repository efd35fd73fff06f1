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

A *flow* is a loaded flow file (:class:`~pocketbatch.LoadedFlow`), or any core
flow or node: its input is placed in the shared store under ``"input"`` and its
result read from ``"output"`` (see :func:`flow_runner`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol, Self

from pocketbatch._result import FlowResult
from pocketbatch.core import AsyncNode, BaseNode, Observer

__all__ = (
    "INPUT_KEY",
    "OUTPUT_KEY",
    "AsyncExecutor",
    "Executor",
    "ProcessExecutor",
    "flow_runner",
    "make_executor",
)

INPUT_KEY = "input"
"""Where a core flow finds a batch item in its shared store."""
OUTPUT_KEY = "output"
"""Where a core flow leaves an item's result in its shared store."""

ExecutorKind = Literal["async", "process"]
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


def flow_runner(flow: Any, *, observer: Observer | None = None) -> Runner:
    """``async run(item) -> FlowResult`` for a loaded flow file or a core flow/node.

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
            return await loaded.run_async(item, observer=observer)

        return run_loaded
    if not isinstance(flow, BaseNode):
        raise TypeError(
            "a batch runs a LoadedFlow (pocketbatch.load_flow) or a core Flow/AsyncFlow/node, "
            f"got {type(flow).__name__}"
        )
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
    """

    def __init__(self, flow: Any, *, observer: Observer | None = None) -> None:
        self._run = flow_runner(flow, observer=observer)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def run(self, index: int, item: Any) -> FlowResult:
        """Run one item."""
        return await self._run(item)

    def __repr__(self) -> str:
        return "AsyncExecutor()"


# -- process pool -------------------------------------------------------------------------

# In a worker process: the flow, loaded once by the pool's initializer, and an
# event loop kept for the worker's life.
_worker_run: Runner | None = None
_worker_loop: asyncio.AbstractEventLoop | None = None


def _init_worker(source: Any) -> None:
    global _worker_run, _worker_loop
    import signal

    from pocketbatch.loader import FlowRecipe

    # Ctrl-C is the parent's to handle (finish, then cancel): a worker forked from
    # it must neither die of SIGINT nor write it into the parent's event loop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.set_wakeup_fd(-1)

    flow = source.load() if isinstance(source, FlowRecipe) else source
    _worker_run = flow_runner(flow)
    _worker_loop = asyncio.new_event_loop()


def _run_in_worker(item: Any) -> FlowResult:
    assert _worker_run is not None, "worker not initialised"
    assert _worker_loop is not None, "worker not initialised"
    return _worker_loop.run_until_complete(_worker_run(item))


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
    """

    def __init__(self, flow: Any, *, max_workers: int | None = None) -> None:
        from pocketbatch.loader import LoadedFlow

        if isinstance(flow, LoadedFlow):
            if flow.recipe is None:
                raise ValueError("the process executor needs a flow from pocketbatch.load_flow")
            self._source: Any = flow.recipe
        else:
            flow_runner(flow)  # type check
            self._source = flow
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool: Any = None
        self._solo: Any = None  # one process, for items suspected of killing workers
        self._generation = 0
        self._rebuild = asyncio.Lock()
        self._solo_lock = asyncio.Lock()

    def _new_pool(self, workers: int) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(self._source,))

    async def __aenter__(self) -> Self:
        self._pool = self._new_pool(self.max_workers)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pools = [p for p in (self._pool, self._solo) if p is not None]
        self._pool = self._solo = None
        for pool in pools:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def run(self, index: int, item: Any) -> FlowResult:
        """Run one item in a worker process."""
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        generation = self._generation
        try:
            result: FlowResult = await loop.run_in_executor(self._pool, _run_in_worker, item)
            return result
        except BrokenProcessPool:
            async with self._rebuild:
                if generation == self._generation:  # the first to notice rebuilds
                    old, self._pool = self._pool, self._new_pool(self.max_workers)
                    self._generation += 1
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
                result: FlowResult = await loop.run_in_executor(self._solo, _run_in_worker, item)
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


def make_executor(
    kind: ExecutorKind | Executor,
    flow: Any,
    *,
    max_workers: int | None = None,
    observer: Observer | None = None,
    chunk_size: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
) -> Executor:
    """The executor for ``kind`` (``"async"``, ``"process"``, ``"ray"``,
    ``"ray://HOST:PORT"``, or one you made). ``chunk_size`` and ``runtime_env`` are
    the ray executor's (see :class:`~pocketbatch.executors.ray.RayExecutor`).

    Example:
        >>> from pocketbatch import load_flow
        >>> make_executor("async", load_flow("output: 1\\n"))
        AsyncExecutor()
    """
    name: str = kind if isinstance(kind, str) else ""
    ray = name == "ray" or name.startswith("ray://")
    if runtime_env is not None and not ray:
        raise ValueError(f"runtime_env is for the ray executor, not {kind!r}")
    if kind == "async":
        return AsyncExecutor(flow, observer=observer)
    if kind == "process":
        return ProcessExecutor(flow, max_workers=max_workers)
    if ray:
        from pocketbatch.executors.ray import RayExecutor

        return RayExecutor(
            flow,
            address=None if name == "ray" else name,
            chunk_size=chunk_size or 16,
            runtime_env=runtime_env,
        )
    if isinstance(kind, str):
        raise ValueError(
            f"executor must be 'async', 'process', 'ray' or 'ray://HOST:PORT', got {kind!r}"
        )
    bind = getattr(kind, "bind", None)
    if callable(bind):
        bind(flow)  # an executor made without its flow (RayExecutor(address=...))
    return kind
