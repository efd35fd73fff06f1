"""The batch runner (pocketbatch/batch/_runner.py): ``evaluate_batch``, ``run_batch``,
``iter_batch`` and the engine under them, ``stream_results``.

The contract (DESIGN.md §3, issue 4): one ``FlowResult`` per input, in input order
for ``evaluate_batch``; inputs from any iterable or async iterable, consumed lazily
with about ``max_concurrency`` items in flight; a failing item fails only itself;
``on_error="raise"`` raises :class:`BatchItemError` and cancels what is in flight;
loaded flows and core ``Flow``/``AsyncFlow`` (``shared["input"]`` in,
``shared["output"]`` out) both work.

Every test that could hang is bounded with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from pocketbatch import (
    AsyncFlow,
    AsyncNode,
    ComponentRegistry,
    Event,
    EventKind,
    Flow,
    Node,
    ObserverError,
    load_flow,
)
from pocketbatch.batch import (
    INPUT_KEY,
    OUTPUT_KEY,
    AsyncExecutor,
    BatchItemError,
    InputProblem,
    evaluate_batch,
    iter_batch,
    run_batch,
)
from pocketbatch.batch._runner import stream_results
from pocketbatch.loader import FlowResult, LoadedFlow

TIMEOUT = 30.0

FLOW_TEXT = """
name: work
steps:
  - id: work
    component: /t/work
    input: {$input: "$"}
