"""Hypothesis properties of bounded_map, AsyncParallelBatchNode and AsyncParallelBatchFlow.

For any items, failure pattern, concurrency limit and completion order: one result
per item in input order, the limit is respected, failures are reported exactly, and
no task outlives the batch. Each example runs in its own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pocketbatch import AsyncNode, AsyncParallelBatchFlow, AsyncParallelBatchNode, ItemError
from pocketbatch.core import bounded_map

TIMEOUT = 10
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, database=None)


class Boom(Exception):
    """What a failing item raises; one distinct object per item."""


@dataclass(frozen=True)
class Case:
    """One generated batch."""

    values: list[int]
    fails: list[bool]
    yields: list[int]  # sleep(0) calls per item: shuffles the completion order
    limit: int | None
    source: str
    retries: int


@st.composite
def cases(draw: st.DrawFn, *, unbounded: bool = True) -> Case:
    n = draw(st.integers(0, 60))
    sized = {"min_size": n, "max_size": n}
    limits = st.integers(1, 10)
    return Case(
        values=draw(st.lists(st.integers(), **sized)),
        fails=draw(st.lists(st.booleans(), **sized)),
        yields=draw(st.lists(st.integers(0, 6), **sized)),
        limit=draw(st.none() | limits if unbounded else limits),
        source=draw(st.sampled_from(["list", "generator", "async_generator"])),
        retries=draw(st.integers(1, 3)),
    )


@dataclass
class Tracker:
    in_flight: int = 0
    peak: int = 0
    failed_order: list[int] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    pulled: int = 0
    done: int = 0
    max_backlog: int = 0


def source_of(case: Case, tracker: Tracker, jobs: list[Any]) -> Any:
    if case.source == "list":
        return jobs

    def gen() -> Iterator[Any]:
        for j in jobs:
            tracker.pulled += 1
            yield j

    async def agen() -> AsyncIterator[Any]:
        for j in gen():
            await asyncio.sleep(0)
            yield j

    return gen() if case.source == "generator" else agen()


async def item(tracker: Tracker, case: Case, index: int, excs: dict[int, Boom]) -> Any:
    """Run one attempt of item ``index``; fail on every attempt if it is a failing item."""
    tracker.in_flight += 1
    tracker.peak = max(tracker.peak, tracker.in_flight)
    tracker.max_backlog = max(tracker.max_backlog, tracker.pulled - tracker.done)
    tracker.attempts[index] = tracker.attempts.get(index, 0) + 1
    try:
        for _ in range(case.yields[index]):
            await asyncio.sleep(0)
        if index in excs:
            if tracker.attempts[index] == case.retries:
                tracker.failed_order.append(index)
                tracker.done += 1
            raise excs[index]
        tracker.done += 1
        return ("ok", index, case.values[index])
    finally:
        tracker.in_flight -= 1


class Node(AsyncParallelBatchNode):
    def __init__(self, case: Case, tracker: Tracker, excs: dict[int, Boom], **kw: Any) -> None:
        super().__init__(max_retries=case.retries, max_concurrency=case.limit, **kw)
        self.case, self.tracker, self.excs = case, tracker, excs

    async def prep_async(self, shared: Any) -> Any:
        return source_of(self.case, self.tracker, list(range(len(self.case.values))))

    async def exec_async(self, index: int) -> Any:
        return await item(self.tracker, self.case, index, self.excs)

    async def post_async(self, shared: Any, prep_res: Any, results: Any) -> Any:
        shared["results"] = results


class Step(AsyncNode):
    def __init__(self, case: Case, tracker: Tracker, excs: dict[int, Boom]) -> None:
        super().__init__(max_retries=case.retries)
        self.case, self.tracker, self.excs = case, tracker, excs

    async def exec_async(self, _: Any) -> Any:
        return await item(self.tracker, self.case, self.params["index"], self.excs)

    async def post_async(self, shared: Any, prep_res: Any, result: Any) -> Any:
        return f"{result[0]}-{result[1]}-{result[2]}"


class Flow(AsyncParallelBatchFlow):
    def __init__(self, case: Case, tracker: Tracker, excs: dict[int, Boom], **kw: Any) -> None:
        super().__init__(Step(case, tracker, excs), max_concurrency=case.limit, **kw)
        self.case, self.tracker = case, tracker

    async def prep_async(self, shared: Any) -> Any:
        params = [{"index": i} for i in range(len(self.case.values))]
        return source_of(self.case, self.tracker, params)

    async def post_async(self, shared: Any, prep_res: Any, results: Any) -> Any:
        shared["results"] = results


def expected_ok(kind: str, case: Case, i: int) -> Any:
    if kind == "node":
        return ("ok", i, case.values[i])
    return f"ok-{i}-{case.values[i]}"


async def run_case(kind: str, case: Case, mode: str) -> tuple[Any, Tracker, dict[int, Boom]]:
    """Run ``case``; return (results or the exception raised, tracker, failing excs)."""
    tracker = Tracker()
    excs = {i: Boom(i) for i, fail in enumerate(case.fails) if fail}
    cls = Node if kind == "node" else Flow
    obj = cls(case, tracker, excs, on_item_error=mode)
    before = set(asyncio.all_tasks())
    shared: dict[str, Any] = {}
    try:
        await asyncio.wait_for(obj.run_async(shared), TIMEOUT)
        outcome: Any = shared["results"]
    except Boom as exc:
        outcome = exc
    assert set(asyncio.all_tasks()) == before, "tasks left behind"
    assert tracker.in_flight == 0
    return outcome, tracker, excs


def check_collect(kind: str, case: Case) -> None:
    results, tracker, excs = asyncio.run(run_case(kind, case, "collect"))
    n = len(case.values)
    assert isinstance(results, list)
    assert len(results) == n
    for i, result in enumerate(results):
        if i in excs:
            # A batch flow retries inside the sub-flow; the run itself is one attempt.
            attempts = case.retries if kind == "node" else 1
            assert result == ItemError(i, excs[i], attempts)
            assert result.exception is excs[i]
        else:
            assert result == expected_ok(kind, case, i)
    assert sum(isinstance(r, ItemError) for r in results) == sum(case.fails)
    assert tracker.peak <= (case.limit or n)
    if case.limit is not None and case.source != "list":  # lazy sources: pulled - done <= N
        assert tracker.max_backlog <= case.limit
    expected_attempts = {i: case.retries if i in excs else 1 for i in range(n)}
    assert tracker.attempts == expected_attempts


def check_raise(kind: str, case: Case) -> None:
    case = replace(case, retries=1)
    outcome, tracker, excs = asyncio.run(run_case(kind, case, "raise"))
    n = len(case.values)
    assert tracker.peak <= (case.limit or n)
    if not excs:
        if kind == "node":
            assert outcome == [expected_ok(kind, case, i) for i in range(n)]
        else:
            assert outcome is None  # raise mode: a batch flow's post gets None
        return
    assert isinstance(outcome, Boom)
    assert any(outcome is exc for exc in excs.values())
    # The first item to fail is the one whose exception propagates.
    assert outcome is excs[tracker.failed_order[0]]


@PROPERTY_SETTINGS
@given(cases())
def test_node_collect_property(case: Case) -> None:
    """Node, collect: one result per item in order, exact ItemErrors, limit respected."""
    check_collect("node", case)


@PROPERTY_SETTINGS
@given(cases())
def test_node_raise_property(case: Case) -> None:
    """Node, raise: all succeed or the first failure's own exception propagates; no tasks left."""
    check_raise("node", case)


