"""Run batch items on a Ray cluster: the ``ray`` executor (the ``[ray]`` extra).

``RayExecutor`` sits behind the batch runner's executor seam, so a batch gives the
same records with ``--executor ray`` as with ``--executor async``. It:

* starts or joins Ray (``ray.init()`` locally, or ``ray://HOST:PORT``);
* creates one actor per worker (default: one per CPU of the cluster), each loading
  the flow **once**, from :attr:`~pocketbatch.LoadedFlow.recipe` (paths made
  absolute; registry callables travel pickled, by value when defined in
  ``__main__``); a flow whose components cannot be loaded on a worker fails at
  start, naming the component;
* sends items in chunks of up to ``chunk_size`` (Ray's per-call overhead is
  amortised), to the least busy actor; waiting items leave when there are enough
  to fill a chunk per worker, or after ``linger`` seconds, spread over the workers
  (so keep ``--max-concurrent`` at least ``chunk_size`` times the workers);
  a chunk's items run concurrently inside the actor;
* bounds items in flight through the runner (``--max-concurrent``).

Retry policy when a worker dies (SIGKILL, OOM, a crash): Ray restarts the actor
(which loads the flow again), and each item of the chunk it held runs again on a
separate worker, alone and one at a time; an item that kills that worker too fails
with ``WORKER_CRASHED``. Nothing else in the batch is affected.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pocketbatch._errors import MissingExtraError, PocketbatchError

if TYPE_CHECKING:
    from pocketbatch.loader import FlowResult

__all__ = ("RayExecutor",)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the ray executor", "ray") from None
    return ray


class _FlowActor:
    """A Ray actor holding one loaded flow; runs chunks of items."""

    def __init__(self, source: Any) -> None:
        from pocketbatch.batch._executors import flow_runner
        from pocketbatch.loader import FlowRecipe

        flow = source.load() if isinstance(source, FlowRecipe) else source
        self._run = flow_runner(flow)
        self._loop = asyncio.new_event_loop()

    def ready(self) -> bool:
        return True

    def run_chunk(self, items: list[Any]) -> list[FlowResult]:
        async def all_items() -> list[FlowResult]:
            return list(await asyncio.gather(*(self._run(item) for item in items)))

        return self._loop.run_until_complete(all_items())


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

    Example:
        >>> from pocketbatch.executors.ray import RayExecutor
        >>> RayExecutor(address="ray://head:10001", chunk_size=32)
        RayExecutor(address='ray://head:10001', chunk_size=32)
    """

    def __init__(
        self,
        flow: Any = None,
        *,
        address: str | None = None,
        chunk_size: int = 16,
        workers: int | None = None,
        linger: float = 0.002,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.address = address
        self.chunk_size = chunk_size
        self.workers = workers
        self.linger = linger
        self._flow = flow
        self._ray: Any = None
        self._owned = False
        self._actors: list[Any] = []
        self._busy: list[int] = []
        self._pending: list[tuple[Any, asyncio.Future[FlowResult]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._dispatches: set[asyncio.Task[None]] = set()
        self._solo: Any = None  # a worker for items suspected of killing workers
        self._solo_lock = asyncio.Lock()

    def bind(self, flow: Any) -> None:
        """Set the flow to run (the runner calls this with the batch's flow)."""
        if self._flow is None:
            self._flow = flow

    def _source(self) -> Any:
        from dataclasses import replace

        from pocketbatch.loader import LoadedFlow

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
            source = str(Path(source).resolve())  # workers may not share our cwd
        config = str(Path(recipe.config).resolve()) if recipe.config else None
        return replace(recipe, source=source, config=config)

    async def __aenter__(self) -> Self:
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._owned = True
        count = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=-1)(_FlowActor)
        source = self._source()
        self._actors = [actor.remote(source) for _ in range(count)]
        self._busy = [0] * count
        try:
            await asyncio.gather(*(a.ready.remote() for a in self._actors))
        except Exception as exc:
            await self.__aexit__(None, None, None)
            raise PocketbatchError(f"the flow cannot be loaded on the Ray workers: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in list(self._dispatches):
            task.cancel()
        if self._dispatches:
            await asyncio.gather(*self._dispatches, return_exceptions=True)
        ray = self._ray
        if ray is not None:
            for actor in [*self._actors, *([self._solo] if self._solo is not None else [])]:
                ray.kill(actor)
            self._actors = []
            self._solo = None
            if self._owned:
                ray.shutdown()
                self._owned = False

    async def run(self, index: int, item: Any) -> FlowResult:
        """Queue one item; it leaves with the next chunk."""
        future: asyncio.Future[FlowResult] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.chunk_size * len(self._actors):
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        # Spread what is waiting over the workers: chunks of at most chunk_size, and
        # smaller ones when there is too little to keep every worker busy.
        size = min(self.chunk_size, -(-len(pending) // len(self._actors)))
        for start in range(0, len(pending), size):
            task = asyncio.create_task(self._dispatch(pending[start : start + size]))
            self._dispatches.add(task)
            task.add_done_callback(self._dispatches.discard)

    async def _call(self, items: list[Any]) -> list[FlowResult]:
        slot = min(range(len(self._actors)), key=self._busy.__getitem__)
        self._busy[slot] += 1
        try:
            results: list[FlowResult] = await self._actors[slot].run_chunk.remote(items)
            return results
        finally:
            self._busy[slot] -= 1

    async def _dispatch(self, chunk: list[tuple[Any, asyncio.Future[FlowResult]]]) -> None:
        from pocketbatch.loader import FlowError, FlowResult

        ray = self._ray
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        try:
            results = await self._call([item for item, _ in chunk])
        except died:
            results = []
            for item, _ in chunk:  # the worker died: each item again, truly alone
                results.append(await self._run_alone(item))
        except Exception as exc:  # the item or result could not travel
            detail = f"{type(exc).__name__}: {exc}"
            results = [
                FlowResult("failed", error=FlowError("COMPONENT_FAILED", detail)) for _ in chunk
            ]
        for (_, future), result in zip(chunk, results):
            if not future.done():
                future.set_result(result)

    async def _run_alone(self, item: Any) -> FlowResult:
        """Run a suspect item on a worker of its own, one suspect at a time."""
        from pocketbatch.loader import FlowError, FlowResult

        ray = self._ray
        died = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        async with self._solo_lock:
            if self._solo is None:
                actor = ray.remote(num_cpus=0, max_restarts=-1)(_FlowActor)
                self._solo = actor.remote(self._source())
            try:
                results: list[FlowResult] = await self._solo.run_chunk.remote([item])
                return results[0]
            except died:
                message = "the Ray worker running this item died (the item was run alone)"
                return FlowResult("failed", error=FlowError("WORKER_CRASHED", message))

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, chunk_size={self.chunk_size})"
