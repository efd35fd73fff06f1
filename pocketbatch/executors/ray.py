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
* bounds items in flight through the runner (``--max-concurrent``).

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

from pocketbatch._errors import MissingExtraError, PocketbatchError
from pocketbatch._result import FlowResult
from pocketbatch.batch._executors import ExecutorSpec, RunnableFlow, Runner, flow_runner
from pocketbatch.core import BaseNode, Observer
from pocketbatch.loader import FlowRecipe, LoadedFlow
from pocketbatch.loader._services import RunServices, ServiceSettings

__all__ = ("RayExecutor", "RayPool", "RaySession", "ray_executor")

_FLOWS_KEPT = 32  # flows an actor keeps loaded (the server's batches each bring one)

_DEPTH = 2  # chunks a worker holds at once: one running, one queued behind it


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the ray executor", "ray") from None
    return ray


def stop_ray(ray: Any) -> None:
    """``ray.shutdown()``, without its idle second on a local instance we started.

    ``ray.shutdown()`` stops the processes ``ray.init()`` started one at a time,
    giving each a second to exit on SIGTERM before it sends SIGKILL. The autoscaler
    monitor of a local instance never exits within that second (it checks for
    SIGTERM only between autoscaler rounds), so every run paid a full second
    waiting for the SIGKILL it gets anyway. It holds nothing for a local instance,
    so it gets its SIGKILL first. That uses Ray's process table, which is not a
    public API: if it is not there, this is a plain ``ray.shutdown()``.
    """
    try:
        from ray._private import ray_constants, worker

        node: Any = worker._global_node
        if node is not None and node.is_head():
            for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
                if info.process.poll() is None:
                    info.process.kill()
                    info.process.wait(timeout=5)
    except Exception:  # Ray's internals moved: the plain shutdown
        pass
    ray.shutdown()


def connect_ray(
    ray: Any, address: str | None, runtime_env: Mapping[str, Any] | None = None
) -> bool:
    """Start or join Ray unless this process is connected already; whether it connected.

    ``address`` is ``None`` (join the local instance running, or start one) or
    ``"ray://HOST:PORT"``; ``runtime_env`` is the job's (Ray ships a local
    ``working_dir`` only this way). Raises :class:`~pocketbatch.PocketbatchError`
    naming the address when Ray cannot be reached.
    """
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            runtime_env=runtime_env,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    except Exception as exc:
        raise PocketbatchError(_init_failed(address, exc)) from exc
    return True


def _check_shippable(source: FlowRecipe | BaseNode) -> None:
    """Raise :class:`~pocketbatch.PocketbatchError` naming what cannot travel to a worker.

    Ray pickles the flow (with cloudpickle) to send it to each worker: a registered
    component holding a lock, an open file or a connection cannot go. The flow is
    pickled once; only when that fails are its components tried one by one, to
    name the culprit.
    """
    from ray import cloudpickle

    from pocketbatch.loader import ComponentRegistry, FlowRecipe

    dumps: Any = cloudpickle.dumps
    try:
        dumps(source)
    except Exception as exc:
        error = exc
    else:
        return
    registry = source.registry if isinstance(source, FlowRecipe) else None
    components = (
        [(path, registry.get(path)) for path in registry.paths()]
        if isinstance(registry, ComponentRegistry)
        else []
    )
    for path, component in components:
        try:
            dumps(component)
        except Exception as exc:
            raise PocketbatchError(
                f"component {path} cannot be shipped to the Ray workers: "
                f"{type(exc).__name__}: {exc} (register a function or class the workers "
                "can import, or an object that pickles)"
            ) from exc
    raise PocketbatchError(
        f"the flow cannot be shipped to the Ray workers: {type(error).__name__}: {error}"
    ) from error


def _init_failed(address: str | None, exc: BaseException) -> str:
    """What to say when ``ray.init`` fails."""
    if address is None:
        return f"cannot start or join a local Ray instance: {type(exc).__name__}: {exc}"
    message = f"cannot connect to the Ray cluster at {address}: {type(exc).__name__}: {exc}"
    if address.startswith("ray://") and isinstance(exc, ConnectionError):
        message += (
            " (is its Ray Client server running? If the cluster uses token"
            " authentication, set RAY_AUTH_MODE=token here, with the token in"
            " RAY_AUTH_TOKEN or ~/.ray/auth_token)"
        )
    return message