output: {$step: work}
"""


def registry_flow(work: Any) -> LoadedFlow:
    """A one-step flow file whose step is ``work`` (a function or async function)."""
    components = ComponentRegistry()
    components.register("/t/work", work)
    return load_flow(FLOW_TEXT, registry=components)


async def double(data: dict[str, Any]) -> dict[str, Any]:
    for _ in range(data.get("yields", 0)):
        await asyncio.sleep(0)
    if data.get("fail"):
        raise ValueError(f"item {data['i']} fails")
    return {"i": data["i"], "twice": 2 * data["i"]}


DOUBLE = registry_flow(double)


def others() -> set[asyncio.Task[Any]]:
    """The tasks of this loop besides the current one."""
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


class Counted:
    """A generator of ``n`` inputs that counts how many were pulled."""

    def __init__(self, n: int, make: Any = lambda i: {"i": i}) -> None:
        self.n = n
        self.make = make
        self.pulled = 0

    def __iter__(self) -> Iterator[Any]:
        for i in range(self.n):
            self.pulled += 1
            yield self.make(i)


# -- results, order, laziness --------------------------------------------------------------


@pytest.mark.asyncio
async def test_evaluate_batch_returns_results_in_input_order() -> None:
    inputs = [{"i": i, "yields": (7 * i) % 5} for i in range(50)]  # finish out of order
    results = await asyncio.wait_for(evaluate_batch(DOUBLE, inputs, max_concurrency=6), TIMEOUT)
    assert all(isinstance(r, FlowResult) for r in results)
    assert [r.result for r in results] == [{"i": i, "twice": 2 * i} for i in range(50)]


@pytest.mark.asyncio
async def test_evaluate_batch_no_inputs() -> None:
    assert await evaluate_batch(DOUBLE, []) == []
    assert [pair async for pair in iter_batch(DOUBLE, iter(()))] == []


@pytest.mark.asyncio
async def test_a_failing_item_fails_only_itself() -> None:
    inputs = [{"i": i, "fail": i in (3, 7)} for i in range(10)]
    results = await asyncio.wait_for(evaluate_batch(DOUBLE, inputs, max_concurrency=3), TIMEOUT)
    assert [r.ok for r in results] == [i not in (3, 7) for i in range(10)]
    assert results[3].error is not None
    assert results[3].error.code == "COMPONENT_FAILED"
    assert "item 3 fails" in results[3].error.message
    assert results[4].result == {"i": 4, "twice": 8}


@pytest.mark.asyncio
async def test_each_input_runs_exactly_once() -> None:
    calls: list[int] = []

    async def work(data: dict[str, Any]) -> int:
        calls.append(data["i"])
        await asyncio.sleep(0)
        return int(data["i"])

    flow = registry_flow(work)
    results = await asyncio.wait_for(
        evaluate_batch(flow, ({"i": i} for i in range(200)), max_concurrency=16), TIMEOUT
    )
    assert sorted(calls) == list(range(200))
    assert [r.result for r in results] == list(range(200))


@pytest.mark.asyncio
async def test_max_concurrency_items_really_run_together() -> None:
    """With max_concurrency=N, N items are in flight at once (the batch is not serial):
    each item waits until N have started."""
    n = 5
    started = 0
    everyone = asyncio.Event()

    async def work(data: dict[str, Any]) -> int:
        nonlocal started
        started += 1
        if started >= n:
            everyone.set()
        await everyone.wait()
        return int(data["i"])

    results = await asyncio.wait_for(
        evaluate_batch(registry_flow(work), [{"i": i} for i in range(3 * n)], max_concurrency=n),
        TIMEOUT,
    )
    assert [r.result for r in results] == list(range(3 * n))


@pytest.mark.asyncio
@pytest.mark.parametrize("ordered", [False, True])
async def test_inputs_are_consumed_lazily_and_closing_leaves_no_tasks(ordered: bool) -> None:
    before = others()
    source = Counted(10**6, lambda i: {"i": i, "yields": i % 4})
    stream = iter_batch(DOUBLE, iter(source), max_concurrency=8, ordered=ordered)
    got = []

    async def consume() -> None:
        async for index, result in stream:
            got.append(index)
            assert result.ok
            if len(got) == 100:
                break

    await asyncio.wait_for(consume(), TIMEOUT)
    window = 4 * 8  # the default reorder window / back-pressure bound
    assert source.pulled <= 100 + window, source.pulled
    if ordered:
        assert got == list(range(100))
    assert len(set(got)) == 100
    await asyncio.wait_for(stream.aclose(), TIMEOUT)
    pulled = source.pulled
    await asyncio.sleep(0)
    assert others() == before  # no worker task outlives the stream
    assert source.pulled == pulled  # and nothing is pulled after closing


@pytest.mark.asyncio
async def test_stream_results_pulls_at_most_a_window_ahead_of_the_oldest_item() -> None:
    """While item 0 is held, exactly a window of inputs is read, and no more."""
    release = asyncio.Event()
    source = Counted(10**6)

    async def work(data: dict[str, Any]) -> int:
        if data["i"] == 0:
            await release.wait()
        return int(data["i"])

    flow = registry_flow(work)
    stream = stream_results(
        AsyncExecutor(flow), iter(source), max_concurrency=4, ordered=True, window=10
    )
    async with aclosing(stream):
        task = asyncio.ensure_future(anext(stream))
        for _ in range(200):  # let the workers run as far as they can
            await asyncio.sleep(0)
        assert not task.done()
        assert source.pulled == 10  # the window, not more
        release.set()
        assert await asyncio.wait_for(task, TIMEOUT) == (
            0,
            FlowResult("success", 0, steps={"work": "completed"}),
        )


@pytest.mark.asyncio
async def test_async_iterable_inputs() -> None:
    async def agen() -> AsyncIterator[dict[str, Any]]:
        for i in range(30):
            await asyncio.sleep(0)
            yield {"i": i}

    class Custom:
        """An async iterable that is not an async generator."""

        def __init__(self) -> None:
            self.i = 0

        def __aiter__(self) -> Custom:
            return self

        async def __anext__(self) -> dict[str, Any]:
            if self.i == 30:
                raise StopAsyncIteration
            self.i += 1
            return {"i": self.i - 1}

    for source in (agen(), Custom()):
        results = await asyncio.wait_for(evaluate_batch(DOUBLE, source, max_concurrency=4), TIMEOUT)
        assert [r.result["i"] for r in results] == list(range(30))


@pytest.mark.asyncio
async def test_async_iterable_inputs_are_consumed_lazily() -> None:
    pulled = 0

    async def agen() -> AsyncIterator[dict[str, Any]]:
        nonlocal pulled
        for i in range(10**6):
            pulled += 1
            yield {"i": i, "yields": 2}

    before = others()
    async with aclosing(iter_batch(DOUBLE, agen(), max_concurrency=8)) as stream:
        count = 0
        async for _ in stream:
            count += 1
            if count == 100:
                break
    assert pulled <= 100 + 4 * 8
    await asyncio.sleep(0)
    assert others() == before


@pytest.mark.asyncio
async def test_iter_batch_yields_each_index_once_and_ordered_in_order() -> None:
    inputs = [{"i": i, "yields": (i * 13) % 7} for i in range(60)]
    unordered = [i async for i, _ in iter_batch(DOUBLE, inputs, max_concurrency=8)]
    assert sorted(unordered) == list(range(60))
    assert unordered != list(range(60))  # they did finish out of order
    ordered = [i async for i, _ in iter_batch(DOUBLE, inputs, max_concurrency=8, ordered=True)]
    assert ordered == list(range(60))


@pytest.mark.asyncio
async def test_an_input_iterable_that_raises_stops_the_batch() -> None:
    def broken() -> Iterator[dict[str, Any]]:
        yield {"i": 0}
        yield {"i": 1}
        raise OSError("disk gone")

    before = others()
    with pytest.raises(OSError, match="disk gone"):
        await asyncio.wait_for(evaluate_batch(DOUBLE, broken(), max_concurrency=2), TIMEOUT)
    await asyncio.sleep(0)
    assert others() == before


# -- on_error="raise" -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_on_error_raise_raises_batch_item_error_and_cancels_the_rest() -> None:
    never = asyncio.Event()
    cancelled = 0
    finished = 0

    async def work(data: dict[str, Any]) -> int:
        nonlocal cancelled, finished
        if data["i"] == 5:
            raise ValueError("five")
        try:
            if data["i"] > 5:
                await never.wait()  # would hang forever if not cancelled
        except asyncio.CancelledError:
            cancelled += 1
            raise
        finished += 1
        return int(data["i"])

    flow = registry_flow(work)
    before = others()
    with pytest.raises(BatchItemError) as caught:
        await asyncio.wait_for(
            evaluate_batch(
                flow, [{"i": i} for i in range(100)], max_concurrency=4, on_error="raise"
            ),
            TIMEOUT,
        )
    error = caught.value
    assert error.index == 5
    assert isinstance(error.result, FlowResult)
    assert not error.result.ok
    assert error.result.error is not None
    assert error.result.error.code == "COMPONENT_FAILED"
    assert "batch item 5 failed" in str(error)
    assert "COMPONENT_FAILED" in str(error)
    await asyncio.sleep(0)
    assert others() == before
    assert cancelled >= 1  # items held by `never` were cancelled, not left running
    assert finished == 5  # items 0..4


@pytest.mark.asyncio
async def test_on_error_raise_with_no_failure_returns_everything() -> None:
    results = await evaluate_batch(DOUBLE, [{"i": i} for i in range(20)], on_error="raise")
    assert [r.result["i"] for r in results] == list(range(20))


@pytest.mark.asyncio
async def test_on_error_raise_for_an_input_problem() -> None:
    with pytest.raises(BatchItemError) as caught:
        await evaluate_batch(
            DOUBLE, [{"i": 0}, InputProblem("INVALID_JSON", "line 2: x")], on_error="raise"
        )
    assert caught.value.index == 1
    assert caught.value.result.error is not None
    assert caught.value.result.error.code == "INVALID_JSON"


def test_batch_item_error_pickles() -> None:
    from pocketbatch.loader import FlowError

    error = BatchItemError(3, FlowResult("failed", error=FlowError("X", "why")))
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.index, copy.result, str(copy)) == (3, error.result, str(error))


@pytest.mark.asyncio
async def test_bad_on_error() -> None:
    with pytest.raises(ValueError, match="on_error"):
        await evaluate_batch(DOUBLE, [], on_error="ignore")  # type: ignore[arg-type]


# -- core flows -----------------------------------------------------------------------------


class Square(Node):
    def prep(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]

    def exec(self, x: Any) -> Any:
        if x == 13:
            raise ArithmeticError("unlucky")
        return x * x

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = {"square": exec_res, "thread": threading.get_ident()}


class AsyncSquare(AsyncNode):
    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]

    async def exec_async(self, x: Any) -> Any:
        await asyncio.sleep(0)
        if x == 13:
            raise ArithmeticError("unlucky")
        return x * x

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = {"square": exec_res}


class AddOne(AsyncNode):
    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return shared[OUTPUT_KEY]["square"]

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = {"square": prep_res, "plus_one": prep_res + 1}


class NoOutput(Node):
    def prep(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]


@pytest.mark.asyncio
async def test_core_sync_flow_target() -> None:
    results = await asyncio.wait_for(
        evaluate_batch(Flow(start=Square()), list(range(20)), max_concurrency=4), TIMEOUT
    )
    assert [r.result["square"] if r.ok else None for r in results] == [
        None if i == 13 else i * i for i in range(20)
    ]
    # a sync flow runs off the event loop
    assert threading.get_ident() not in {r.result["thread"] for r in results if r.ok}
    failed = results[13]
    assert failed.outcome == "failed"
    assert failed.error is not None
    assert failed.error.code == "COMPONENT_FAILED"
    assert "ArithmeticError" in failed.error.message
    assert "unlucky" in failed.error.message


@pytest.mark.asyncio
async def test_core_async_flow_target() -> None:
    start = AsyncSquare()
    start >> AddOne()
    results = await asyncio.wait_for(
        evaluate_batch(AsyncFlow(start=start), list(range(20)), max_concurrency=4), TIMEOUT
    )
    for i, result in enumerate(results):
        if i == 13:
            assert result.error is not None
            assert result.error.code == "COMPONENT_FAILED"
            assert "unlucky" in result.error.message
        else:
            assert result.result == {"square": i * i, "plus_one": i * i + 1}


@pytest.mark.asyncio
async def test_core_node_target_and_missing_output() -> None:
    results = await evaluate_batch(AsyncSquare(), [2, 3])
    assert [r.result for r in results] == [{"square": 4}, {"square": 9}]
    results = await evaluate_batch(Flow(start=NoOutput()), [1, 2])
    assert [r.to_dict() for r in results] == [{"outcome": "success", "result": None}] * 2


@pytest.mark.asyncio
async def test_core_flow_items_each_get_their_own_shared_store() -> None:
    class Remember(AsyncNode):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            shared.setdefault("seen", []).append(shared[INPUT_KEY])
            await asyncio.sleep(0)
            return list(shared["seen"])

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared[OUTPUT_KEY] = prep_res

    results = await evaluate_batch(AsyncFlow(start=Remember()), list(range(10)), max_concurrency=5)
    assert [r.result for r in results] == [[i] for i in range(10)]


@pytest.mark.asyncio
async def test_not_a_flow_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="LoadedFlow"):
        await evaluate_batch(lambda x: x, [1])  # type: ignore[arg-type]


# -- run_batch ------------------------------------------------------------------------------


def test_run_batch_is_the_sync_twin() -> None:
    inputs = [{"i": i, "fail": i == 2, "yields": i % 3} for i in range(10)]
    results = run_batch(DOUBLE, inputs, max_concurrency=3)
    assert results == asyncio.run(evaluate_batch(DOUBLE, inputs, max_concurrency=3))
    assert [r.ok for r in results] == [i != 2 for i in range(10)]
    with pytest.raises(BatchItemError) as caught:
        run_batch(DOUBLE, inputs, on_error="raise")
    assert caught.value.index == 2
    core = run_batch(Flow(start=Square()), [1, 2, 3])
    assert [r.result["square"] for r in core] == [1, 4, 9]


@pytest.mark.asyncio
async def test_run_batch_inside_an_event_loop_raises_cleanly() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError):
            run_batch(DOUBLE, [{"i": 0}])
        gc.collect()
    assert [str(w.message) for w in caught] == []


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [0, -1, -100])
async def test_bad_max_concurrency_is_a_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        await evaluate_batch(DOUBLE, [{"i": 0}], max_concurrency=bad)
    with pytest.raises(ValueError, match="max_concurrency"):
        async for _ in iter_batch(DOUBLE, [{"i": 0}], max_concurrency=bad):
            pass
    with pytest.raises(ValueError, match="max_concurrency"):
        async for _ in stream_results(AsyncExecutor(DOUBLE), [{"i": 0}], max_concurrency=bad):
            pass


def test_bad_max_concurrency_run_batch() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        run_batch(DOUBLE, [{"i": 0}], max_concurrency=0)


@pytest.mark.asyncio
async def test_bad_executor_name() -> None:
    with pytest.raises(ValueError, match="executor"):
        await evaluate_batch(DOUBLE, [{"i": 0}], executor="thread")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_an_executor_object_is_used_as_is() -> None:
    seen: list[int] = []

    class Recording:
        async def __aenter__(self) -> Recording:
            return self

        async def __aexit__(self, *exc: object) -> None:
            return None

        async def run(self, index: int, item: Any) -> FlowResult:
            seen.append(index)
            return FlowResult("success", item * 10)

    results = await evaluate_batch(DOUBLE, [1, 2, 3], executor=Recording())  # type: ignore[arg-type]
    assert [r.result for r in results] == [10, 20, 30]
    assert sorted(seen) == [0, 1, 2]


# -- InputProblem ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_input_problems_fail_without_running_the_flow() -> None:
    calls: list[Any] = []

    async def work(data: Any) -> Any:
        calls.append(data)
        return data

    inputs: list[Any] = [
        {"i": 0},
        InputProblem("INVALID_JSON", "line 2: not valid JSON"),
        {"i": 2},
        InputProblem("INVALID_INPUT", "line 4: expected a JSON object, got array"),
    ]
    results = await evaluate_batch(registry_flow(work), inputs)
    assert calls == [{"i": 0}, {"i": 2}]
    assert results[1].to_dict() == {
        "outcome": "failed",
        "error": {"code": "INVALID_JSON", "message": "line 2: not valid JSON"},
    }
    assert results[3].error is not None
    assert results[3].error.code == "INVALID_INPUT"
    assert results[0].ok
    assert results[2].ok

    core_calls = 0

    class Count(AsyncNode):
        async def prep_async(self, shared: dict[str, Any]) -> None:
            nonlocal core_calls
            core_calls += 1

    core = await evaluate_batch(AsyncFlow(start=Count()), [InputProblem("X", "y"), 1])
    assert core_calls == 1
    assert [r.outcome for r in core] == ["failed", "success"]


# -- observer -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_observer_gets_item_events_for_every_index() -> None:
    events: list[Event] = []
    inputs: list[Any] = [{"i": i, "fail": i % 5 == 1, "yields": i % 3} for i in range(20)]
    inputs[7] = InputProblem("INVALID_JSON", "line 8: bad")
    results = await evaluate_batch(DOUBLE, inputs, max_concurrency=4, observer=events.append)
    items = [e for e in events if e.kind.startswith("item_")]
    assert all(e.node == "work" for e in items)
    for index, result in enumerate(results):
        mine = [e.kind for e in items if e.item == index]
        end = EventKind.ITEM_FINISHED if result.ok else EventKind.ITEM_FAILED
        assert mine == [EventKind.ITEM_STARTED, end], (index, mine)
    failed = {e.item for e in items if e.kind is EventKind.ITEM_FAILED}
    assert failed == {1, 6, 7, 11, 16}
    # in-process, the flows' own events reach the observer too
    assert any(e.kind is EventKind.NODE_STARTED for e in events)


@pytest.mark.asyncio
async def test_observer_with_a_core_flow() -> None:
    events: list[Event] = []
    await evaluate_batch(AsyncFlow(start=AsyncSquare()), [1, 13, 2], observer=events.append)
    items = sorted((e.item, e.kind) for e in events if e.kind.startswith("item_"))
    assert items == [
        (0, EventKind.ITEM_FINISHED),
        (0, EventKind.ITEM_STARTED),
        (1, EventKind.ITEM_FAILED),
        (1, EventKind.ITEM_STARTED),
        (2, EventKind.ITEM_FINISHED),
        (2, EventKind.ITEM_STARTED),
    ]


@pytest.mark.asyncio
async def test_stream_results_observer_name() -> None:
    events: list[Event] = []
    stream = stream_results(
        AsyncExecutor(DOUBLE), [{"i": 0}], max_concurrency=1, observer=events.append, name="nm"
    )
    assert [i async for i, _ in stream] == [0]
    assert [(e.kind, e.node, e.item) for e in events] == [
        (EventKind.ITEM_STARTED, "nm", 0),
        (EventKind.ITEM_FINISHED, "nm", 0),
    ]


@pytest.mark.asyncio
async def test_a_raising_observer_stops_the_batch_with_observer_error() -> None:
    def observer(event: Event) -> None:
        if event.kind is EventKind.ITEM_FINISHED:
            raise ValueError("observer bug")

    flow = load_flow("output: {$input: i}\n")
    with pytest.raises(ObserverError):
        await asyncio.wait_for(evaluate_batch(flow, [{"i": 1}] * 5, observer=observer), TIMEOUT)


@pytest.mark.asyncio
async def test_a_raising_observer_stops_the_batch_and_leaves_no_tasks() -> None:
    def observer(event: Event) -> None:
        if event.kind is EventKind.ITEM_FINISHED and event.item == 3:
            raise ValueError("observer bug")

    before = others()
    with pytest.raises((ValueError, ObserverError)):
        await asyncio.wait_for(
            evaluate_batch(DOUBLE, [{"i": i} for i in range(50)], observer=observer), TIMEOUT
        )
    await asyncio.sleep(0)
    assert others() == before


# -- stream_results: start, stop, window ----------------------------------------------------


@pytest.mark.asyncio
async def test_stream_results_start_numbers_from_start() -> None:
    stream = stream_results(
        AsyncExecutor(DOUBLE),
        [{"i": i} for i in range(5)],
        max_concurrency=2,
        ordered=True,
        start=10,
    )
    pairs = [(i, r.result["i"]) async for i, r in stream]
    assert pairs == [(10, 0), (11, 1), (12, 2), (13, 3), (14, 4)]


@pytest.mark.asyncio
@pytest.mark.parametrize("ordered", [False, True])
async def test_stream_results_stop_pulls_nothing_new_and_finishes_in_flight(
    ordered: bool,
) -> None:
    stop = asyncio.Event()
    source = Counted(10**6, lambda i: {"i": i, "yields": i % 5})
    got: list[int] = []
    before = others()
    stream = stream_results(
        AsyncExecutor(DOUBLE), iter(source), max_concurrency=8, ordered=ordered, stop=stop
    )

    async def consume() -> None:
        async for index, result in stream:
            assert result.ok
            got.append(index)
            if len(got) == 50:
                stop.set()

    await asyncio.wait_for(consume(), TIMEOUT)  # ends by itself once stopped
    # every input pulled was run and yielded: nothing lost, nothing new after the stop
    assert len(got) == source.pulled
    assert sorted(got) == list(range(source.pulled))
    assert source.pulled <= 50 + 4 * 8
    if ordered:
        assert got == list(range(len(got)))
    assert others() == before


# -- iter_batch in sync code (issue 14) ----------------------------------------------------


def test_iter_batch_with_a_plain_for_yields_every_pair() -> None:
    """iter_batch was async-only although the README imports it next to run_batch."""
    inputs = [{"i": i, "yields": (7 * i) % 5} for i in range(40)]
    unordered = [(i, r.result) for i, r in iter_batch(DOUBLE, inputs, max_concurrency=6)]
    assert sorted(unordered) == [(i, {"i": i, "twice": 2 * i}) for i in range(40)]
    ordered = [i for i, _ in iter_batch(DOUBLE, iter(inputs), max_concurrency=6, ordered=True)]
    assert ordered == list(range(40))


def test_iter_batch_for_pulls_inputs_lazily_and_break_cancels_in_flight() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def slow(data: dict[str, Any]) -> int:
        started.append(data["i"])
        if data["i"] == 0:
            return 0
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(data["i"])
            raise
        return int(data["i"])

    source = Counted(10_000)
    pairs = iter_batch(registry_flow(slow), source, max_concurrency=4)
    for index, result in pairs:
        assert (index, result.result) == (0, 0)
        break
    pairs.close()  # (a for loop's iterator is also closed when it is dropped)
    assert sorted(cancelled) == sorted(set(started) - {0})  # none left running
    assert 3 <= len(cancelled) <= 4  # at most max_concurrency were in flight
    assert source.pulled <= 4 * 4 + 1  # the reorder window, not 10 000


def test_iter_batch_for_ends_when_dropped() -> None:
    cancelled: list[int] = []

    async def hang(data: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(data["i"])
            raise

    async def first(data: dict[str, Any]) -> Any:
        return "first" if data["i"] == 0 else await hang(data)

    for _index, _result in iter_batch(registry_flow(first), Counted(100), max_concurrency=3):
        break
    gc.collect()
    assert 2 <= len(cancelled) <= 3  # every item in flight, and only those


@pytest.mark.asyncio
async def test_iter_batch_plain_for_inside_an_event_loop_says_use_async_for() -> None:
    with pytest.raises(RuntimeError, match="use async for"):
        for _ in iter_batch(DOUBLE, [{"i": 1}]):
            pass


@pytest.mark.asyncio
async def test_iter_batch_is_one_kind_of_iteration() -> None:
    stream = iter_batch(DOUBLE, [{"i": 1}, {"i": 2}], ordered=True)
    assert (await stream.__anext__())[0] == 0
    with pytest.raises(RuntimeError, match="already iterated with async for"):
        next(stream)
    await stream.aclose()


def test_iter_batch_for_failures_are_results_not_exceptions() -> None:
    got = dict(iter_batch(DOUBLE, [{"i": 0}, {"i": 1, "fail": True}]))
    assert got[0].ok
    assert not got[1].ok
    assert "item 1 fails" in (got[1].error.message if got[1].error else "")


@pytest.mark.asyncio
async def test_evaluate_batch_of_read_lines_gives_failed_results_their_line(tmp_path: Any) -> None:
    """Issue 14: with inputs read from a file (read_inputs), every failed result knows its
    line (FlowResult.line, blank lines counted), as run-batch's records do."""
    from pocketbatch.batch._lines import read_inputs

    path = tmp_path / "in.jsonl"
    path.write_text('\n{"i": 1}\n\n{"i": 2, "fail": true}\nnot json\n', encoding="utf-8")
    results = await asyncio.wait_for(evaluate_batch(DOUBLE, read_inputs(path)), TIMEOUT)
    assert [(r.outcome, r.line) for r in results] == [
        ("success", 2),
        ("failed", 4),
        ("failed", 5),
    ]
    assert results[1].error is not None
    assert results[1].error.code == "COMPONENT_FAILED"
    assert results[0].to_dict() == {"outcome": "success", "result": {"i": 1, "twice": 2}}
