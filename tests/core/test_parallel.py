"""AsyncParallelBatchNode and AsyncParallelBatchFlow: bounds, laziness, order, failures.

Everything here counts (in-flight items, pulled items, live tasks, cancellations);
nothing measures wall-clock time. Items only ever yield with ``asyncio.sleep(0)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pocketbatch import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    Flow,
    ItemError,
    Node,
)

TIMEOUT = 10


class Boom(Exception):
    """The exception a failing item raises (one distinct object per item)."""


class Tracker:
    """Counts what the items of one batch did; shared by every copy of a node."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.started: list[int] = []
        self.finished: list[int] = []
        self.failed: list[int] = []
        self.cancelled: list[int] = []
        self.failure_raised = False
        self.started_after_failure: list[int] = []
        self.pulled = 0
        self.max_backlog = 0  # max over time of (items pulled - items done)
        self.max_tasks = 0  # max of len(asyncio.all_tasks()) seen inside an item

    @property
    def done(self) -> int:
        return len(self.finished) + len(self.failed) + len(self.cancelled)

    def enter(self, index: int) -> None:
        if self.failure_raised:
            self.started_after_failure.append(index)
        self.started.append(index)
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.max_backlog = max(self.max_backlog, self.pulled - self.done)
        self.max_tasks = max(self.max_tasks, len(asyncio.all_tasks()))


async def work(
    tracker: Tracker,
    index: int,
    yields: int = 1,
    exc: BaseException | None = None,
    cleanup_yields: int = 0,
    gate: asyncio.Event | None = None,
) -> Any:
    """One item: enter, yield ``yields`` times (and wait for ``gate``), then fail or return."""
    tracker.enter(index)
    try:
        for _ in range(yields):
            await asyncio.sleep(0)
        if gate is not None:
            await gate.wait()
        if exc is not None:
            tracker.failed.append(index)
            tracker.failure_raised = True
            raise exc
        tracker.finished.append(index)
        return ("ok", index)
    except asyncio.CancelledError:
        # Cleanup that itself awaits: only recorded if the batch awaits the cancelled item.
        for _ in range(cleanup_yields):
            await asyncio.sleep(0)
        tracker.cancelled.append(index)
        raise
    finally:
        tracker.in_flight -= 1


def job(
    index: int,
    yields: int = 1,
    exc: BaseException | None = None,
    cleanup_yields: int = 0,
    gate: asyncio.Event | None = None,
) -> dict[str, Any]:
    return {
        "i": index,
        "yields": yields,
        "exc": exc,
        "cleanup_yields": cleanup_yields,
        "gate": gate,
    }


def run_job(tracker: Tracker, j: dict[str, Any]) -> Any:
    return work(tracker, j["i"], j["yields"], j["exc"], j["cleanup_yields"], j["gate"])


def counted(tracker: Tracker, jobs: Any) -> Iterator[dict[str, Any]]:
    """A generator over ``jobs`` that counts how many were pulled."""
    for j in jobs:
        tracker.pulled += 1
        yield j


async def acounted(tracker: Tracker, jobs: Any, yields: int = 1) -> AsyncIterator[dict[str, Any]]:
    """An async generator over ``jobs`` that yields to the loop and counts pulls."""
    for j in jobs:
        for _ in range(yields):
            await asyncio.sleep(0)
        tracker.pulled += 1
        yield j


def make_source(kind: str, tracker: Tracker, jobs: list[dict[str, Any]]) -> Any:
    if kind == "list":
        tracker.pulled = len(jobs)
        return jobs
    if kind == "generator":
        return counted(tracker, jobs)
    assert kind == "async_generator"
    # No await inside, so workers can pull back to back and fill every slot at once
    # (test_async_generator_source covers a generator that suspends).
    return acounted(tracker, jobs, yields=0)


SOURCES = ["list", "generator", "async_generator"]


# -- the node and the flow under test --------------------------------------------------


class WorkNode(AsyncParallelBatchNode):
    """Runs ``work`` for each job dict that ``source`` yields."""

    def __init__(self, source: Any, tracker: Tracker, **options: Any) -> None:
        super().__init__(**options)
        self.source = source
        self.tracker = tracker
        self.post_calls: list[tuple[Any, Any]] = []

    async def prep_async(self, shared: Any) -> Any:
        return self.source

    async def exec_async(self, j: dict[str, Any]) -> Any:
        return await run_job(self.tracker, j)

    async def post_async(self, shared: Any, prep_res: Any, results: Any) -> Any:
        self.post_calls.append((prep_res, results))
        shared["results"] = results
        return "posted"


