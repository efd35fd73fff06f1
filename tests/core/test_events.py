"""The observer protocol: which events a run reports, in what order, and to whom."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pocketbatch import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchNode,
    Event,
    EventKind,
    Flow,
    ItemError,
    Node,
    ObserverError,
    ParallelBatchNode,
)
from pocketbatch.core._events import current_observer


def trace(events: list[Event]) -> list[tuple[str, str]]:
    """(kind, node) pairs."""
    return [(e.kind.value, e.node) for e in events]


def item_trace(events: list[Event]) -> list[tuple[str, str, int | None]]:
    """(kind, node, item) triples."""
    return [(e.kind.value, e.node, e.item) for e in events]


class A(Node):
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("ran", []).append("A")
        return "go"


class B(Node):
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("ran", []).append("B")
        return "done"


class C(Node):
    pass


class Boom(Node):
    def exec(self, prep_res: Any) -> Any:
        raise RuntimeError("boom")


class Items(BatchNode):
    def prep(self, shared: Any) -> Any:
        return ["x", "y"]

    def exec(self, item: str) -> Any:
        return item * 2


class Param(Node):
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("params", []).append(self.params["k"])


class AsyncParam(AsyncNode):
    async def exec_async(self, prep_res: Any) -> Any:
        await asyncio.sleep(0)
        return self.params["k"]

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        if exec_res == "bad":
            raise ValueError("bad params")
        shared.setdefault("params", []).append(exec_res)
        return f"did {exec_res}"


# ---------------------------------------------------------------- sequences


def test_two_node_flow_sequence() -> None:
    """A 2-node Flow reports flow start, each node's start/finish, then flow finish."""
    a = A()
    a - "go" >> B()
    events: list[Event] = []
    result = Flow(start=a).run({}, observer=events.append)
    assert result == "done"
    assert trace(events) == [
        ("flow_started", "Flow"),
        ("node_started", "A"),
        ("node_finished", "A"),
        ("node_started", "B"),
        ("node_finished", "B"),
        ("flow_finished", "Flow"),
    ]
    assert [e.action for e in events] == [None, None, "go", None, "done", "done"]
    assert all(e.item is None and e.error is None for e in events)


def test_single_node_run_sequence() -> None:
    """Running a lone node reports NODE_STARTED and NODE_FINISHED only."""
    events: list[Event] = []
    B().run({}, observer=events.append)
    assert trace(events) == [("node_started", "B"), ("node_finished", "B")]


def test_nested_flow_events_wrap_inner_nodes() -> None:
    """A nested flow's FLOW_STARTED/FINISHED wrap its own nodes' events."""
    a = A()
    a - "go" >> B()
    inner = Flow(start=a, name="inner")
    inner - "done" >> C()
    events: list[Event] = []
    Flow(start=inner, name="outer").run({}, observer=events.append)
    assert trace(events) == [
        ("flow_started", "outer"),
        ("flow_started", "inner"),
        ("node_started", "A"),
        ("node_finished", "A"),
        ("node_started", "B"),
        ("node_finished", "B"),
        ("flow_finished", "inner"),
        ("node_started", "C"),
        ("node_finished", "C"),
        ("flow_finished", "outer"),
    ]
    assert events[6].action == "done"


def test_failing_node_reports_node_and_flow_failed() -> None:
    """NODE_FAILED and FLOW_FAILED carry the exception, which then propagates."""
    a = A()
    a - "go" >> Boom()
    events: list[Event] = []
    with pytest.raises(RuntimeError, match="boom") as info:
        Flow(start=a).run({}, observer=events.append)
    assert trace(events) == [
        ("flow_started", "Flow"),
        ("node_started", "A"),
        ("node_finished", "A"),
        ("node_started", "Boom"),
        ("node_failed", "Boom"),
        ("flow_failed", "Flow"),
    ]
    assert events[-2].error is info.value
    assert events[-1].error is info.value


def test_batch_node_item_events() -> None:
    """A BatchNode reports ITEM_STARTED/ITEM_FINISHED per index inside its node events."""
    events: list[Event] = []
    Items().run({}, observer=events.append)
    assert item_trace(events) == [
        ("node_started", "Items", None),
        ("item_started", "Items", 0),
        ("item_finished", "Items", 0),
        ("item_started", "Items", 1),
        ("item_finished", "Items", 1),
        ("node_finished", "Items", None),
    ]


