"""pocketbatch.core._limits: ProviderLimiter's budgets on a fake clock, shared by
Python nodes; reading Retry-After and reset durations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _support import FakeTime

from pocketbatch import ProviderLimiter


@pytest.mark.asyncio
async def test_a_token_budget_holds_back_a_request_until_it_refills() -> None:
    time = FakeTime()
    limiter = ProviderLimiter(tokens_per_minute=600, clock=time.clock, sleep=time.sleep)
    async with limiter.request(tokens=500):
        pass
    async with limiter.request(tokens=200):  # 100 left: 100 more at 10 a second
        pass
    assert time.sleeps == [10.0]
    async with limiter.request(tokens=5000):  # more than the budget: waits for a full one
        pass
    assert time.sleeps == [10.0, 60.0]


@pytest.mark.asyncio
async def test_one_limiter_shared_by_two_python_nodes() -> None:
    """Core users share a ProviderLimiter between nodes: 2 requests a minute in all."""
    from pocketbatch import AsyncFlow, AsyncNode

    time = FakeTime()
    limiter = ProviderLimiter(requests_per_minute=2, clock=time.clock, sleep=time.sleep)
    calls: list[str] = []

    class Call(AsyncNode[dict[str, Any], None, None]):
        async def exec_async(self, prep_res: None) -> None:
            async with limiter.request(tokens=10):
                calls.append(self.params.get("name", "?"))

    first, second, third = Call(), Call(), Call()
    first >> second >> third
    await AsyncFlow(start=first).run_async({})
    assert len(calls) == 3
    assert time.sleeps == [30.0]  # the third waited for one request's refill


def test_retry_after_forms() -> None:
    from pocketbatch.core._limits import parse_duration, retry_after

    assert retry_after({"Retry-After-Ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480) == 10.0
    assert retry_after({"retry-after": "soon"}) is None
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("5x") is None


def test_limiter_errors_and_repr() -> None:
    with pytest.raises(ValueError, match="requests_per_minute must be > 0"):
        ProviderLimiter(requests_per_minute=0)
    with pytest.raises(TypeError, match="tokens_per_minute must be a number"):
        ProviderLimiter(tokens_per_minute="10")  # type: ignore[arg-type]
    limiter = ProviderLimiter(name="http://x/v1", clock=lambda: 0.0)
    limiter.pause(3)
    assert repr(limiter) == (
        "<ProviderLimiter http://x/v1 unlimited requests, unlimited tokens per minute, "
        "0 in flight, paused 3.0 s>"
    )


@pytest.mark.asyncio
async def test_before_any_limit_is_known_one_request_goes_first() -> None:
    """A run's first requests to a provider it knows nothing about: one goes, the others
    wait for its answer, whose headers set the pace (a blind burst drew one 429 per
    request over the provider's budget)."""
    limiter = ProviderLimiter()
    order: list[str] = []
    answered = asyncio.Event()

    async def call(name: str, first: bool = False) -> None:
        async with limiter.request(tokens=1):
            order.append(f"{name} sent")
            if first:
                await answered.wait()
                limiter.update_from_headers(
                    {"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "1"}
                )

    probe = asyncio.create_task(call("a", first=True))
    others = [asyncio.create_task(call(n)) for n in "bc"]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["a sent"]  # b and c hold back while a is out
    answered.set()
    await asyncio.wait_for(probe, 1)
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["a sent", "b sent"]  # the provider said one more is left
    assert limiter.statistics().requests_per_minute == 120
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_probe_that_fails_lets_the_others_go() -> None:
    limiter = ProviderLimiter()
    with pytest.raises(ConnectionError):
        async with limiter.request():
            raise ConnectionError("refused")
    async with limiter.request():  # not held forever
        pass
    await limiter.acquire()  # acquire() alone never holds the others back
    await limiter.acquire()