class Step(AsyncNode):
    """A sub-flow step: runs ``work`` for the job in its params, returns ``act<i>``."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker

    async def exec_async(self, _: Any) -> Any:
        return await run_job(self.tracker, self.params)

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        return f"act{self.params['i']}"


class WorkFlow(AsyncParallelBatchFlow):
    """Runs its sub-flow once per job dict that ``source`` yields."""

    def __init__(self, source: Any, start: Any, **options: Any) -> None:
        super().__init__(start, **options)
        self.source = source
        self.post_calls: list[tuple[Any, Any]] = []

    async def prep_async(self, shared: Any) -> Any:
        return self.source

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        self.post_calls.append((prep_res, exec_res))
        shared["results"] = exec_res
        return "posted"


KINDS = ["node", "flow"]


def build(kind: str, source: Any, tracker: Tracker, **options: Any) -> Any:
    if kind == "node":
        return WorkNode(source, tracker, **options)
    return WorkFlow(source, Step(tracker), **options)


def expected_ok(kind: str, index: int) -> Any:
    """What one successful item contributes to the results list."""
    return ("ok", index) if kind == "node" else f"act{index}"


def live_tasks() -> set[asyncio.Task[Any]]:
    return set(asyncio.all_tasks())


async def run(obj: Any, shared: dict[str, Any] | None = None) -> Any:
    return await asyncio.wait_for(obj.run_async({} if shared is None else shared), TIMEOUT)


# -- max_concurrency ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_max_concurrency_bounds_and_reaches_peak(kind: str, source: str, limit: int) -> None:
    """Peak in-flight items equals max_concurrency when there are more items than that."""
    tracker = Tracker()
    # Items outlast the few loop iterations an async generator needs per pull, so
    # every slot fills up; the varying lengths keep completions staggered.
    jobs = [job(i, yields=3 * limit + i % 4) for i in range(5 * limit + 3)]
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=limit)
    shared: dict[str, Any] = {}
    await run(obj, shared)
    assert tracker.peak == limit
    assert sorted(tracker.finished) == list(range(len(jobs)))
    if kind == "node":
        assert shared["results"] == [("ok", i) for i in range(len(jobs))]
    else:
        assert shared["results"] is None  # raise mode: post_async gets None, as in PocketFlow


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
async def test_max_concurrency_larger_than_batch(kind: str, source: str) -> None:
    """With fewer items than max_concurrency all items run at once, and no more."""
    tracker = Tracker()
    jobs = [job(i, yields=3) for i in range(4)]
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=50)
    await run(obj)
    assert tracker.peak == 4
    assert sorted(tracker.finished) == [0, 1, 2, 3]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
async def test_unbounded_runs_everything_at_once(kind: str, source: str) -> None:
    """max_concurrency=None starts every item before any finishes."""
    tracker = Tracker()
    jobs = [job(i, yields=2) for i in range(30)]
    obj = build(kind, make_source(source, tracker, jobs), tracker)
    await run(obj)
    assert tracker.peak == 30
    assert sorted(tracker.finished) == list(range(30))


@pytest.mark.asyncio
async def test_flow_bound_counts_whole_sub_flow_runs() -> None:
    """max_concurrency bounds sub-flow runs from their first node to their last."""
    runs = {"in_flight": 0, "peak": 0, "done": 0}

    class First(AsyncNode):
        async def prep_async(self, shared: Any) -> Any:
            runs["in_flight"] += 1
            runs["peak"] = max(runs["peak"], runs["in_flight"])
            await asyncio.sleep(0)

    class Last(AsyncNode):
        async def exec_async(self, _: Any) -> Any:
            for _ in range(self.params["n"] % 3 + 1):
                await asyncio.sleep(0)

        async def post_async(self, shared: Any, p: Any, e: Any) -> Any:
            runs["in_flight"] -= 1
            runs["done"] += 1

    class PerN(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return ({"n": n} for n in range(40))

    first = First()
    _ = first >> Last()
    await run(PerN(start=first, max_concurrency=6))
    assert runs == {"in_flight": 0, "peak": 6, "done": 40}


# -- laziness ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", ["generator", "async_generator"])
async def test_items_are_pulled_lazily(kind: str, source: str) -> None:
    """Items pulled but not done never exceed max_concurrency; live tasks stay ~N."""
    limit, count = 10, 20_000 if kind == "node" else 5_000
    tracker = Tracker()
    baseline = len(asyncio.all_tasks())
    jobs = (job(i, yields=1 + i % 3) for i in range(count))
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=limit)
    await run(obj)
    assert tracker.pulled == count
    assert len(tracker.finished) == count
    assert tracker.max_backlog <= limit
    assert tracker.peak == limit
    # The test's own task (+ wait_for's) and one worker per slot, nothing per item.
    assert tracker.max_tasks <= baseline + 1 + limit
    assert len(asyncio.all_tasks()) == baseline


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", ["generator", "async_generator"])
async def test_million_item_generator_stops_at_failure(kind: str, source: str) -> None:
    """A 1,000,000-item generator is only pulled up to the failure plus the window."""
    limit, fail_at = 10, 300
    tracker = Tracker()
    boom = Boom(fail_at)
    jobs = (job(i, yields=1, exc=boom if i == fail_at else None) for i in range(1_000_000))
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=limit)
    with pytest.raises(Boom) as info:
        await run(obj)
    assert info.value is boom
    assert tracker.max_backlog <= limit
    # Up to `limit` pulled while item 300 ran, plus (sync sources only) up to
    # limit - 1 pulled in the failure's own tick: see test_raise_starts_no_item_after_failure.
    assert tracker.pulled <= fail_at + 2 * limit


# -- async iterables ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("limit", [None, 1, 4])
async def test_async_generator_source(kind: str, limit: int | None) -> None:
    """An async generator from prep_async works bounded and unbounded, in order."""
    tracker = Tracker()
    jobs = [job(i, yields=(7 * i) % 5) for i in range(25)]
    obj = build(
        kind,
        acounted(tracker, jobs, yields=2),
        tracker,
        max_concurrency=limit,
        on_item_error="collect",
    )
    shared: dict[str, Any] = {}
    await run(obj, shared)
    assert shared["results"] == [expected_ok(kind, i) for i in range(25)]
    assert tracker.peak <= (limit or 25)
    if limit is not None:
        assert tracker.max_backlog <= limit


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("limit", [None, 3])
async def test_empty_and_none_batches(kind: str, limit: int | None) -> None:
    """An empty list, empty async generator or None gives an empty batch."""

    async def nothing() -> AsyncIterator[Any]:
        return
        yield  # pragma: no cover

    for source in ([], None, nothing(), iter(())):
        tracker = Tracker()
        obj = build(kind, source, tracker, max_concurrency=limit, on_item_error="collect")
        shared: dict[str, Any] = {}
        assert await run(obj, shared) == "posted"
        assert shared["results"] == []
        assert tracker.started == []


# -- order -------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("limit", [None, 1, 5])
async def test_results_keep_input_order(kind: str, source: str, limit: int | None) -> None:
    """Results are in input order even when later items finish first."""
    tracker = Tracker()
    n = 20
    jobs = [job(i, yields=3 * (n - i)) for i in range(n)]
    obj = build(
        kind,
        make_source(source, tracker, jobs),
        tracker,
        max_concurrency=limit,
        on_item_error="collect",
    )
    shared: dict[str, Any] = {}
    await run(obj, shared)
    if limit != 1:
        assert tracker.finished != sorted(tracker.finished)  # really out of order
    assert shared["results"] == [expected_ok(kind, i) for i in range(n)]


# -- on_item_error="raise" ---------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("limit", [None, 4])
async def test_raise_propagates_original_and_cancels_in_flight(
    kind: str, source: str, limit: int | None
) -> None:
    """The first failure propagates as itself; in-flight items are cancelled and awaited."""
    tracker = Tracker()
    boom = Boom("item 2")
    jobs = [
        job(i, yields=2 if i == 2 else 50, exc=boom if i == 2 else None, cleanup_yields=3)
        for i in range(20)
    ]
    before = live_tasks()
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=limit)
    with pytest.raises(Boom) as info:
        await run(obj)
    assert info.value is boom
    assert not isinstance(info.value, BaseExceptionGroup)
    assert live_tasks() == before
    assert tracker.failed == [2]
    assert tracker.finished == []
    assert sorted(tracker.started) == sorted(tracker.finished + tracker.failed + tracker.cancelled)
    assert sorted(tracker.cancelled) == sorted(set(tracker.started) - {2})
    assert len(tracker.cancelled) == (limit or 20) - 1
    assert tracker.started_after_failure == []
    assert tracker.in_flight == 0
    assert obj.post_calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "source",
    [
        "list",
        "generator",
        "async_generator",
    ],
)
async def test_raise_starts_no_item_after_failure(kind: str, source: str) -> None:
    """No item starts after an item failed, even if others finish in the same tick."""
    tracker = Tracker()
    boom = Boom("first")
    # Every item takes the same number of steps, so item 0 fails in the same loop
    # iteration in which items 1..3 succeed.
    jobs = [job(i, yields=2, exc=boom if i == 0 else None) for i in range(20)]
    before = live_tasks()
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=4)
    with pytest.raises(Boom) as info:
        await run(obj)
    assert info.value is boom
    assert live_tasks() == before
    assert tracker.started_after_failure == []
    assert sorted(tracker.started) == [0, 1, 2, 3]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_raise_with_retries_propagates_last_attempt(kind: str) -> None:
    """With retries, raise mode propagates the failing item's exception after all attempts."""
    tracker = Tracker()
    boom = Boom("always")
    jobs = [job(i, yields=1, exc=boom if i == 1 else None) for i in range(3)]
    if kind == "node":
        obj: Any = WorkNode(jobs, tracker, max_retries=3, max_concurrency=1)
    else:
        step = Step(tracker)
        step.max_retries = 3
        obj = WorkFlow(jobs, step, max_concurrency=1)
    with pytest.raises(Boom) as info:
        await run(obj)
    assert info.value is boom
    assert tracker.failed == [1, 1, 1]
    assert tracker.finished == [0]


