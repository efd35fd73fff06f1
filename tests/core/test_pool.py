"""ParallelBatchNode on thread and process pools, and offloading sync nodes from async flows."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from pocketbatch import (
    AsyncFlow,
    AsyncNode,
    BatchNode,
    Event,
    EventKind,
    ItemError,
    Node,
    ParallelBatchNode,
)

EXECUTORS = ["thread", "process"]

# Node classes live at module level so that process pools can pickle them.


class Square(ParallelBatchNode):
    """Squares each item and reports where it ran."""

    def prep(self, shared: Any) -> Any:
        return shared["items"]

    def exec(self, x: int) -> Any:
        return (x * x, os.getpid(), threading.get_ident())

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["results"] = exec_res


class Picky(ParallelBatchNode):
    """Fails on multiples of 3 with a ValueError."""

    def prep(self, shared: Any) -> Any:
        return shared["items"]

    def exec(self, x: int) -> Any:
        if x % 3 == 0:
            raise ValueError(f"bad {x}")
        return x * 10

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["results"] = exec_res


class FlakyPool(ParallelBatchNode):
    """Each item fails with ConnectionError on its first two attempts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tries: dict[int, int] = {}

    def prep(self, shared: Any) -> Any:
        return shared["items"]

    def exec(self, x: int) -> Any:
        n = self.tries[x] = self.tries.get(x, 0) + 1
        if n < 3:
            raise ConnectionError(f"{x} try {n}")
        return (x, n)

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["results"] = exec_res


def collatz_steps(n: int) -> int:
    """CPU-bound pure Python work."""
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


class CollatzMixin:
    def prep(self, shared: Any) -> Any:
        return shared["items"]

    def exec(self, n: int) -> Any:
        return sum(collatz_steps(k) for k in range(n, n + 200))

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["results"] = exec_res


class CollatzPool(CollatzMixin, ParallelBatchNode):
    """Collatz work on a pool."""


class CollatzSeq(CollatzMixin, BatchNode):
    """The same work, sequentially."""


# ---------------------------------------------------------------- order and placement


@pytest.mark.parametrize("executor", EXECUTORS)
def test_results_in_input_order(executor: Any) -> None:
    """Results reach post in input order."""
    shared: dict[str, Any] = {"items": list(range(40))}
    Square(executor=executor, max_workers=2).run(shared)
    assert [r[0] for r in shared["results"]] == [x * x for x in range(40)]


def test_thread_results_in_input_order_when_completed_out_of_order() -> None:
    """Item 0 finishing after item 1 still lands first."""
    finished: list[int] = []

    class Reorder(ParallelBatchNode):
        def __init__(self) -> None:
            super().__init__(executor="thread", max_workers=2)
            self.one_done = threading.Event()

        def prep(self, shared: Any) -> Any:
            return [0, 1]

        def exec(self, x: int) -> Any:
            if x == 0:
                assert self.one_done.wait(5)
            finished.append(x)
            if x == 1:
                self.one_done.set()
            return f"r{x}"

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["results"] = exec_res

    shared: dict[str, Any] = {}
    Reorder().run(shared)
    assert finished == [1, 0]
    assert shared["results"] == ["r0", "r1"]


def test_thread_executor_runs_exec_in_other_threads() -> None:
    """executor="thread": exec runs on pool threads, not the caller's thread."""
    shared: dict[str, Any] = {"items": list(range(10))}
    Square(executor="thread", max_workers=2).run(shared)
    idents = {r[2] for r in shared["results"]}
    assert threading.get_ident() not in idents
    assert {r[1] for r in shared["results"]} == {os.getpid()}
    assert len(idents) <= 2


def test_process_executor_runs_exec_in_other_processes() -> None:
    """executor="process": exec runs in worker processes."""
    shared: dict[str, Any] = {"items": list(range(10))}
    Square(executor="process", max_workers=2).run(shared)
    pids = {r[1] for r in shared["results"]}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


def test_default_executor_is_thread() -> None:
    """Without executor= the node uses a thread pool."""
    node = Square()
    assert node._pb_executor == "thread"
    shared: dict[str, Any] = {"items": [1, 2]}
    node.run(shared)
    assert [r[0] for r in shared["results"]] == [1, 4]
    assert all(r[2] != threading.get_ident() for r in shared["results"])


