"""Property tests (hypothesis) of the batch runner (pocketbatch/batch/_runner.py).

For any list of inputs (0..80), any failure pattern (each item succeeds, has its
component raise, or is an :class:`InputProblem`), any ``max_concurrency`` (1..8) and any
number of ``asyncio.sleep(0)`` yields per item (which scrambles completion order), with
a flow-file component or a core ``AsyncFlow``:

* ``evaluate_batch`` returns exactly one result per input, result ``i`` for input ``i``;
* at most ``max_concurrency`` items are ever in flight (counted, not timed);
* the number of failed results is the number of failing inputs;
* ``iter_batch`` yields every index exactly once;
* ``stream_results(ordered=True)`` yields ``0..n-1`` in order, and never holds more
  than its window of inputs pulled but not yet yielded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pocketbatch import AsyncFlow, AsyncNode, ComponentRegistry, load_flow
from pocketbatch.batch import (
    INPUT_KEY,
    OUTPUT_KEY,
    AsyncExecutor,
    InputProblem,
    evaluate_batch,
    iter_batch,
)
from pocketbatch.batch._runner import stream_results
from pocketbatch.loader import FlowResult

PROPERTIES = settings(max_examples=50, deadline=None, database=None)
TIMEOUT = 60.0


class Tracker:
    """Counts items in flight (and the peak) and component calls, for one example."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.calls = 0

    async def work(self, data: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            for _ in range(data["yields"]):
                await asyncio.sleep(0)
            if data["fail"]:
                raise ValueError(f"item {data['i']} fails")
            return {"i": data["i"]}
        finally:
            self.in_flight -= 1


TRACKER = Tracker()  # reset by each example; the components below report to it


async def tracked(data: dict[str, Any]) -> dict[str, Any]:
    return await TRACKER.work(data)


_components = ComponentRegistry()
_components.register("/prop/work", tracked)
FILE_FLOW = load_flow(
    """
name: prop
steps:
  - id: work
    component: /prop/work
    input: {$input: "$"}
output: {$step: work}
""",
    registry=_components,
)


class Tracked(AsyncNode):
    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]

    async def exec_async(self, data: Any) -> Any:
        return await TRACKER.work(data)

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = exec_res


CORE_FLOW = AsyncFlow(start=Tracked())
FLOWS = {"file": FILE_FLOW, "core": CORE_FLOW}


@dataclass
class Batch:
    kinds: list[str]  # "ok", "raise" or "problem", per input
    yields: list[int]
    max_concurrency: int
    flow: str

    @property
    def n(self) -> int:
        return len(self.kinds)

    def inputs(self) -> list[Any]:
        return [
            InputProblem("INVALID_JSON", f"problem {i}")
            if kind == "problem"
            else {"i": i, "yields": self.yields[i], "fail": kind == "raise"}
            for i, kind in enumerate(self.kinds)
        ]

    @property
    def failing(self) -> int:
        return sum(kind != "ok" for kind in self.kinds)

    @property
    def runs(self) -> int:
        return sum(kind != "problem" for kind in self.kinds)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    n = draw(st.integers(0, 80))
    kinds = draw(st.lists(st.sampled_from(["ok", "raise", "problem"]), min_size=n, max_size=n))
    yields = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    return Batch(
        kinds=kinds,
        yields=yields,
        max_concurrency=draw(st.integers(1, 8)),
        flow=draw(st.sampled_from(sorted(FLOWS))),
    )


def fresh_tracker() -> Tracker:
    global TRACKER
    TRACKER = Tracker()
    return TRACKER


def check_belongs(index: int, result: FlowResult, batch: Batch) -> None:
    """Result ``index`` is the result of input ``index``."""
    kind = batch.kinds[index]
    if kind == "ok":
        assert result.ok, (index, result)
        assert result.result == {"i": index}
    else:
        assert result.outcome == "failed", (index, result)
        assert result.error is not None
        if kind == "problem":
            assert (result.error.code, result.error.message) == ("INVALID_JSON", f"problem {index}")
        else:
            assert result.error.code == "COMPONENT_FAILED"
            assert f"item {index} fails" in result.error.message


