"""RateLimiter on a fake clock, and max_per_second on the parallel batch classes.

The limiter tests inject ``clock`` and ``sleep``, so they check exact grant times
without waiting. The integration tests use the real loop clock and only assert
lower bounds on how far apart starts are, which a slow machine cannot break.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketbatch import AsyncNode, AsyncParallelBatchFlow, AsyncParallelBatchNode
from pocketbatch.core import RateLimiter

EPSILON = 1e-3


class FakeTime:
    """A clock that only moves when told to, and a sleep that moves it."""

    def __init__(self, now: float = 1000.0, *, advance_on_sleep: bool = True) -> None:
        self.now = now
        self.advance_on_sleep = advance_on_sleep
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.advance_on_sleep:
            self.now += seconds

    def limiter(self, per_second: float) -> RateLimiter:
        return RateLimiter(per_second, clock=self.clock, sleep=self.sleep)


async def grant(fake: FakeTime, limiter: RateLimiter) -> float:
    """Acquire one start and return the (fake) time it was granted."""
    await limiter.acquire()
    return fake.now


# -- spacing ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_back_to_back_grants_are_exactly_one_interval_apart() -> None:
    """A burst of callers is granted starts exactly 1/rate apart, the first at once."""
    fake = FakeTime(1000.0)
    limiter = fake.limiter(4)  # 0.25 s: exact in binary floating point
    granted = [await grant(fake, limiter) for _ in range(6)]
    assert granted == [1000.0, 1000.25, 1000.5, 1000.75, 1001.0, 1001.25]
    assert fake.sleeps == [0.25] * 5


@pytest.mark.asyncio
@pytest.mark.parametrize("rate", [0.5, 3, 10, 123.4])
async def test_spacing_for_various_rates(rate: float) -> None:
    """Consecutive grants are 1/rate apart for non-binary-exact rates too."""
    fake = FakeTime(50.0)
    limiter = fake.limiter(rate)
    granted = [await grant(fake, limiter) for _ in range(20)]
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert gaps == pytest.approx([1 / rate] * 19, rel=1e-9)
    assert granted[-1] - granted[0] == pytest.approx(19 / rate, rel=1e-9)


@pytest.mark.asyncio
async def test_simultaneous_callers_wait_their_turn_in_arrival_order() -> None:
    """Callers arriving at the same instant sleep 0, 1, 2, ... intervals, in order."""
    fake = FakeTime(7.0, advance_on_sleep=False)
    limiter = fake.limiter(4)
    order: list[int] = []

    async def caller(k: int) -> None:
        await limiter.acquire()
        order.append(k)

    await asyncio.wait_for(asyncio.gather(*(caller(k) for k in range(5))), 10)
    assert order == [0, 1, 2, 3, 4]
    assert fake.sleeps == [0.25, 0.5, 0.75, 1.0]  # caller 0 does not sleep at all


@pytest.mark.asyncio
async def test_first_caller_never_sleeps() -> None:
    """The very first acquire is granted immediately, without calling sleep."""
    fake = FakeTime(0.0)
    await fake.limiter(1).acquire()
    assert fake.sleeps == []


# -- late callers ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_late_caller_does_not_wait() -> None:
    """A caller arriving after its slot starts at once, with no sleep."""
    fake = FakeTime(0.0)
    limiter = fake.limiter(4)
    await limiter.acquire()
    fake.now = 0.25  # exactly on time
    assert await grant(fake, limiter) == 0.25
    fake.now = 3.0  # long after
    assert await grant(fake, limiter) == 3.0
    assert fake.sleeps == []


@pytest.mark.asyncio
async def test_idle_time_does_not_bank_a_burst() -> None:
    """After an idle spell, the next callers are spaced again from the late arrival."""
    fake = FakeTime(0.0)
    limiter = fake.limiter(4)
    await limiter.acquire()
    fake.now = 10.0
    granted = [await grant(fake, limiter) for _ in range(3)]
    assert granted == [10.0, 10.25, 10.5]
    assert fake.sleeps == [0.25, 0.25]


@pytest.mark.asyncio
async def test_partly_late_caller_waits_only_the_rest() -> None:
    """A caller arriving part-way through an interval sleeps only what remains of it."""
    fake = FakeTime(0.0)
    limiter = fake.limiter(4)
    await limiter.acquire()
    fake.now = 0.125
    assert await grant(fake, limiter) == 0.25
    assert fake.sleeps == [0.125]


@settings(max_examples=60, deadline=None, database=None)
@given(
    rate=st.sampled_from([1, 2, 4, 8, 16]),
    arrivals=st.lists(st.integers(0, 40), min_size=1, max_size=30),
)
def test_grants_follow_the_spec(rate: int, arrivals: list[int]) -> None:
    """Each grant is max(arrival, previous grant + 1/rate), for any arrival pattern."""
    fake = FakeTime(0.0)
    limiter = fake.limiter(rate)
    interval = 1 / rate

    async def main() -> list[tuple[float, float]]:
        out = []
        for step in arrivals:  # arrivals in sixteenths of a second after the last grant
            fake.now += step / 16
            arrived = fake.now
            out.append((arrived, await grant(fake, limiter)))
        return out

    previous = -math.inf
    for arrived, granted in asyncio.run(main()):
        assert granted == max(arrived, previous + interval)
        previous = granted


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, float("nan")])
def test_rejects_non_positive_rates(value: float) -> None:
    """Zero, negative and NaN rates raise ValueError naming max_per_second."""
    with pytest.raises(ValueError, match="max_per_second"):
        RateLimiter(value)


@pytest.mark.parametrize("value", ["5", None, True, [1], object()])
def test_rejects_non_numbers(value: Any) -> None:
    """Non-numbers (including bools) raise TypeError naming max_per_second."""
    with pytest.raises(TypeError, match="max_per_second"):
        RateLimiter(value)


def test_repr_and_rate() -> None:
    """The limiter keeps its rate and shows it in its repr."""
    limiter = RateLimiter(2.5)
    assert limiter.per_second == 2.5
    assert repr(limiter) == "RateLimiter(per_second=2.5)"


# -- integration: max_per_second ------------------------------------------------------------

RATE = 200
ITEMS = 20


def assert_spaced(starts: dict[int, float]) -> None:
    """Item k started no sooner than k intervals after item 0 (lower bound only).

    The limiter grants slot k at ``t0 + k / rate`` and never lets item k start
    before it; item 0 starts at t0 without waiting. Comparing each start with the
    first (rather than with its neighbour) stays true even if the loop stalls and
    several late timers fire together.
    """
    assert sorted(starts) == list(range(ITEMS))
    first = starts[0]
    for k in range(1, ITEMS):
        assert starts[k] - first >= k / RATE - EPSILON, (k, starts[k] - first)
    ordered = [starts[k] for k in range(ITEMS)]
    assert ordered == sorted(ordered)  # slots are granted in pull order


@pytest.mark.asyncio
async def test_node_max_per_second_spaces_starts() -> None:
    """AsyncParallelBatchNode(max_per_second=200) starts items at least 1/200 s apart."""
    starts: dict[int, float] = {}

    class Stamp(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return range(ITEMS)

        async def exec_async(self, i: int) -> Any:
            starts[i] = asyncio.get_running_loop().time()
            await asyncio.sleep(0)
            return i

        async def post_async(self, shared: Any, p: Any, results: Any) -> Any:
            shared["results"] = results

    shared: dict[str, Any] = {}
    node = Stamp(max_per_second=RATE, max_concurrency=50)
    await asyncio.wait_for(node.run_async(shared), 10)
    assert shared["results"] == list(range(ITEMS))
    assert_spaced(starts)


@pytest.mark.asyncio
async def test_node_max_per_second_counts_every_attempt() -> None:
    """With retries, every attempt takes a slot: attempt starts are spaced too."""
    starts: dict[int, float] = {}
    attempts: list[int] = []

    class Retry(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return range(ITEMS // 2)

        async def exec_async(self, i: int) -> Any:
            starts[len(attempts)] = asyncio.get_running_loop().time()
            attempts.append(i)
            if attempts.count(i) == 1:  # not self.cur_retry: see test_parallel.py
                raise ValueError(i)
            return i

    await asyncio.wait_for(Retry(max_retries=2, max_per_second=RATE).run_async({}), 10)
    assert sorted(attempts) == sorted(list(range(ITEMS // 2)) * 2)
    first = min(starts.values())
    ordered = sorted(starts.values())
    for k, start in enumerate(ordered):
        assert start - first >= k / RATE - EPSILON


@pytest.mark.asyncio
async def test_flow_max_per_second_spaces_starts() -> None:
    """AsyncParallelBatchFlow(max_per_second=200) starts sub-flow runs at least 1/200 s apart."""
    starts: dict[int, float] = {}

    class Stamp(AsyncNode):
        async def exec_async(self, _: Any) -> Any:
            starts[self.params["i"]] = asyncio.get_running_loop().time()
            await asyncio.sleep(0)

    class PerI(AsyncParallelBatchFlow):
        async def prep_async(self, shared: Any) -> Any:
            return [{"i": i} for i in range(ITEMS)]

    flow = PerI(start=Stamp(), max_per_second=RATE, max_concurrency=50)
    await asyncio.wait_for(flow.run_async({}), 10)
    assert_spaced(starts)