@pytest.mark.parametrize("executor", EXECUTORS)
def test_empty_and_none_batches(executor: Any) -> None:
    """An empty list or None from prep gives an empty result list."""
    empty: list[list[int] | None] = [[], None]
    for items in empty:
        shared: dict[str, Any] = {"items": items}
        Square(executor=executor, max_workers=2).run(shared)
        assert shared["results"] == []


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("executor", EXECUTORS)
def test_on_item_error_collect(executor: Any) -> None:
    """collect: failed positions hold an ItemError, the rest their results."""
    shared: dict[str, Any] = {"items": [1, 3, 4, 6]}
    Picky(executor=executor, max_workers=2, on_item_error="collect").run(shared)
    out = shared["results"]
    assert out[0] == 10
    assert out[2] == 40
    for index in (1, 3):
        assert isinstance(out[index], ItemError)
        assert out[index].index == index
        assert out[index].attempts == 1
        assert isinstance(out[index].exception, ValueError)
    assert str(out[1].exception) == "bad 3"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_on_item_error_raise(executor: Any) -> None:
    """raise (the default): the failing item's exception propagates and post never runs."""
    shared: dict[str, Any] = {"items": [1, 2, 3, 4]}
    with pytest.raises(ValueError, match="bad 3"):
        Picky(executor=executor, max_workers=2).run(shared)
    assert "results" not in shared


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retries_inside_pool(executor: Any) -> None:
    """Each item is retried inside the pool until it succeeds."""
    shared: dict[str, Any] = {"items": list(range(6))}
    FlakyPool(3, executor=executor, max_workers=2).run(shared)
    assert shared["results"] == [(x, 3) for x in range(6)]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_retries_exhausted_collect_counts_attempts(executor: Any) -> None:
    """When retries run out in collect mode, ItemError.attempts equals max_retries."""
    shared: dict[str, Any] = {"items": list(range(4))}
    FlakyPool(2, executor=executor, max_workers=2, on_item_error="collect").run(shared)
    for index, err in enumerate(shared["results"]):
        assert isinstance(err, ItemError)
        assert (err.index, err.attempts) == (index, 2)
        assert isinstance(err.exception, ConnectionError)


# ---------------------------------------------------------------- events


def per_item(events: list[Event]) -> dict[int, list[tuple[str, int | None]]]:
    """Group item-level events by item, keeping their order."""
    grouped: dict[int, list[tuple[str, int | None]]] = {}
    for e in events:
        if e.item is not None:
            grouped.setdefault(e.item, []).append((e.kind.value, e.attempt))
    return grouped


@pytest.mark.parametrize("executor", EXECUTORS)
def test_observer_sees_item_and_retry_events(executor: Any) -> None:
    """ITEM_STARTED, RETRIED and ITEM_FINISHED reach the observer for every item."""
    events: list[Event] = []
    shared: dict[str, Any] = {"items": list(range(5))}
    FlakyPool(3, executor=executor, max_workers=2, name="pool").run(shared, observer=events.append)
    assert events[0].kind is EventKind.NODE_STARTED
    assert events[-1].kind is EventKind.NODE_FINISHED
    assert {e.node for e in events} == {"pool"}
    expected = [("item_started", None), ("retried", 1), ("retried", 2), ("item_finished", None)]
    assert per_item(events) == {i: expected for i in range(5)}
    for e in events:
        if e.kind is EventKind.RETRIED:
            assert isinstance(e.error, ConnectionError)
            assert str(e.error) == f"{e.item} try {e.attempt}"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_observer_sees_item_failed(executor: Any) -> None:
    """ITEM_FAILED carries the attempt count and the exception."""
    events: list[Event] = []
    shared: dict[str, Any] = {"items": [0, 1]}
    FlakyPool(2, executor=executor, max_workers=2, on_item_error="collect").run(
        shared, observer=events.append
    )
    expected = [("item_started", None), ("retried", 1), ("item_failed", 2)]
    assert per_item(events) == {0: expected, 1: expected}
    failed = [e for e in events if e.kind is EventKind.ITEM_FAILED]
    assert [str(e.error) for e in failed] == ["0 try 2", "1 try 2"]