def test_batch_node_retry_events_between_item_events() -> None:
    """RETRIED events sit between the item's start and its finish."""

    class Flaky(BatchNode):
        def prep(self, shared: Any) -> Any:
            return ["only"]

        def exec(self, item: str) -> Any:
            if self.cur_retry == 0:
                raise ConnectionError("once")
            return item

    events: list[Event] = []
    Flaky(max_retries=2).run({}, observer=events.append)
    assert [(e.kind.value, e.item, e.attempt) for e in events] == [
        ("node_started", None, None),
        ("item_started", 0, None),
        ("retried", 0, 1),
        ("item_finished", 0, None),
        ("node_finished", None, None),
    ]


@pytest.mark.asyncio
async def test_async_batch_node_item_events() -> None:
    """An AsyncBatchNode reports per-item events in order."""

    class AItems(AsyncBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return [1, 2, 3]

    events: list[Event] = []
    await AItems().run_async({}, observer=events.append)
    assert [(e.kind.value, e.item) for e in events] == [
        ("node_started", None),
        ("item_started", 0),
        ("item_finished", 0),
        ("item_started", 1),
        ("item_finished", 1),
        ("item_started", 2),
        ("item_finished", 2),
        ("node_finished", None),
    ]


class HalfFail(AsyncParallelBatchNode):
    async def prep_async(self, shared: Any) -> Any:
        return [0, 1, 2, 3]

    async def exec_async(self, x: int) -> Any:
        await asyncio.sleep(0)
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


@pytest.mark.asyncio
async def test_async_parallel_collect_item_failed_sequence() -> None:
    """AsyncParallelBatchNode collect: ITEM_FAILED carries the attempt count and error."""
    events: list[Event] = []
    shared: dict[str, Any] = {}
    await HalfFail(max_retries=2, on_item_error="collect", max_concurrency=1).run_async(
        shared, observer=events.append
    )
    assert [(e.kind.value, e.item, e.attempt) for e in events] == [
        ("node_started", None, None),
        ("item_started", 0, None),
        ("item_finished", 0, None),
        ("item_started", 1, None),
        ("retried", 1, 1),
        ("item_failed", 1, 2),
        ("item_started", 2, None),
        ("item_finished", 2, None),
        ("item_started", 3, None),
        ("retried", 3, 1),
        ("item_failed", 3, 2),
        ("node_finished", None, None),
    ]
    failed = [e for e in events if e.kind is EventKind.ITEM_FAILED]
    assert [str(e.error) for e in failed] == ["odd 1", "odd 3"]
    assert [e.error for e in failed] == [shared["out"][1].exception, shared["out"][3].exception]


@pytest.mark.asyncio
async def test_async_parallel_unbounded_item_events_per_item() -> None:
    """Unbounded concurrency: every item still gets its own well-ordered events."""
    events: list[Event] = []
    await HalfFail(on_item_error="collect").run_async({}, observer=events.append)
    assert events[0].kind is EventKind.NODE_STARTED
    assert events[-1].kind is EventKind.NODE_FINISHED
    per_item: dict[int, list[tuple[str, int | None]]] = {}
    for e in events[1:-1]:
        assert e.item is not None
        per_item.setdefault(e.item, []).append((e.kind.value, e.attempt))
    assert per_item == {
        0: [("item_started", None), ("item_finished", None)],
        1: [("item_started", None), ("item_failed", 1)],
        2: [("item_started", None), ("item_finished", None)],
        3: [("item_started", None), ("item_failed", 1)],
    }


def test_batch_flow_item_events_per_param_set() -> None:
    """BatchFlow reports ITEM_STARTED/FINISHED (named after the flow) around each sub-flow run."""

    class PerK(BatchFlow):
        def prep(self, shared: Any) -> Any:
            return [{"k": 1}, {"k": 2}]

    events: list[Event] = []
    shared: dict[str, Any] = {}
    PerK(start=Param()).run(shared, observer=events.append)
    assert shared["params"] == [1, 2]
    assert item_trace(events) == [
        ("flow_started", "PerK", None),
        ("item_started", "PerK", 0),
        ("node_started", "Param", None),
        ("node_finished", "Param", None),
        ("item_finished", "PerK", 0),
        ("item_started", "PerK", 1),
        ("node_started", "Param", None),
        ("node_finished", "Param", None),
        ("item_finished", "PerK", 1),
        ("flow_finished", "PerK", None),
    ]


def test_batch_flow_collect_item_failed() -> None:
    """BatchFlow collect: a failing sub-flow run reports ITEM_FAILED with attempt 1."""

    class BadOnTwo(Node):
        def exec(self, prep_res: Any) -> Any:
            if self.params["k"] == 2:
                raise KeyError("two")

    class PerK(BatchFlow):
        def prep(self, shared: Any) -> Any:
            return [{"k": 1}, {"k": 2}]

    events: list[Event] = []
    PerK(start=BadOnTwo(), on_item_error="collect").run({}, observer=events.append)
    failed = [e for e in events if e.kind is EventKind.ITEM_FAILED]
    assert [(e.node, e.item, e.attempt) for e in failed] == [("PerK", 1, 1)]
    assert isinstance(failed[0].error, KeyError)


@pytest.mark.asyncio
async def test_async_batch_flow_item_events() -> None:
    """AsyncBatchFlow reports item events per param set, in order."""

    class PerK(AsyncBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return [{"k": "a"}, {"k": "b"}]

    events: list[Event] = []
    await PerK(start=AsyncParam(), name="per").run_async({}, observer=events.append)
    assert item_trace(events) == [
        ("flow_started", "per", None),
        ("item_started", "per", 0),
        ("node_started", "AsyncParam", None),
        ("node_finished", "AsyncParam", None),
        ("item_finished", "per", 0),
        ("item_started", "per", 1),
        ("node_started", "AsyncParam", None),
        ("node_finished", "AsyncParam", None),
        ("item_finished", "per", 1),
        ("flow_finished", "per", None),
    ]
    assert [e.action for e in events if e.kind is EventKind.ITEM_FINISHED] == ["did a", "did b"]


@pytest.mark.asyncio
async def test_async_parallel_batch_flow_item_events() -> None:
    """AsyncParallelBatchFlow reports start and finish/failure for every param set."""

    class PerK(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return [{"k": "a"}, {"k": "bad"}, {"k": "c"}]

    events: list[Event] = []
    shared: dict[str, Any] = {}
    await PerK(start=AsyncParam(), on_item_error="collect").run_async(
        shared, observer=events.append
    )
    assert sorted(shared["params"]) == ["a", "c"]
    assert events[0].kind is EventKind.FLOW_STARTED
    assert events[-1].kind is EventKind.FLOW_FINISHED
    items = sorted(
        (e.item, e.kind.value) for e in events if e.node == "PerK" and e.item is not None
    )
    assert items == [
        (0, "item_finished"),
        (0, "item_started"),
        (1, "item_failed"),
        (1, "item_started"),
        (2, "item_finished"),
        (2, "item_started"),
    ]
    for e in events:
        if e.kind is EventKind.ITEM_FAILED:
            assert isinstance(e.error, ValueError)
            assert e.attempt == 1


@pytest.mark.asyncio
async def test_async_parallel_batch_flow_exact_sequence_with_limit_one() -> None:
    """With max_concurrency=1 the parallel batch flow's events are fully ordered."""

    class PerK(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return [{"k": "a"}, {"k": "b"}]

    events: list[Event] = []
    await PerK(start=AsyncParam(name="p"), max_concurrency=1).run_async({}, observer=events.append)
    assert item_trace(events) == [
        ("flow_started", "PerK", None),
        ("item_started", "PerK", 0),
        ("node_started", "p", None),
        ("node_finished", "p", None),
        ("item_finished", "PerK", 0),
        ("item_started", "PerK", 1),
        ("node_started", "p", None),
        ("node_finished", "p", None),
        ("item_finished", "PerK", 1),
        ("flow_finished", "PerK", None),
    ]


# ---------------------------------------------------------------- names


def test_name_option_is_event_node_name() -> None:
    """name= is the event's node name; without it the class name is used."""
    a = A(name="first")
    a - "go" >> B()
    events: list[Event] = []
    Flow(start=a, name="main").run({}, observer=events.append)
    assert [e.node for e in events] == ["main", "first", "first", "B", "B", "main"]


def test_name_for_batch_node_and_class_attribute() -> None:
    """name= works for BatchNode items too, and a class attribute name is honoured."""

    class Named(Node):
        name = "from-class"

    events: list[Event] = []
    Items(name="batch").run({}, observer=events.append)
    Named().run({}, observer=events.append)
    assert {e.node for e in events} == {"batch", "from-class"}


@pytest.mark.asyncio
async def test_name_for_async_nodes() -> None:
    """name= is used by AsyncNode and AsyncFlow events."""
    events: list[Event] = []
    flow = AsyncFlow(start=AsyncParam(name="ap"), name="af")
    flow.set_params({"k": "z"})
    await flow.run_async({}, observer=events.append)
    assert trace(events) == [
        ("flow_started", "af"),
        ("node_started", "ap"),
        ("node_finished", "ap"),
        ("flow_finished", "af"),
    ]


# ---------------------------------------------------------------- isolation


class Rendezvous(AsyncNode):
    """Waits at a shared barrier so two flows are inside a node at the same time."""

    def __init__(self, barrier: asyncio.Barrier, **kw: Any) -> None:
        super().__init__(**kw)
        self.barrier = barrier

    async def exec_async(self, prep_res: Any) -> Any:
        await self.barrier.wait()
        await asyncio.sleep(0)
        return None


@pytest.mark.asyncio
async def test_concurrent_tasks_see_only_their_own_events() -> None:
    """Two flows running concurrently in two tasks report only to their own observer."""
    barrier = asyncio.Barrier(2)
    seen1: list[Event] = []
    seen2: list[Event] = []
    one = Rendezvous(barrier, name="one-node")
    one >> Rendezvous(barrier, name="one-after")
    two = Rendezvous(barrier, name="two-node")
    two >> Rendezvous(barrier, name="two-after")
    await asyncio.wait_for(
        asyncio.gather(
            AsyncFlow(start=one, name="one").run_async({}, observer=seen1.append),
            AsyncFlow(start=two, name="two").run_async({}, observer=seen2.append),
        ),
        timeout=5,
    )
    assert [e.node for e in seen1] == [
        "one",
        "one-node",
        "one-node",
        "one-after",
        "one-after",
        "one",
    ]
    assert [e.node for e in seen2] == [
        "two",
        "two-node",
        "two-node",
        "two-after",
        "two-after",
        "two",
    ]


@pytest.mark.asyncio
async def test_task_without_observer_unaffected_by_concurrent_observed_task() -> None:
    """A concurrent run without an observer reports nothing to the other run's observer."""
    barrier = asyncio.Barrier(2)
    seen: list[Event] = []
    await asyncio.wait_for(
        asyncio.gather(
            AsyncFlow(start=Rendezvous(barrier, name="watched"), name="w").run_async(
                {}, observer=seen.append
            ),
            AsyncFlow(start=Rendezvous(barrier, name="quiet"), name="q").run_async({}),
        ),
        timeout=5,
    )
    assert {e.node for e in seen} == {"w", "watched"}


def test_concurrent_threads_see_only_their_own_events() -> None:
    """Two sync flows in two threads report only to their own observer."""
    barrier = threading.Barrier(2, timeout=5)

    class Meet(Node):
        def exec(self, prep_res: Any) -> Any:
            barrier.wait()

    results: dict[str, list[Event]] = {"x": [], "y": []}

    def run(label: str) -> None:
        Flow(start=Meet(name=f"{label}-node"), name=label).run({}, observer=results[label].append)

    threads = [threading.Thread(target=run, args=(k,)) for k in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert [e.node for e in results["x"]] == ["x", "x-node", "x-node", "x"]
    assert [e.node for e in results["y"]] == ["y", "y-node", "y-node", "y"]


def test_no_observer_records_nothing_and_no_global_registry() -> None:
    """A run without an observer records nothing, even after a run with one."""
    events: list[Event] = []
    a = A()
    a - "go" >> B()
    flow = Flow(start=a)
    flow.run({}, observer=events.append)
    count = len(events)
    assert count == 6
    assert current_observer.get() is None
    shared: dict[str, Any] = {}
    flow.run(shared)
    Items().run({})
    assert shared["ran"] == ["A", "B"]
    assert len(events) == count


def test_observer_restored_after_failure() -> None:
    """After a failing observed run, no observer lingers in the context."""
    events: list[Event] = []
    with pytest.raises(RuntimeError):
        Flow(start=Boom()).run({}, observer=events.append)
    assert current_observer.get() is None
    count = len(events)
    Flow(start=A()).run({})
    assert len(events) == count


def test_second_observer_replaces_first() -> None:
    """Successive runs with different observers report to their own observer only."""
    first: list[Event] = []
    second: list[Event] = []
    node = B()
    node.run({}, observer=first.append)
    node.run({}, observer=second.append)
    assert len(first) == len(second) == 2


# ---------------------------------------------------------------- observers that raise


class Oops(Exception):
    """What the test observers raise."""


def raise_on(kind: EventKind) -> Any:
    def observer(event: Event) -> None:
        if event.kind is kind:
            raise Oops(event.kind.value)

    return observer


def test_observer_exception_propagates_from_flow() -> None:
    """An observer raising on NODE_STARTED stops the run with ObserverError caused by it."""
    shared: dict[str, Any] = {}
    with pytest.raises(ObserverError, match="node_started") as caught:
        Flow(start=A()).run(shared, observer=raise_on(EventKind.NODE_STARTED))
    assert isinstance(caught.value.__cause__, Oops)
    assert caught.value.event.kind is EventKind.NODE_STARTED
    assert "ran" not in shared


def test_observer_exception_propagates_from_batch_item_event() -> None:
    """An observer raising on ITEM_FINISHED propagates out of a collect-mode BatchNode."""

    with pytest.raises(ObserverError, match="item_finished"):
        Items(on_item_error="collect").run({}, observer=raise_on(EventKind.ITEM_FINISHED))


@pytest.mark.asyncio
async def test_observer_exception_propagates_from_async_parallel() -> None:
    """An observer raising on ITEM_STARTED propagates out of an AsyncParallelBatchNode."""
    with pytest.raises(ObserverError):
        await HalfFail(on_item_error="collect", max_concurrency=2).run_async(
            {}, observer=raise_on(EventKind.ITEM_STARTED)
        )


def test_observer_exception_on_retried_propagates_from_collect_batch() -> None:
    """An observer raising on RETRIED propagates out of a collect-mode BatchNode."""

    class Fails(BatchNode):
        def prep(self, shared: Any) -> Any:
            return [1]

        def exec(self, item: Any) -> Any:
            raise ConnectionError("down")

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res

    shared: dict[str, Any] = {}
    try:
        Fails(max_retries=2, on_item_error="collect").run(
            shared, observer=raise_on(EventKind.RETRIED)
        )
    except ObserverError:
        return
    pytest.fail(f"observer error was swallowed: {shared['out']!r}")


def test_observer_exception_propagates_from_thread_pool_collect() -> None:
    """An observer raising on ITEM_STARTED propagates out of a collect-mode thread-pool node."""

    class Pool(ParallelBatchNode):
        def prep(self, shared: Any) -> Any:
            return [1, 2]

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res

    shared: dict[str, Any] = {}
    try:
        Pool(on_item_error="collect", max_workers=2).run(
            shared, observer=raise_on(EventKind.ITEM_STARTED)
        )
    except ObserverError:
        return
    assert not any(isinstance(r, ItemError) for r in shared["out"]), shared["out"]
    pytest.fail("observer error neither propagated nor recorded")


# ---------------------------------------------------------------- the Event type


def test_event_kind_values_compare_as_strings() -> None:
    """EventKind members equal their lowercase string values."""
    assert EventKind.FLOW_STARTED == "flow_started"  # type: ignore[comparison-overlap]
    assert {k.value for k in EventKind} == {
        "flow_started",
        "flow_finished",
        "flow_failed",
        "node_started",
        "node_finished",
        "node_failed",
        "item_started",
        "item_finished",
        "item_failed",
        "retried",
    }


def test_event_is_frozen_with_defaults() -> None:
    """Event fields default to None and cannot be reassigned."""
    e = Event(EventKind.NODE_STARTED, "n")
    assert (e.item, e.attempt, e.delay, e.action, e.error) == (None,) * 5
    with pytest.raises(AttributeError):
        e.node = "other"  # type: ignore[misc]
