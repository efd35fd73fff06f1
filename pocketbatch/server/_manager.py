"""Runs the server's batches in the background, durably.

A batch is accepted only once its flow and every input are committed to the
store. Each running batch is one task that feeds its pending inputs (those with
no output yet) through the batch runner and writes each record to the store as it
finishes (grouped into few transactions by the store's writer). A restart, even
after ``kill -9``, finds the batches still marked running and continues each from
its pending inputs: a finished input never runs again, and an input whose output
was not yet committed runs again and is stored once (``INSERT OR IGNORE``).

All batches share one global limit on items in flight; each batch's workers wait
for it in turn (FIFO), so one huge batch cannot starve a small one.

All batches and ``/runs`` calls share one limiter per LLM provider (base URL and
key; :attr:`BatchManager.limiters`), with the limits set by hand at ``serve``
time: two batches calling one provider spend one budget, and a 429 pauses both.
Each batch keeps its own HTTP client pool and usage counters (its status shows
what it spent); each ``/runs`` call gets a client pool closed when it ends
(:meth:`BatchManager.run_services`). With Ray, the actors keep their limiters
(each spends its share of a hand-set budget; see ``pocketbatch.executors.ray``).

On a full disk the store keeps each batch's records and retries them until they
commit; a batch with more than a few groups of records waiting stops taking new
inputs until they are stored (it pauses, its status shows the storage error) and
continues when space returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Self

from pocketbatch._result import FlowResult
from pocketbatch.batch._executors import Executor, ExecutorSpec
from pocketbatch.batch._jsonl import encode_record, record
from pocketbatch.batch._lines import InputProblem, Line, parse_line, run_input
from pocketbatch.batch._runner import stream_results
from pocketbatch.core import Usage
from pocketbatch.executors import SharedExecutors, open_shared_executors
from pocketbatch.loader._providers import ProviderLimiters
from pocketbatch.loader._services import RunServices, ServiceSettings
from pocketbatch.server._blobs import SqliteBlobStore
from pocketbatch.server._store import Store

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow

__all__ = ("BatchManager",)

_FLUSH_AFTER = 0.05  # seconds a finished record may wait for others to share its write
_WRITES_AHEAD = 16  # groups of records a batch may have queued, not yet stored, and go on


class _Indexed:
    """A stored input: its index in the batch and its parsed line."""

    __slots__ = ("index", "item")

    def __init__(self, index: int, item: Line | InputProblem) -> None:
        self.index = index
        self.item = item


class _BatchExecutor:
    """Runs one batch's items: under the global limit, keeping stored indexes.

    Each item is a stored input (:class:`_Indexed`), run as run-batch runs its
    lines (:func:`~pocketbatch.batch._lines.run_input`): a line that could not be
    read fails without taking a slot of the global limit.
    """

    def __init__(
        self, inner: Executor, slots: asyncio.Semaphore, in_flight: dict[str, int], batch_id: str
    ) -> None:
        self.inner = inner
        self.slots = slots
        self.in_flight = in_flight
        self.batch_id = batch_id
        self.indexes: dict[int, int] = {}  # the runner's ordinal -> the input's index

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.inner.__aexit__(*exc_info)

    async def run(self, ordinal: int, item: Any) -> FlowResult:
        stored: _Indexed = item
        self.indexes[ordinal] = stored.index
        return await run_input(self._run_limited, stored.index, stored.item)

    async def _run_limited(self, index: int, value: Any) -> FlowResult:
        async with self.slots:
            self.in_flight[self.batch_id] = self.in_flight.get(self.batch_id, 0) + 1
            try:
                return await self.inner.run(index, value)
            finally:
                self.in_flight[self.batch_id] -= 1


class BatchManager:
    """Accepts batches, runs them in the background, resumes them after a restart.

    Args:
        store: the durable store.
        load: compiles a flow text into a :class:`~pocketbatch.LoadedFlow` (with the
            server's components and restrictions); raises ``LoadError``.
        max_concurrent: items in flight across all batches.
        executor: where items run (``"async"``, ``"process"``, ``"ray"``,
            ``"ray://HOST:PORT"``, or a spec).
        max_workers: processes per batch (process), or the Ray actors all
            batches share (ray).
        services: limits set by hand for every provider, and the retry policy.
        limiters: the provider limiters every batch and run shares (default:
            made from ``services``).
    """

    def __init__(
        self,
        store: Store,
        load: Callable[[str], LoadedFlow],
        *,
        max_concurrent: int = 64,
        executor: str | ExecutorSpec = "async",
        max_workers: int | None = None,
        services: ServiceSettings | None = None,
        limiters: ProviderLimiters | None = None,
    ) -> None:
        self.store = store
        self.blobs = SqliteBlobStore(store.path)  # the batches' blobs, in the same file
        self.services = services or ServiceSettings()
        if limiters is None:
            own = self.services
            limiters = ProviderLimiters(own.requests_per_minute, own.tokens_per_minute)
        self.limiters = limiters
        spec = executor if isinstance(executor, ExecutorSpec) else ExecutorSpec.parse(executor)
        self.executor = spec.with_options(workers=max_workers)
        self.max_workers = max_workers
        self.in_flight: dict[str, int] = {}  # items running now, by batch
        self._usage: dict[str, tuple[Usage, Usage]] = {}  # by running batch: (stored, live)
        self._load_text = load
        self._flows: OrderedDict[str, LoadedFlow] = OrderedDict()
        self._flows_lock = threading.Lock()
        self.max_concurrent = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._closing = False
        self._executors: SharedExecutors | None = None  # e.g. a Ray connection and actors

    def load(self, flow_text: str) -> LoadedFlow:
        """The compiled flow for ``flow_text`` (cached for the most recent 64).

        Safe to call from worker threads (the server compiles off the event loop);
        the compiling itself happens outside the cache's lock.
        """
        with self._flows_lock:
            found = self._flows.get(flow_text)
            if found is not None:
                self._flows.move_to_end(flow_text)
                return found
        found = self._load_text(flow_text)
        with self._flows_lock:
            self._flows[flow_text] = found
            if len(self._flows) > 64:
                self._flows.popitem(last=False)
        return found

    async def start(self) -> None:
        """Resume every batch the store still has running."""
        self._slots = asyncio.Semaphore(self.max_concurrent)
        # For the server's life: with Ray, one connection and one set of actors
        # all batches share (keeping the server's SIGTERM handler).
        self._executors = open_shared_executors(self.executor)
        for batch_id in self.store.unfinished():
            self._launch(batch_id)

    async def submit(
        self,
        flow_text: str,
        lines: list[tuple[int, bytes]],
        *,
        max_concurrent: int,
    ) -> str:
        """Store a batch durably and start it; returns its id once it is committed.

        ``lines`` are ``(line number, raw JSON)`` pairs, one per input.
        """
        flow = self.load(flow_text)  # a LoadError is the caller's 422
        batch_id = uuid.uuid4().hex
        blobs = [_encode_line(number, raw) for number, raw in lines]
        await self.store.create_batch(
            batch_id, flow_text, blobs, max_concurrent=max_concurrent, name=flow.name
        )
        self._launch(batch_id)
        return batch_id

    def _launch(self, batch_id: str) -> None:
        self._done.setdefault(batch_id, asyncio.Event())
        self._tasks[batch_id] = asyncio.create_task(self._run(batch_id), name=f"batch-{batch_id}")

    async def _run(self, batch_id: str) -> None:
        assert self._slots is not None
        assert self._executors is not None
        row = self.store.get_batch(batch_id)
        assert row is not None
        pending: list[tuple[str, int, bool, bytes]] = []
        writes: list[Any] = []
        flush_later: asyncio.TimerHandle | None = None
        status = "completed"
        try:
            flow = await asyncio.to_thread(self.load, row.flow)  # off the event loop
            # The batch's HTTP pool follows what it may have in flight.
            width = min(row.max_concurrent, self.max_concurrent)
            # Blobs go to the server's database: they outlive the run.
            settings = replace(self.services, max_connections=width, blobs=self.blobs)
            inner = self._executors.executor(flow, settings, self.limiters)
            live = getattr(inner, "usage", None)  # the executor's counters, when it has them
            if isinstance(live, Usage):
                self._usage[batch_id] = (Usage(**(row.usage or {})), live)
            executor = _BatchExecutor(inner, self._slots, self.in_flight, batch_id)
            items = (
                _Indexed(index, _decode_line(blob))
                for index, blob in self.store.pending_inputs(batch_id)
            )

            def flush() -> None:
                # Records go to the store in groups (fewer transactions), and at the
                # latest _FLUSH_AFTER seconds after the first of a group: slow items
                # show their progress and outputs soon, not when 64 have gathered.
                nonlocal pending, flush_later
                if flush_later is not None:
                    flush_later.cancel()
                    flush_later = None
                if pending:
                    # (writes done and fine need no more watching: keep the list short)
                    writes[:] = [w for w in writes if not w.done() or w.exception()]
                    writes.append(self.store.add_outputs_nowait(pending))
                    pending = []

            async with executor:
                workers = min(row.max_concurrent, self.max_concurrent)  # no idle waiters
                async for ordinal, result in stream_results(
                    executor, items, max_concurrency=workers
                ):
                    index = executor.indexes.pop(ordinal)
                    # As run-batch writes it: a result JSON cannot hold fails its record.
                    data, invalid = encode_record(record(index, result), line=result.line)
                    pending.append((batch_id, index, result.ok and not invalid, data))
                    if len(pending) >= 64:
                        flush()
                    elif flush_later is None:
                        loop = asyncio.get_running_loop()
                        flush_later = loop.call_later(_FLUSH_AFTER, flush)
                    waiting = [w for w in writes if not w.done()]
                    if len(waiting) > _WRITES_AHEAD:
                        # The store is behind (a full disk: its writes wait for space):
                        # wait for it rather than pile up records only in memory.
                        await asyncio.shield(asyncio.wrap_future(waiting[0]))
        except asyncio.CancelledError:
            status = "running" if self._closing else "cancelled"
        except Exception as exc:  # the flow no longer loads, or a bug: fail the batch
            status = "failed"
            import sys

            print(f"pocketbatch serve: batch {batch_id} failed: {exc!r}", file=sys.stderr)
        finally:
            try:
                if flush_later is not None:
                    flush_later.cancel()
                if pending:
                    writes.append(self.store.add_outputs_nowait(pending))
                spent = self.usage_of(batch_id, row.usage)
                self._usage.pop(batch_id, None)
                if spent and any(spent.values()):  # kept across restarts, added to next time
                    writes.append(self.store.set_usage_nowait(batch_id, spent))
                # Closing: the store's close() finishes the queued writes (or, on a
                # full disk, leaves those inputs to run again at the next start).
                if status != "running":
                    for write in writes:  # on a full disk: once space returns
                        await asyncio.shield(asyncio.wrap_future(write))
                    await self.store.set_status(batch_id, status, finished=True)
            except Exception as exc:  # a record not stored, for another reason than space
                import sys

                print(
                    f"pocketbatch serve: batch {batch_id}: storing its records failed: {exc!r}",
                    file=sys.stderr,
                )
                with contextlib.suppress(Exception):
                    await self.store.set_status(batch_id, "failed", finished=True)
            finally:  # whatever happened, nobody waits for this batch forever
                self._tasks.pop(batch_id, None)
                self.in_flight.pop(batch_id, None)
                self._done[batch_id].set()

    async def wait(self, batch_id: str) -> None:
        """Return when the batch is no longer running."""
        if batch_id in self._tasks:
            await self._done[batch_id].wait()

    async def cancel(self, batch_id: str) -> bool:
        """Cancel a running batch; whether it was running."""
        task = self._tasks.get(batch_id)
        if task is None:
            return False
        task.cancel()
        await self._done[batch_id].wait()
        return True

    async def close(self) -> None:
        """Stop every running batch, leaving it marked running (to resume next start)."""
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executors is not None:
            self._executors.close()
            self._executors = None
        self.blobs.close()

    def usage_of(self, batch_id: str, stored: dict[str, int] | None) -> dict[str, int] | None:
        """What a batch's LLM calls spent: the ``stored`` figure plus, while it runs,
        what its executor has counted since it (re)started."""
        found = self._usage.get(batch_id)
        if found is None:
            return stored
        before, live = found
        total = before.copy()
        total.add(live)
        return total.to_dict()

    def run_services(self) -> RunServices:
        """Services for one ``/runs`` call: the server's provider limiters, a client
        pool of its own (``async with``: closed when the run ends)."""
        return RunServices(self.services, providers=self.limiters)

    def running(self, batch_id: str) -> bool:
        return batch_id in self._tasks


def _encode_line(number: int, raw: bytes) -> bytes:
    return number.to_bytes(8, "big") + raw


def _decode_line(blob: bytes) -> Line | InputProblem:
    return parse_line(int.from_bytes(blob[:8], "big"), blob[8:])
