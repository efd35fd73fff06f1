"""Run batch items on a Ray cluster: the ``ray`` executor (the ``[ray]`` extra).

``RayExecutor`` sits behind the batch runner's executor seam, so a batch gives the
same records with ``--executor ray`` as with ``--executor async``. It:

* starts or joins Ray (``ray.init()``: the local instance running, else a new one it
  stops at the end; or a cluster at ``ray://HOST:PORT``, through Ray Client); a Ray
  it cannot reach raises :class:`~pocketbatch.PocketbatchError` naming the address;
* creates one actor per worker (default: one per CPU of the cluster), each loading
  the flow **once**, from :attr:`~pocketbatch.LoadedFlow.recipe` (paths made
  absolute, or relative to a shipped ``working_dir``; registry callables travel
  pickled, by value when defined in ``__main__``); a component that cannot be
  pickled, or a flow that cannot be loaded on a worker, fails at start, naming
  it. Several executors can share one :class:`RayPool` of actors (the server's
  batches do), each actor then holding each executor's flow;
* sends items in chunks of up to ``chunk_size`` (Ray's per-call overhead is
  amortised). The items that arrive together are shared first among idle actors
  (so a burst smaller than a chunk per actor still keeps every actor busy), then
  go in full chunks to the least busy actors. A remainder smaller than a chunk
  waits ``linger`` seconds for more items, then goes to the actors holding fewer
  than two chunks (one running, one queued); when every actor holds two, it waits
  for a chunk to come back, so chunks do not shrink. With ``--max-concurrent`` at
  least ``chunk_size`` times twice the workers, chunks are full and every actor
  has one queued. A chunk's items run concurrently inside the actor;
* bounds items in flight through the runner (``--max-concurrent``);
* gives the actors the run's :class:`~pocketbatch.loader._services.ServiceSettings`
  (pool size, retry policy, limits set by hand), each actor keeping one pooled
  client and its provider limiters per setting; a hand-set budget is split among
  the actors (each spends ``limit / workers``: over budget never, though an idle
  actor's share is not lent to the others); the usage of each chunk (requests,
  tokens, 429s, retries, cache hits) comes back with its results, summed in
  :attr:`RayExecutor.usage`.

:class:`RaySession` is what ``pocketbatch serve --executor ray`` holds for its life:
one Ray connection, and one :class:`RayPool` its batches' executors share.

Retry policy when a worker dies (SIGKILL, OOM, a crash): Ray restarts the actor
(which loads the flow again), and each item of the chunk it held runs again on a
separate worker, alone and one at a time; an item that kills that worker too fails
with ``WORKER_CRASHED``. Nothing else in the batch is affected.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Self

from pocketbatch._errors import PocketbatchError
from pocketbatch._result import FlowResult
from pocketbatch.batch._executors import ExecutorSpec, RunnableFlow, Runner, flow_runner
from pocketbatch.core import BaseNode, Observer, Usage
from pocketbatch.executors._ray_connect import (
    check_shippable,
    connect_ray,
    import_ray,
    stop_ray,
)
from pocketbatch.loader import FlowRecipe, LoadedFlow
from pocketbatch.loader._providers import ProviderLimiters
from pocketbatch.loader._services import RunServices, ServiceSettings

__all__ = ("RayExecutor", "RayPool", "RaySession", "ray_executor")

_FLOWS_KEPT = 32  # flows an actor keeps loaded (the server's batches each bring one)

_DEPTH = 2  # chunks a worker holds at once: one running, one queued behind it


class _FlowActor:
    """A Ray actor: loads each flow it is given once (by key), and runs chunks of items
    (one chunk at a time: Ray calls a sync actor's methods in turn)."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self._runners: OrderedDict[str, tuple[Runner, RunServices]] = OrderedDict()
        self._loop = asyncio.new_event_loop()
        # The actor's pooled clients and limiters, for its life: one per setting (the
        # server's batches all bring the same, and share them).
        self._services: dict[ServiceSettings | None, RunServices] = {}

    def load(
        self, key: str, source: FlowRecipe | BaseNode, settings: ServiceSettings | None = None
    ) -> bool:
        if key in self._runners:
            self._runners.move_to_end(key)
            return True
        flow = source.load() if isinstance(source, FlowRecipe) else source
        services = self._services.get(settings)
        if services is None:
            services = self._services[settings] = RunServices(settings)
        self._runners[key] = (flow_runner(flow, services=services), services)
        while len(self._runners) > _FLOWS_KEPT:
            self._runners.popitem(last=False)
        return True

    def limits(self, key: str) -> list[tuple[float | None, float | None]]:
        """(requests, tokens per minute) of each provider limiter flow ``key`` used."""
        _, services = self._runners[key]
        assert isinstance(services.providers, ProviderLimiters)
        return [
            (stats.requests_per_minute, stats.tokens_per_minute)
            for stats in (limiter.statistics() for limiter in services.providers.all().values())
        ]

    def forget(self, key: str) -> None:
        self._runners.pop(key, None)

    def run_chunk(
        self, key: str, items: list[Any]
    ) -> tuple[list[FlowResult], dict[str, int]] | None:
        """The items' results and what they spent; ``None`` when this actor lacks the
        flow (it restarted after a crash, or dropped the flow as the oldest of too
        many): load it, then call again."""
        found = self._runners.get(key)
        if found is None:
            return None
        self._runners.move_to_end(key)
        run, services = found
        before = services.usage.copy()

        async def all_items() -> list[FlowResult]:
            return list(await asyncio.gather(*(run(item) for item in items)))

        results = self._loop.run_until_complete(all_items())
        return results, services.usage.minus(before).to_dict()


async def _run_chunk(
    actor: Any, key: str, ref: Any, items: list[Any], settings: ServiceSettings | None, usage: Usage
) -> list[FlowResult]:
    """Run ``items`` on ``actor`` with flow ``key``, loading it there (from ``ref``,
    its recipe in Ray's object store, with ``settings``) first if the actor lacks
    it; add what they spent to ``usage``."""
    found: tuple[list[FlowResult], dict[str, int]] | None
    found = await actor.run_chunk.remote(key, items)
    if found is None:
        await actor.load.remote(key, ref, settings)
        found = await actor.run_chunk.remote(key, items)
        if found is None:  # pragma: no cover - dropped again at once: 32 newer flows
            raise PocketbatchError(f"a Ray worker could not keep flow {key} loaded")
    results, spent = found
    usage.add(spent)
    return results


class RayPool:
    """Ray actors that several :class:`RayExecutor` share (``pocketbatch serve``'s batches).

    One actor per worker, each reserving one CPU; each loads every flow it is given
    once, and keeps the last 32. Executors sharing a pool see each other's load, so
    concurrent batches interleave on the same workers instead of each batch waiting
    for CPUs the others hold. Make it once Ray is connected, in the event loop that
    will use it; :meth:`kill` it at the end.

    Example:
        >>> pool = RayPool(workers=4)  # doctest: +SKIP
        >>> executor = RayExecutor(flow, pool=pool, chunk_size=32)  # doctest: +SKIP
    """

    def __init__(self, workers: int | None = None) -> None:
        ray = self._ray = import_ray()
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=-1)(_FlowActor)
        self.actors: list[Any] = [actor.remote() for _ in range(count)]
        self.busy = [0] * count  # chunks each actor holds
        self._solo: Any = None  # an actor for items suspected of killing workers
        self._solo_lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` each time a chunk comes back (a worker has room again)."""
        self._listeners.append(wake)

    def unlisten(self, wake: Callable[[], None]) -> None:
        self._listeners.remove(wake)

    def returned(self) -> None:
        for wake in list(self._listeners):
            wake()

    async def load(self, key: str, ref: Any, settings: ServiceSettings | None = None) -> None:
        """Load a flow (``ref``: its recipe in Ray's object store) on every actor."""
        await asyncio.gather(*(actor.load.remote(key, ref, settings) for actor in self.actors))

    def forget(self, key: str) -> None:
        for actor in self._every_actor():
            actor.forget.remote(key)

    def _every_actor(self) -> list[Any]:
        return [*self.actors, *([self._solo] if self._solo is not None else [])]

    async def run_alone(
        self, key: str, ref: Any, item: Any, settings: ServiceSettings | None, usage: Usage
    ) -> FlowResult:
        """Run a suspect item on an actor of its own, one suspect at a time."""
        ray = self._ray
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        async with self._solo_lock:
            if self._solo is None:
                self._solo = ray.remote(num_cpus=0, max_restarts=-1)(_FlowActor).remote()
            try:
                results = await _run_chunk(self._solo, key, ref, [item], settings, usage)
                return results[0]
            except died:
                message = "the Ray worker running this item died (the item was run alone)"
                return FlowResult.failed("WORKER_CRASHED", message)

    def kill(self) -> None:
        """Stop the actors."""
        for actor in self._every_actor():
            self._ray.kill(actor)
        self.actors, self.busy, self._solo = [], [], None


class RayExecutor:
    """Runs a batch's items on Ray. See the module docstring for the guarantees.

    Args:
        flow: the flow (a :class:`~pocketbatch.LoadedFlow` or a picklable core flow);
            may be left out when passed to ``evaluate_batch(executor=...)``, which
            binds it.
        address: ``None`` (start or join a local Ray instance) or ``"ray://HOST:PORT"``.
        chunk_size: items per call to a worker.
        workers: actors to start (default: the cluster's CPUs).
        linger: seconds a partial chunk waits for more items before it leaves.
        runtime_env: Ray's ``runtime_env`` for the batch's Ray job, e.g.
            ``{"working_dir": "flows/"}`` to ship a folder to every node: a flow
            file, config and ``/python/`` modules inside that folder are then read
            from the workers' copy, so the nodes need not share a filesystem. Ray
            takes it only when connecting: the executor must start or join Ray
            itself (this process not connected yet).
        pool: run on these actors, shared with other executors (Ray connected
            already); without it, the executor starts its own and stops them at
            the end.
        services: the actors' HTTP pool size, retry policy and limits set by
            hand (each actor spends ``limit / workers`` of each).

    Attributes:
        usage: what the items spent (requests, tokens, 429s, retries, cache
            hits), summed as their chunks come back.

    Example:
        >>> from pocketbatch.executors.ray import RayExecutor
        >>> RayExecutor(address="ray://head:10001", chunk_size=32)
        RayExecutor(address='ray://head:10001', chunk_size=32)
    """

    def __init__(
        self,
        flow: RunnableFlow | None = None,
        *,
        address: str | None = None,
        chunk_size: int = 16,
        workers: int | None = None,
        linger: float = 0.002,
        runtime_env: Mapping[str, Any] | None = None,
        pool: RayPool | None = None,
        services: ServiceSettings | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        env = dict(runtime_env or {})
        self._shipped: Path | None = None  # a local working_dir, which Ray uploads
        working_dir = env.get("working_dir")
        if isinstance(working_dir, str | PathLike) and "://" not in str(working_dir):
            self._shipped = Path(working_dir).resolve()  # resolved here, where it exists
            env["working_dir"] = str(self._shipped)
        self.runtime_env = env or None
        self.address = address
        self.chunk_size = chunk_size
        self.workers = workers
        self.linger = linger
        self._flow = flow
        self.services = services
        self._settings: ServiceSettings | None = None  # each actor's share, once started
        self.usage = Usage()
        self._ray: Any = None
        self._owned = False
        self._shared = pool
        self._pool: RayPool | None = None
        self._key = ""
        self._ref: Any = None
        self._pending: list[tuple[Any, asyncio.Future[FlowResult]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        # Each chunk on its way (or at a worker), by the task sending it.
        self._dispatches: dict[
            asyncio.Task[None], list[tuple[Any, asyncio.Future[FlowResult]]]
        ] = {}
        self._sent = 0

    def bind(self, flow: RunnableFlow) -> None:
        """Set the flow to run (the runner calls this with the batch's flow)."""
        if self._flow is None:
            self._flow = flow

    def _source(self) -> FlowRecipe | BaseNode:
        from dataclasses import replace

        flow = self._flow
        if flow is None:
            raise ValueError("RayExecutor has no flow: pass one, or use it through evaluate_batch")
        if not isinstance(flow, LoadedFlow):
            return flow
        recipe = flow.recipe
        if recipe is None:
            raise ValueError("the ray executor needs a flow from pocketbatch.load_flow")
        source = recipe.source
        if "\n" not in source and not source.lstrip().startswith("{"):
            source = self._worker_path(source)
        config = self._worker_path(recipe.config) if recipe.config else None
        return replace(recipe, source=source, config=config)

    def _worker_path(self, path: str | PathLike[str]) -> str:
        """Where a worker finds this file: inside a shipped ``working_dir``, relative to
        it (the workers run in their copy of it); else absolute (the workers may not
        share our current directory)."""
        absolute = Path(path).resolve()
        if self._shipped is not None and absolute.is_relative_to(self._shipped):
            return absolute.relative_to(self._shipped).as_posix()
        return str(absolute)

    async def __aenter__(self) -> Self:
        from uuid import uuid4

        ray = self._ray = import_ray()
        source = self._source()
        check_shippable(source)  # before Ray starts: fail fast, naming the component
        if self._shared is not None:
            self._pool = self._shared
        else:
            if self.runtime_env and ray.is_initialized():
                raise PocketbatchError(
                    "RayExecutor(runtime_env=...) must start or join Ray itself, and this "
                    "process is connected already: pass runtime_env to your ray.init() instead"
                )
            self._owned = connect_ray(ray, self.address, self.runtime_env)
            self._pool = RayPool(self.workers)
        self._key, self._ref = uuid4().hex, ray.put(source)
        self._settings = _share(self.services, len(self._pool.actors))
        self._pool.listen(self._wake)
        try:
            await self._pool.load(self._key, self._ref, self._settings)
        except Exception as exc:
            await self.__aexit__(None, None, None)
            raise PocketbatchError(f"the flow cannot be loaded on the Ray workers: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for handle in (self._timer, self._soon):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon = None
        for _, future in self._pending:  # items that never left (the batch was stopped)
            future.cancel()
        self._pending = []
        for task, chunk in list(self._dispatches.items()):
            task.cancel()
            for _, future in chunk:  # its items' callers stop too, even if it never started
                future.cancel()
        if self._dispatches:
            await asyncio.gather(*self._dispatches, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.unlisten(self._wake)
            if pool is self._shared:
                pool.forget(self._key)
            else:
                pool.kill()
        self._ref = None
        if self._owned:
            stop_ray(self._ray)
            self._owned = False

    @property
    def chunks_sent(self) -> int:
        """How many chunks (calls to a worker) this executor has sent so far."""
        return self._sent

    async def run(self, index: int, item: Any) -> FlowResult:
        """Queue one item; it leaves with the next chunk."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[FlowResult] = loop.create_future()
        self._pending.append((item, future))
        self._wake()  # once the items arriving in this turn of the loop are in
        return await future

    def _distribute(self) -> None:
        """Send what is waiting: to idle workers first, then in full chunks.

        Idle workers share what is waiting (in chunks of at most ``chunk_size``), so
        a burst of items smaller than a chunk per worker still keeps every worker
        busy. Then full chunks go to the least busy workers. What is left, less than
        a chunk, waits ``linger`` for more items (see :meth:`_flush_partial`).
        """
        self._soon = None
        if self._pool is None:  # closed
            return
        loads = self._pool.busy
        pending, size = self._pending, self.chunk_size
        idle = [slot for slot, busy in enumerate(loads) if busy == 0]
        if idle and pending:
            share = min(size, -(-len(pending) // len(idle)))
            for slot in idle[: -(-len(pending) // share)]:
                self._send(pending[:share], slot)
                pending = pending[share:]
        while len(pending) >= size:
            self._send(pending[:size], min(range(len(loads)), key=loads.__getitem__))
            pending = pending[size:]
        self._pending = pending
        if pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._flush_partial)

    def _flush_partial(self) -> None:
        """Send what is waiting (less than a chunk) to the workers with room for it.

        A worker has room while it holds fewer than :data:`_DEPTH` chunks (one
        running, one queued behind it). When every worker is full, the items wait
        for more to fill a chunk or for a chunk to come back: sending them now would
        only split the next chunks into ever smaller ones.
        """
        self._timer = None
        if self._pool is None:  # closed
            return
        loads = self._pool.busy
        room = sorted(
            (slot for slot, busy in enumerate(loads) if busy < _DEPTH), key=loads.__getitem__
        )
        if not self._pending or not room:
            return
        pending, self._pending = self._pending, []
        size = -(-len(pending) // len(room))  # spread over the workers with room
        for slot, start in zip(room, range(0, len(pending), size)):
            self._send(pending[start : start + size], slot)

    def _send(self, chunk: list[tuple[Any, asyncio.Future[FlowResult]]], slot: int) -> None:
        assert self._pool is not None
        self._pool.busy[slot] += 1
        self._sent += 1
        task = asyncio.create_task(self._dispatch(chunk, slot))
        self._dispatches[task] = chunk
        task.add_done_callback(self._dispatches.pop)

    async def _dispatch(
        self, chunk: list[tuple[Any, asyncio.Future[FlowResult]]], slot: int
    ) -> None:
        pool = self._pool
        assert pool is not None
        results = await self._chunk_results(pool, [item for item, _ in chunk], slot)
        for (_, future), result in zip(chunk, results):
            if not future.done():
                future.set_result(result)
        pool.returned()  # the worker has room again: for every executor sharing it

    def _wake(self) -> None:
        """Look again at what is waiting, once this turn of the event loop is over."""
        if self._soon is None and self._pool is not None:
            self._soon = asyncio.get_running_loop().call_soon(self._distribute)

    async def _chunk_results(self, pool: RayPool, items: list[Any], slot: int) -> list[FlowResult]:
        ray = self._ray
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        try:
            try:
                results = await _run_chunk(
                    pool.actors[slot], self._key, self._ref, items, self._settings, self.usage
                )
            finally:
                pool.busy[slot] -= 1
        except died:
            # The worker died: each item again, truly alone.
            key, ref, settings = self._key, self._ref, self._settings
            return [await pool.run_alone(key, ref, i, settings, self.usage) for i in items]
        except Exception as exc:  # the item or result could not travel
            detail = f"{type(exc).__name__}: {exc}"
            return [FlowResult.failed("COMPONENT_FAILED", detail) for _ in items]
        return results

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, chunk_size={self.chunk_size})"


def _share(settings: ServiceSettings | None, actors: int) -> ServiceSettings | None:
    """``settings`` with each limit set by hand divided among ``actors``."""
    if actors <= 1:
        return settings
    from dataclasses import replace

    settings = settings or ServiceSettings()

    def part(limit: float | None) -> float | None:
        return None if limit is None else limit / actors

    return replace(
        settings,
        requests_per_minute=part(settings.requests_per_minute),
        tokens_per_minute=part(settings.tokens_per_minute),
        budget_share=settings.budget_share / actors,
    )


def ray_executor(
    spec: ExecutorSpec,
    flow: RunnableFlow | None,
    observer: Observer | None,
    services: ServiceSettings | None = None,
    limiters: ProviderLimiters | None = None,
) -> RayExecutor:
    """The executor for ``spec`` (kind ``"ray"``): what
    :func:`~pocketbatch.batch.make_executor` makes for ``"ray"`` and ``"ray://HOST:PORT"``.

    Its ``workers`` are not used: the executor starts one actor per CPU of the
    cluster (``workers`` sizes a :class:`RaySession`'s shared pool). ``limiters``
    are not used: the actors keep theirs (see the module docstring)."""
    return RayExecutor(
        flow,
        address=spec.address,
        chunk_size=spec.chunk_size or 16,
        runtime_env=spec.runtime_env,
        services=services,
    )


class RaySession:
    """One Ray connection and one :class:`RayPool` for a process's life, shared by
    the executors of its batches (``pocketbatch serve --executor ray``).

    A batch's executor must not shut Ray down under the other batches when it
    finishes, and each batch with actors of its own would wait for CPUs the others
    hold: so the session connects once (``spec.address``), starts ``spec.workers``
    actors (default: one per CPU of the cluster), and :meth:`executor` gives each
    batch an executor on them. ``ray.init()`` puts its own SIGTERM handler
    (``sys.exit``) in place of the process's: the session keeps the process's.
    Make it in the event loop that will use it; :meth:`close` it at the end.
    """

    def __init__(self, spec: ExecutorSpec) -> None:
        self._ray = import_ray()
        self._chunk_size = spec.chunk_size or 16
        on_sigterm = signal.getsignal(signal.SIGTERM)
        self._owns_ray = connect_ray(self._ray, spec.address)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
        self.pool: RayPool | None = RayPool(spec.workers)

    def executor(
        self,
        flow: LoadedFlow,
        services: ServiceSettings | None = None,
        limiters: ProviderLimiters | None = None,
    ) -> RayExecutor:
        """An executor for one batch, on the session's actors, which keep their own
        HTTP pools and limiters (``limiters`` is not used), one per setting: pass
        the same ``services`` to every batch for them to share them."""
        return RayExecutor(flow, pool=self.pool, chunk_size=self._chunk_size, services=services)

    def close(self) -> None:
        """Stop the actors, and Ray if the session started or joined it."""
        if self.pool is not None:
            self.pool.kill()
            self.pool = None
        if self._owns_ray:
            self._owns_ray = False
            stop_ray(self._ray)