class _FlowActor:
    """A Ray actor: loads each flow it is given once (by key), and runs chunks of items."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self._runners: OrderedDict[str, Runner] = OrderedDict()
        self._loop = asyncio.new_event_loop()
        self._services = RunServices()  # the actor's pooled client and limiters, for its life

    def load(self, key: str, source: FlowRecipe | BaseNode) -> bool:
        if key in self._runners:
            self._runners.move_to_end(key)
            return True
        flow = source.load() if isinstance(source, FlowRecipe) else source
        self._runners[key] = flow_runner(flow, services=self._services)
        while len(self._runners) > _FLOWS_KEPT:
            self._runners.popitem(last=False)
        return True

    def forget(self, key: str) -> None:
        self._runners.pop(key, None)

    def run_chunk(self, key: str, items: list[Any]) -> list[FlowResult] | None:
        """The items' results; ``None`` when this actor lacks the flow (it restarted
        after a crash, or dropped the flow as the oldest of too many): load it, then
        call again."""
        run = self._runners.get(key)
        if run is None:
            return None
        self._runners.move_to_end(key)

        async def all_items() -> list[FlowResult]:
            return list(await asyncio.gather(*(run(item) for item in items)))

        return self._loop.run_until_complete(all_items())


async def _run_chunk(actor: Any, key: str, ref: Any, items: list[Any]) -> list[FlowResult]:
    """Run ``items`` on ``actor`` with flow ``key``, loading it there (from ``ref``,
    its recipe in Ray's object store) first if the actor lacks it."""
    results: list[FlowResult] | None = await actor.run_chunk.remote(key, items)
    if results is None:
        await actor.load.remote(key, ref)
        results = await actor.run_chunk.remote(key, items)
        if results is None:  # pragma: no cover - dropped again at once: 32 newer flows
            raise PocketbatchError(f"a Ray worker could not keep flow {key} loaded")
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
        ray = self._ray = _import_ray()
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

    async def load(self, key: str, ref: Any) -> None:
        """Load a flow (``ref``: its recipe in Ray's object store) on every actor."""
        await asyncio.gather(*(actor.load.remote(key, ref) for actor in self.actors))

    def forget(self, key: str) -> None:
        for actor in self._every_actor():
            actor.forget.remote(key)

    def _every_actor(self) -> list[Any]:
        return [*self.actors, *([self._solo] if self._solo is not None else [])]

    async def run_alone(self, key: str, ref: Any, item: Any) -> FlowResult:
        """Run a suspect item on an actor of its own, one suspect at a time."""
        ray = self._ray
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        async with self._solo_lock:
            if self._solo is None:
                self._solo = ray.remote(num_cpus=0, max_restarts=-1)(_FlowActor).remote()
            try:
                results = await _run_chunk(self._solo, key, ref, [item])
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

        ray = self._ray = _import_ray()
        source = self._source()
        _check_shippable(source)  # before Ray starts: fail fast, naming the component
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
        self._pool.listen(self._wake)
        try:
            await self._pool.load(self._key, self._ref)
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
                results = await _run_chunk(pool.actors[slot], self._key, self._ref, items)
            finally:
                pool.busy[slot] -= 1
        except died:
            # The worker died: each item again, truly alone.
            return [await pool.run_alone(self._key, self._ref, item) for item in items]
        except Exception as exc:  # the item or result could not travel
            detail = f"{type(exc).__name__}: {exc}"
            return [FlowResult.failed("COMPONENT_FAILED", detail) for _ in items]
        return results

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, chunk_size={self.chunk_size})"


def ray_executor(
    spec: ExecutorSpec,
    flow: RunnableFlow | None,
    observer: Observer | None,
    services: ServiceSettings | None = None,
) -> RayExecutor:
    """The executor for ``spec`` (kind ``"ray"``): what
    :func:`~pocketbatch.batch.make_executor` makes for ``"ray"`` and ``"ray://HOST:PORT"``.

    Its ``workers`` are not used: the executor starts one actor per CPU of the
    cluster (``workers`` sizes a :class:`RaySession`'s shared pool). ``services``
    is not used yet: each actor keeps one pooled client and its own limiters with
    the default settings, and usage does not travel back from actors."""
    return RayExecutor(
        flow, address=spec.address, chunk_size=spec.chunk_size or 16, runtime_env=spec.runtime_env
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
        self._ray = _import_ray()
        self._chunk_size = spec.chunk_size or 16
        on_sigterm = signal.getsignal(signal.SIGTERM)
        self._owns_ray = connect_ray(self._ray, spec.address)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
        self.pool: RayPool | None = RayPool(spec.workers)

    def executor(self, flow: LoadedFlow, services: ServiceSettings | None = None) -> RayExecutor:
        """An executor for one batch, on the session's actors (which keep their own
        HTTP pools and limiters: ``services`` is not used)."""
        return RayExecutor(flow, pool=self.pool, chunk_size=self._chunk_size)

    def close(self) -> None:
        """Stop the actors, and Ray if the session started or joined it."""
        if self.pool is not None:
            self.pool.kill()
            self.pool = None
        if self._owns_ray:
            self._owns_ray = False
            stop_ray(self._ray)