@PROPERTIES
@given(batches())
def test_evaluate_batch_one_result_per_input_in_order(batch: Batch) -> None:
    tracker = fresh_tracker()
    results = asyncio.run(
        asyncio.wait_for(
            evaluate_batch(
                FLOWS[batch.flow], batch.inputs(), max_concurrency=batch.max_concurrency
            ),
            TIMEOUT,
        )
    )
    assert len(results) == batch.n
    for index, result in enumerate(results):
        check_belongs(index, result, batch)
    assert tracker.peak <= batch.max_concurrency
    assert tracker.in_flight == 0
    assert tracker.calls == batch.runs  # input problems never reach the flow
    assert sum(not r.ok for r in results) == batch.failing


@PROPERTIES
@given(batches(), st.booleans())
def test_iter_batch_yields_each_index_exactly_once(batch: Batch, ordered: bool) -> None:
    tracker = fresh_tracker()

    async def collect() -> list[tuple[int, FlowResult]]:
        return [
            pair
            async for pair in iter_batch(
                FLOWS[batch.flow],
                iter(batch.inputs()),
                max_concurrency=batch.max_concurrency,
                ordered=ordered,
            )
        ]

    pairs = asyncio.run(asyncio.wait_for(collect(), TIMEOUT))
    indexes = [index for index, _ in pairs]
    assert sorted(indexes) == list(range(batch.n))
    if ordered:
        assert indexes == list(range(batch.n))
    for index, result in pairs:
        check_belongs(index, result, batch)
    assert tracker.peak <= batch.max_concurrency
    assert sum(not r.ok for _, r in pairs) == batch.failing


@PROPERTIES
@given(
    batches(),
    st.one_of(st.none(), st.integers(1, 24)),
    st.booleans(),
    st.integers(0, 20),
)
def test_stream_results_order_and_window(
    batch: Batch, window: int | None, ordered: bool, start: int
) -> None:
    """Ordered: indexes ``start..start+n-1`` in order. Either way, inputs pulled but not
    yet yielded never exceed the window (the default is ``4 * max_concurrency``, and it is
    never below ``max_concurrency``)."""
    tracker = fresh_tracker()
    bound = max(window or 4 * batch.max_concurrency, batch.max_concurrency)
    pulled = 0
    yielded = 0
    worst = 0

    def source() -> Iterator[Any]:
        nonlocal pulled, worst
        for item in batch.inputs():
            pulled += 1
            worst = max(worst, pulled - yielded)
            yield item

    async def collect() -> list[int]:
        nonlocal yielded
        got = []
        async with AsyncExecutor(FLOWS[batch.flow]) as executor:
            async for index, result in stream_results(
                executor,
                source(),
                max_concurrency=batch.max_concurrency,
                ordered=ordered,
                window=window,
                start=start,
            ):
                yielded += 1
                check_belongs(index - start, result, batch)
                got.append(index)
        return got

    got = asyncio.run(asyncio.wait_for(collect(), TIMEOUT))
    if ordered:
        assert got == list(range(start, start + batch.n))
    else:
        assert sorted(got) == list(range(start, start + batch.n))
    assert pulled == yielded == batch.n
    assert worst <= bound, (worst, bound)
    assert tracker.peak <= batch.max_concurrency


@PROPERTIES
@given(batches())
def test_async_iterable_inputs_same_results(batch: Batch) -> None:
    fresh_tracker()

    async def agen() -> Any:
        for item in batch.inputs():
            await asyncio.sleep(0)
            yield item

    results = asyncio.run(
        asyncio.wait_for(
            evaluate_batch(FLOWS[batch.flow], agen(), max_concurrency=batch.max_concurrency),
            TIMEOUT,
        )
    )
    assert len(results) == batch.n
    for index, result in enumerate(results):
        check_belongs(index, result, batch)