@PROPERTY_SETTINGS
@given(cases())
def test_flow_collect_property(case: Case) -> None:
    """Flow, collect: one action per run in order, exact ItemErrors, limit respected."""
    check_collect("flow", case)


@PROPERTY_SETTINGS
@given(cases())
def test_flow_raise_property(case: Case) -> None:
    """Flow, raise: all succeed or the first failure's own exception propagates; no tasks left."""
    check_raise("flow", case)


# -- bounded_map directly ---------------------------------------------------------------


async def map_case(case: Case, *, collect: bool) -> tuple[Any, Tracker, dict[int, Boom]]:
    tracker = Tracker()
    excs = {i: Boom(i) for i, fail in enumerate(case.fails) if fail}

    async def fn(index: int, value: int) -> Any:
        assert value == case.values[index]
        return await item(tracker, replace(case, retries=1), index, excs)

    source = source_of(case, tracker, case.values)
    before = set(asyncio.all_tasks())
    try:
        outcome: Any = await asyncio.wait_for(
            bounded_map(fn, source, limit=case.limit, collect=collect), TIMEOUT
        )
    except Boom as exc:
        outcome = exc
    assert set(asyncio.all_tasks()) == before, "tasks left behind"
    assert tracker.in_flight == 0
    return outcome, tracker, excs


@PROPERTY_SETTINGS
@given(cases(), st.booleans())
def test_bounded_map_property(case: Case, collect: bool) -> None:
    """bounded_map: ordered results within the limit; an exception from fn always propagates."""
    outcome, tracker, excs = asyncio.run(map_case(case, collect=collect))
    n = len(case.values)
    assert tracker.peak <= (case.limit or n)
    if case.limit is not None and case.source != "list":  # lazy sources: pulled - done <= N
        assert tracker.max_backlog <= case.limit
    if excs:
        # fn raising (rather than returning a failure) stops the batch in both modes.
        assert outcome is excs[tracker.failed_order[0]]
    else:
        assert outcome == [("ok", i, v) for i, v in enumerate(case.values)]


@PROPERTY_SETTINGS
@given(cases(unbounded=False))
def test_bounded_map_reaches_limit(case: Case) -> None:
    """bounded_map fills every slot when items outlast the pulls and there are enough."""
    n = len(case.values)
    slow = replace(case, yields=[50] * n, fails=[False] * n)
    outcome, tracker, _ = asyncio.run(map_case(slow, collect=False))
    assert outcome == [("ok", i, v) for i, v in enumerate(case.values)]
    assert case.limit is not None
    assert tracker.peak == min(case.limit, n)