def test_process_events_replayed_in_input_order() -> None:
    """Process mode replays each item's worker events, item by item in input order."""
    events: list[Event] = []
    shared: dict[str, Any] = {"items": [1, 3, 4]}
    Picky(executor="process", max_workers=2, on_item_error="collect").run(
        shared, observer=events.append
    )
    assert [(e.kind.value, e.item) for e in events] == [
        ("node_started", None),
        ("item_started", 0),
        ("item_finished", 0),
        ("item_started", 1),
        ("item_failed", 1),
        ("item_started", 2),
        ("item_finished", 2),
        ("node_finished", None),
    ]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_no_observer_no_events_needed(executor: Any) -> None:
    """Without an observer the pool runs normally."""
    shared: dict[str, Any] = {"items": [0, 1]}
    FlakyPool(3, executor=executor, max_workers=2).run(shared)
    assert shared["results"] == [(0, 3), (1, 3)]


# ---------------------------------------------------------------- user executors


def test_user_thread_pool_is_used_and_not_shut_down() -> None:
    """A user-managed ThreadPoolExecutor runs the items and stays usable afterwards."""
    with ThreadPoolExecutor(2, thread_name_prefix="userpool") as pool:
        names: list[str] = []

        class Named(ParallelBatchNode):
            def prep(self, shared: Any) -> Any:
                return [1, 2, 3]

            def exec(self, x: int) -> Any:
                names.append(threading.current_thread().name)
                return -x

            def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
                shared["results"] = exec_res

        shared: dict[str, Any] = {}
        Named(executor=pool, max_workers=2).run(shared)
        assert shared["results"] == [-1, -2, -3]
        assert len(names) == 3
        assert all(n.startswith("userpool") for n in names)
        # still open: a second run and a plain submit both work
        Named(executor=pool).run(shared)
        assert pool.submit(lambda: "alive").result() == "alive"


def test_user_thread_pool_forwards_events() -> None:
    """Events from a user-managed thread pool reach the caller's observer."""
    events: list[Event] = []
    with ThreadPoolExecutor(2) as pool:
        FlakyPool(3, executor=pool).run({"items": [0, 1]}, observer=events.append)
    assert sorted(per_item(events)) == [0, 1]


def test_user_process_pool_runs_items() -> None:
    """A user-managed ProcessPoolExecutor works like executor="process" (node sent per item)."""
    with ProcessPoolExecutor(2) as pool:
        shared: dict[str, Any] = {"items": [1, 2, 3]}
        Square(executor=pool).run(shared)
        assert [r[0] for r in shared["results"]] == [1, 4, 9]
        assert os.getpid() not in {r[1] for r in shared["results"]}


# ---------------------------------------------------------------- bounded submission


def test_bounded_submission_with_large_generator() -> None:
    """Items pulled from a generator but not yet finished never exceed 2 * max_workers + 1."""
    lock = threading.Lock()
    state = {"outstanding": 0, "peak": 0, "pulled": 0}

    def items() -> Iterator[int]:
        for i in range(10_000):
            with lock:
                state["outstanding"] += 1
                state["pulled"] += 1
                state["peak"] = max(state["peak"], state["outstanding"])
            yield i

    class Counted(ParallelBatchNode):
        def prep(self, shared: Any) -> Any:
            return items()

        def exec(self, x: int) -> Any:
            with lock:
                state["outstanding"] -= 1
            return x + 1

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["results"] = exec_res

    shared: dict[str, Any] = {}
    Counted(executor="thread", max_workers=2).run(shared)
    assert shared["results"] == list(range(1, 10_001))
    assert state["pulled"] == 10_000
    assert state["outstanding"] == 0
    assert state["peak"] <= 2 * 2 + 1


def test_raise_mode_stops_pulling_items() -> None:
    """After a failure in raise mode the generator is not drained."""
    pulled: list[int] = []

    def items() -> Iterator[int]:
        for i in range(10_000):
            pulled.append(i)
            yield i

    class FailFirst(ParallelBatchNode):
        def prep(self, shared: Any) -> Any:
            return items()

        def exec(self, x: int) -> Any:
            if x == 0:
                raise RuntimeError("first")
            return x

    with pytest.raises(RuntimeError, match="first"):
        FailFirst(executor="thread", max_workers=2).run({})
    assert len(pulled) <= 2 * 2 + 1


# ---------------------------------------------------------------- CPU-bound


def test_process_pool_matches_sequential_batch() -> None:
    """A CPU-bound process run gives the same results as a sequential BatchNode."""
    items = list(range(1, 400, 7))
    seq: dict[str, Any] = {"items": items}
    par: dict[str, Any] = {"items": items}
    CollatzSeq().run(seq)
    CollatzPool(executor="process", max_workers=2).run(par)
    assert par["results"] == seq["results"]
    assert len(par["results"]) == len(items)