CUR_RETRY_BUG = (
    "bug: cur_retry is one attribute on the shared node, so concurrent items overwrite "
    "each other's attempt number (same as PocketFlow's AsyncParallelBatchNode)"
)


@pytest.mark.asyncio
async def test_cur_retry_is_per_item() -> None:
    """During exec_async, self.cur_retry is this item's attempt number, from 0."""
    calls: dict[int, int] = {}
    seen: dict[int, list[int]] = {}

    class FailOnce(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return range(4)

        async def exec_async(self, i: int) -> Any:
            calls[i] = calls.get(i, 0) + 1
            await asyncio.sleep(0)
            seen.setdefault(i, []).append(self.cur_retry)
            if calls[i] == 1:
                raise Boom(i)
            return i

    node = FailOnce(max_retries=2, max_concurrency=2, on_item_error="collect")
    await run(node)
    assert seen == {i: [0, 1] for i in range(4)}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
async def test_unbounded_starts_every_item_before_a_failure_as_gather(
    kind: str, source: str
) -> None:
    """No options: every item starts, as asyncio.gather starts them, even when item 0
    fails before its first await; the others are then cancelled and awaited."""
    tracker = Tracker()
    boom = Boom("at once")
    jobs = [job(i, yields=0 if i == 0 else 5, exc=boom if i == 0 else None) for i in range(10)]
    before = live_tasks()
    obj = build(kind, make_source(source, tracker, jobs), tracker)
    with pytest.raises(Boom) as info:
        await run(obj)
    assert info.value is boom
    assert sorted(tracker.started) == list(range(10))
    assert tracker.failed == [0]
    assert sorted(tracker.cancelled) == list(range(1, 10))
    assert tracker.finished == []
    assert live_tasks() == before


def pocketflow_calls(mod: Any) -> int:
    """PocketFlow code: a parallel batch node whose first item fails at once; how many
    exec_async calls were made (run on ``mod``, pocketflow or pocketbatch)."""
    calls = []

    class Fetch(mod.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, n):
            calls.append(n)
            if n == 0:
                raise ValueError("first")
            await asyncio.sleep(0)
            return n

    class PerItem(mod.AsyncNode):
        async def exec_async(self, _):
            calls.append(self.params["n"])
            if self.params["n"] == 0:
                raise ValueError("first")
            await asyncio.sleep(0)

    class Each(mod.AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": n} for n in range(6)]

    async def main() -> None:
        for runnable in (Fetch(), Each(start=PerItem())):
            with pytest.raises(ValueError, match="first"):
                await runnable.run_async({})

    asyncio.run(main())
    return len(calls)


def test_unbounded_makes_as_many_calls_as_pocketflow() -> None:
    """The same PocketFlow program makes the same number of calls on both libraries."""
    import pocketflow

    import pocketbatch

    assert pocketflow_calls(pocketflow) == 12
    assert pocketflow_calls(pocketbatch) == 12


# -- on_item_error="collect" -------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("limit", [None, 1, 3])
async def test_collect_runs_every_item(kind: str, source: str, limit: int | None) -> None:
    """Collect mode runs every item and puts ItemError(index, exc, 1) at failed positions."""
    tracker = Tracker()
    n = 17
    excs = {i: Boom(i) for i in range(n) if i % 4 == 1}
    jobs = [job(i, yields=(5 * i) % 7, exc=excs.get(i)) for i in range(n)]
    obj = build(
        kind,
        make_source(source, tracker, jobs),
        tracker,
        max_concurrency=limit,
        on_item_error="collect",
    )
    shared: dict[str, Any] = {}
    assert await run(obj, shared) == "posted"
    assert sorted(tracker.started) == list(range(n))
    assert tracker.cancelled == []
    results = shared["results"]
    assert len(results) == n
    for i, result in enumerate(results):
        if i in excs:
            assert isinstance(result, ItemError)
            assert result.index == i
            assert result.exception is excs[i]
            assert result.attempts == 1
        else:
            assert result == expected_ok(kind, i)
    assert len(obj.post_calls) == 1
    assert obj.post_calls[0][1] is results


@pytest.mark.asyncio
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("limit", [None, 2])
async def test_collect_counts_attempts_with_retries(source: str, limit: int | None) -> None:
    """ItemError.attempts equals max_retries when every attempt fails."""
    tracker = Tracker()
    boom = Boom("x")
    jobs = [job(i, yields=1, exc=boom if i in (0, 3) else None) for i in range(5)]
    node = WorkNode(
        make_source(source, tracker, jobs),
        tracker,
        max_retries=3,
        max_concurrency=limit,
        on_item_error="collect",
    )
    shared: dict[str, Any] = {}
    await run(node, shared)
    assert shared["results"] == [
        ItemError(0, boom, 3),
        ("ok", 1),
        ("ok", 2),
        ItemError(3, boom, 3),
        ("ok", 4),
    ]
    assert sorted(tracker.failed) == [0, 0, 0, 3, 3, 3]


@pytest.mark.asyncio
async def test_collect_attempts_when_retry_on_does_not_match() -> None:
    """An exception outside retry_on is not retried: attempts == 1."""
    tracker = Tracker()
    boom = Boom("not retried")
    node = WorkNode(
        [job(0, exc=boom)],
        tracker,
        max_retries=4,
        retry_on=KeyError,
        on_item_error="collect",
    )
    shared: dict[str, Any] = {}
    await run(node, shared)
    assert shared["results"] == [ItemError(0, boom, 1)]


@pytest.mark.asyncio
async def test_collect_flaky_item_succeeds_on_retry() -> None:
    """An item that fails once then succeeds gives its result, not an ItemError."""
    calls: dict[int, int] = {}

    class Flaky(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return range(6)

        async def exec_async(self, i: int) -> Any:
            calls[i] = calls.get(i, 0) + 1
            await asyncio.sleep(0)
            if i % 2 and calls[i] < 2:
                raise Boom(i)
            return i * i

        async def post_async(self, shared: Any, p: Any, results: Any) -> Any:
            shared["results"] = results

    shared: dict[str, Any] = {}
    await run(Flaky(max_retries=2, max_concurrency=3, on_item_error="collect"), shared)
    assert shared["results"] == [0, 1, 4, 9, 16, 25]
    assert calls == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1, 5: 2}


@pytest.mark.asyncio
async def test_flow_collect_gives_actions_to_post_async() -> None:
    """A collect-mode flow's post_async gets the param list and the last actions."""
    tracker = Tracker()
    boom = Boom("run 1")
    jobs = [job(i, exc=boom if i == 1 else None) for i in range(3)]
    flow = WorkFlow(jobs, Step(tracker), max_concurrency=2, on_item_error="collect")
    await run(flow)
    assert flow.post_calls == [(jobs, ["act0", ItemError(1, boom, 1), "act2"])]


@pytest.mark.asyncio
async def test_flow_raise_mode_post_async_gets_none() -> None:
    """A raise-mode parallel batch flow passes None as post_async's third argument."""
    tracker = Tracker()
    jobs = [job(i) for i in range(3)]
    flow = WorkFlow(jobs, Step(tracker), max_concurrency=2)
    await run(flow)
    assert flow.post_calls == [(jobs, None)]


@pytest.mark.asyncio
async def test_flow_sub_runs_get_their_own_params() -> None:
    """Each sub-flow run sees the flow's params merged with its own param dict."""
    seen: list[tuple[str, int]] = []

    class Record(AsyncNode):
        async def exec_async(self, _: Any) -> Any:
            await asyncio.sleep(0)
            seen.append((self.params["base"], self.params["n"]))

    class PerN(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return [{"n": n} for n in range(5)]

    flow = PerN(start=Record(), max_concurrency=2)
    flow.set_params({"base": "b", "n": -1})
    await run(flow)
    assert sorted(seen) == [("b", n) for n in range(5)]


@pytest.mark.asyncio
async def test_nested_collect_parallel_flow_can_have_a_successor() -> None:
    """A collect-mode AsyncParallelBatchFlow (default post) can be followed by a step."""
    after: list[str] = []

    class Noop(AsyncNode):
        pass

    class PerN(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return [{"n": n} for n in range(3)]

    class After(AsyncNode):
        async def exec_async(self, _: Any) -> Any:
            after.append("ran")

    assert await run(PerN(start=Noop(), on_item_error="collect")) is None
    batch = PerN(start=Noop(), on_item_error="collect")
    _ = batch >> After()
    await run(AsyncFlow(start=batch))
    assert after == ["ran"]


def test_nested_collect_batch_flow_can_have_a_successor() -> None:
    """A collect-mode BatchFlow (default post) can be followed by a step in a Flow."""
    after: list[str] = []

    class PerN(BatchFlow):
        def prep(self, shared: Any) -> Any:
            return [{"n": n} for n in range(3)]

    class After(Node):
        def exec(self, _: Any) -> Any:
            after.append("ran")

    assert PerN(start=Node(), on_item_error="collect").run({}) is None
    batch = PerN(start=Node(), on_item_error="collect")
    _ = batch >> After()
    Flow(start=batch).run({})
    assert after == ["ran"]


# -- external cancellation ---------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("limit", [None, 5])
async def test_external_cancellation_cancels_every_item(
    kind: str, source: str, limit: int | None
) -> None:
    """Cancelling the task awaiting run_async cancels and awaits every item task."""
    tracker = Tracker()
    gate = asyncio.Event()
    n = 12
    expected_running = limit or n

    jobs = [job(i, yields=1, cleanup_yields=2, gate=gate) for i in range(n)]
    obj = build(kind, make_source(source, tracker, jobs), tracker, max_concurrency=limit)
    before = live_tasks()
    task = asyncio.create_task(obj.run_async({}))
    for _ in range(1000):
        if len(tracker.started) == expected_running:
            break
        await asyncio.sleep(0)
    assert len(tracker.started) == expected_running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, TIMEOUT)
    assert task.cancelled()
    assert live_tasks() == before
    assert sorted(tracker.cancelled) == sorted(tracker.started)
    assert tracker.finished == []
    assert tracker.in_flight == 0
    assert not gate.is_set()


# -- the iterable itself raising -----------------------------------------------------------


class SourceBroke(Exception):
    """Raised by the item source, not by an item."""


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("mode", ["raise", "collect"])
@pytest.mark.parametrize("limit", [None, 3])
async def test_source_exception_propagates(
    kind: str, asynchronous: bool, mode: str, limit: int | None
) -> None:
    """An exception from the prep iterable propagates even in collect mode, no leftovers."""
    tracker = Tracker()
    broke = SourceBroke("mid-way")

    def gen() -> Iterator[dict[str, Any]]:
        for i in range(6):
            tracker.pulled += 1
            yield job(i, yields=20, cleanup_yields=1)
        raise broke

    async def agen() -> AsyncIterator[dict[str, Any]]:
        for j in gen():
            await asyncio.sleep(0)
            yield j

    before = live_tasks()
    obj = build(
        kind,
        agen() if asynchronous else gen(),
        tracker,
        max_concurrency=limit,
        on_item_error=mode,
    )
    with pytest.raises(SourceBroke) as info:
        await run(obj)
    assert info.value is broke
    assert live_tasks() == before
    assert tracker.in_flight == 0
    assert sorted(tracker.started) == sorted(tracker.finished + tracker.cancelled)
    assert obj.post_calls == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("limit", [None, 3])
async def test_non_iterable_prep_result(kind: str, limit: int | None) -> None:
    """prep_async returning a non-iterable raises a TypeError that says so."""
    obj = build(kind, 42, Tracker(), max_concurrency=limit)
    with pytest.raises(TypeError, match="not iterable"):
        await run(obj)


# -- argument validation ------------------------------------------------------------------


def make_node(**options: Any) -> Any:
    return AsyncParallelBatchNode(**options)


def make_flow(**options: Any) -> Any:
    return AsyncParallelBatchFlow(**options)


FACTORIES = [pytest.param(make_node, id="node"), pytest.param(make_flow, id="flow")]


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_max_concurrency_validation(factory: Any, value: Any, error: type[Exception]) -> None:
    """Invalid max_concurrency raises ValueError/TypeError naming the argument."""
    with pytest.raises(error, match="max_concurrency"):
        factory(max_concurrency=value)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize("value", ["ignore", "RAISE", None])
def test_on_item_error_validation(factory: Any, value: Any) -> None:
    """on_item_error other than 'raise'/'collect' raises ValueError naming the argument."""
    with pytest.raises(ValueError, match="on_item_error"):
        factory(on_item_error=value)


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("9", TypeError)],
)
def test_max_per_second_validation(factory: Any, value: Any, error: type[Exception]) -> None:
    """Invalid max_per_second raises ValueError/TypeError naming the argument."""
    with pytest.raises(error, match="max_per_second"):
        factory(max_per_second=value)


@pytest.mark.parametrize("factory", FACTORIES)
def test_valid_options_are_kept(factory: Any) -> None:
    """Valid options are stored (privately); defaults are unbounded / raise."""
    obj = factory(max_concurrency=7, max_per_second=2.5, on_item_error="collect")
    assert (obj._pb_max_concurrency, obj._pb_max_per_second, obj._pb_on_item_error) == (
        7,
        2.5,
        "collect",
    )
    plain = factory()
    assert (plain._pb_max_concurrency, plain._pb_max_per_second, plain._pb_on_item_error) == (
        None,
        None,
        "raise",
    )


# -- workers are created lazily --------------------------------------------------------------


def _count_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count every task created on ``loop`` from now on (a one-element list)."""
    created = [0]

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created[0] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    return created


@pytest.mark.asyncio
@pytest.mark.parametrize("face", ["map", "stream", "stream-async-source"])
async def test_a_huge_limit_over_few_items_creates_a_worker_per_item_at_most(face: str) -> None:
    """--max-concurrent 1000000 over 3 inputs: 3 workers, not a million (it took 21 s, 1.1 GB)."""
    from pocketbatch.core._parallel import bounded_map, bounded_stream

    async def echo(index: int, item: int) -> int:
        await asyncio.sleep(0)
        return item

    async def agen() -> AsyncIterator[int]:
        for n in range(3):
            yield n

    loop = asyncio.get_running_loop()
    created = _count_tasks(loop)
    try:
        if face == "map":
            got = await bounded_map(echo, iter(range(3)), limit=10**6, collect=False)
            assert got == [0, 1, 2]
        else:
            source: Any = agen() if face.endswith("async-source") else iter(range(3))
            pairs = [p async for p in bounded_stream(echo, source, limit=10**6, ordered=True)]
            assert pairs == [(0, 0), (1, 1), (2, 2)]
    finally:
        loop.set_task_factory(None)
    # One worker per item; the stream adds its one pool task.
    assert created[0] <= 3 + (face != "map")


@pytest.mark.asyncio
async def test_workers_are_reused_not_made_per_item() -> None:
    """1000 items at limit 4: 4 workers, each pulling item after item."""
    from pocketbatch.core._parallel import bounded_map

    tracker = Tracker()

    async def item(index: int, n: int) -> int:
        tracker.in_flight += 1
        tracker.peak = max(tracker.peak, tracker.in_flight)
        await asyncio.sleep(0)
        tracker.in_flight -= 1
        return n

    loop = asyncio.get_running_loop()
    created = _count_tasks(loop)
    try:
        got = await bounded_map(item, (n for n in range(1000)), limit=4, collect=False)
    finally:
        loop.set_task_factory(None)
    assert got == list(range(1000))
    assert tracker.peak == 4
    assert created[0] == 4