# ---------------------------------------------------------------- validation


def test_invalid_executor_is_value_error() -> None:
    """executor="fiber" raises ValueError naming the executor argument."""
    with pytest.raises(ValueError, match="executor"):
        ParallelBatchNode(executor="fiber")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "exc_type"), [(0, ValueError), (-1, ValueError), (1.5, TypeError)]
)
def test_invalid_max_workers(value: Any, exc_type: type[Exception]) -> None:
    """max_workers must be a positive int; the message names it."""
    with pytest.raises(exc_type, match="max_workers"):
        ParallelBatchNode(max_workers=value)


# ---------------------------------------------------------------- cur_retry in threads


def test_cur_retry_is_per_item_in_thread_pool() -> None:
    """During exec on a thread pool, self.cur_retry is this item's own attempt number."""
    a_started = threading.Event()
    b_second = threading.Event()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    class Shared(ParallelBatchNode):
        def prep(self, shared: Any) -> Any:
            return ["a", "b"]

        def exec(self, item: str) -> Any:
            if item == "a":
                seen["a"].append(self.cur_retry)
                a_started.set()
                assert b_second.wait(5)
                seen["a"].append(self.cur_retry)
                return item
            assert a_started.wait(5)
            seen["b"].append(self.cur_retry)
            if self.cur_retry == 0:
                raise ConnectionError("again")
            b_second.set()
            return item

    Shared(2, executor="thread", max_workers=2).run({})
    assert seen["b"] == [0, 1]
    assert seen["a"] == [0, 0]


# ---------------------------------------------------------------- offload


class WhereSync(Node):
    """Records the thread its exec ran on."""

    def exec(self, prep_res: Any) -> Any:
        return threading.get_ident()

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("tids", []).append(exec_res)


class OffloadedByDefault(WhereSync):
    """A subclass that always offloads, the way PocketFlow subclasses set options."""

    def __init__(self) -> None:
        super().__init__(offload=True)


class WhereAsync(AsyncNode):
    """Records the thread its exec_async ran on."""

    async def exec_async(self, prep_res: Any) -> Any:
        return threading.get_ident()

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("tids", []).append(exec_res)


@pytest.mark.asyncio
async def test_offload_runs_sync_node_off_the_loop() -> None:
    """A sync Node(offload=True) in an AsyncFlow runs on a thread other than the loop's."""
    shared: dict[str, Any] = {}
    await AsyncFlow(start=WhereSync(offload=True)).run_async(shared)
    assert shared["tids"][0] != threading.get_ident()


@pytest.mark.asyncio
async def test_sync_node_without_offload_runs_on_loop_thread() -> None:
    """A sync Node without offload runs on the event loop thread."""
    shared: dict[str, Any] = {}
    await AsyncFlow(start=WhereSync()).run_async(shared)
    assert shared["tids"] == [threading.get_ident()]


@pytest.mark.asyncio
async def test_offload_set_by_subclass_init() -> None:
    """A subclass passing offload=True to super().__init__ always offloads."""
    node = OffloadedByDefault()
    shared: dict[str, Any] = {}
    await AsyncFlow(start=node).run_async(shared)
    assert shared["tids"][0] != threading.get_ident()


@pytest.mark.asyncio
async def test_offload_mixed_flow_and_events() -> None:
    """Async, offloaded and plain sync steps mix in one flow; offloaded steps report events."""
    a = WhereAsync(name="async")
    off = WhereSync(offload=True, name="off")
    plain = WhereSync(name="plain")
    a >> off >> plain
    shared: dict[str, Any] = {}
    events: list[Event] = []
    await AsyncFlow(start=a).run_async(shared, observer=events.append)
    loop_tid = threading.get_ident()
    assert shared["tids"][0] == loop_tid
    assert shared["tids"][1] != loop_tid
    assert shared["tids"][2] == loop_tid
    assert [(e.kind.value, e.node) for e in events] == [
        ("flow_started", "AsyncFlow"),
        ("node_started", "async"),
        ("node_finished", "async"),
        ("node_started", "off"),
        ("node_finished", "off"),
        ("node_started", "plain"),
        ("node_finished", "plain"),
        ("flow_finished", "AsyncFlow"),
    ]


def test_offload_default_false() -> None:
    """offload defaults to False and Node(offload=False) leaves it off."""
    assert Node()._pb_offload is False
    assert Node(offload=False)._pb_offload is False
    assert Node(offload=True)._pb_offload is True
