"""The process executor's workers spend one provider budget (issue 12).

The parent owns the limiters (:mod:`pocketbatch.batch._limit_host`) and paces
every worker with one clock: a :class:`FakeTime` given to the executor's
:class:`~pocketbatch.loader._providers.ProviderLimiters`. The fake provider
stamps each request's arrival with that clock, so the tests count requests per
stretch of fake time at the provider. A request arrives after it was granted,
never before: "at most B + t * rate requests by fake time t" holds for the
arrivals if it holds for the grants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from _fake_llm import CHAT_FLOW, FakeLLM, fake_llm
from _support import FakeTime

from pocketbatch import load_flow
from pocketbatch.batch import evaluate_batch
from pocketbatch.batch._executors import ProcessExecutor
from pocketbatch.core import Usage
from pocketbatch.loader._providers import ProviderLimiters
from pocketbatch.loader._services import RetryPolicy, ServiceSettings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


def within(stamps: list[float], start: float, burst: float, per_minute: float) -> bool:
    """Whether by every arrival at most ``burst + elapsed * per_minute / 60`` came."""
    ordered = sorted(stamps)
    return all(
        count <= burst + (stamp - start) * per_minute / 60 + 1e-9
        for count, stamp in enumerate(ordered, start=1)
    )


async def run(
    fake: FakeLLM,
    limiters: ProviderLimiters,
    items: int,
    *,
    settings: ServiceSettings | None = None,
) -> tuple[list[Any], Usage]:
    flow = load_flow(CHAT_FLOW, variables={"openai_base_url": fake.base_url})
    usage = Usage()
    executor = ProcessExecutor(flow, max_workers=2, services=settings, limiters=limiters)
    results = await evaluate_batch(
        flow, [{"q": str(i)} for i in range(items)], executor=executor, max_concurrency=4,
        usage=usage,
    )  # fmt: skip
    assert [r.result for r in results] == [f"echo: {i}" for i in range(items)]
    return results, usage


@pytest.mark.asyncio
async def test_two_process_workers_stay_within_one_hand_set_budget(fake: FakeLLM) -> None:
    """4 requests a minute for both workers: each could send 4 at once on a budget of
    its own; together they send 4, then one every 15 s (of fake time)."""
    time = FakeTime()
    fake.clock = time.clock
    start = time.now
    limiters = ProviderLimiters(requests_per_minute=4, clock=time.clock, sleep=time.sleep)
    await run(fake, limiters, 8)
    assert len(fake.stamps) == 8
    assert within(fake.stamps, start, burst=4, per_minute=4), fake.stamps
    assert time.now - start >= 60  # the last 4 waited 15 s each


@pytest.mark.asyncio
async def test_a_budget_given_as_settings_is_shared_too(fake: FakeLLM) -> None:
    """``--requests-per-minute`` (ServiceSettings) sets the executor's own limiters:
    2 workers, 3 a minute, 3 items: all 3 go at once, none waits, and a 4th would."""
    flow = load_flow(CHAT_FLOW, variables={"openai_base_url": fake.base_url})
    executor = ProcessExecutor(flow, max_workers=2, services=ServiceSettings(requests_per_minute=3))
    async with executor:
        for i in range(3):
            assert (await executor.run(i, {"q": str(i)})).ok
    (limiter,) = executor.limiters.all().values()
    stats = limiter.statistics()
    assert stats.requests_per_minute == 3
    assert stats.requests_available < 1  # the workers' 3 requests came out of it


@pytest.mark.asyncio
async def test_usage_from_process_workers_is_summed(fake: FakeLLM) -> None:
    fake.fail(429, retry_after_ms="1")
    time = FakeTime()
    limiters = ProviderLimiters(requests_per_minute=6000, clock=time.clock, sleep=time.sleep)
    _, usage = await run(fake, limiters, 6)
    assert usage.to_dict() == {
        "requests": 7,
        "tokens_in": 6 * 7,
        "tokens_out": 6 * 3,
        "rate_limited": 1,
        "retries": 1,
        "cache_hits": 0,
    }


@pytest.mark.asyncio
async def test_a_429_pause_holds_every_worker(fake: FakeLLM) -> None:
    """The first two requests go together (one per worker); the first gets a 429
    asking for 30 s, the second a 500. The 500 is answered only once the parent's
    limiter is paused, so the other worker's retry asks for its permit during the
    pause: both retries, and every later request, arrive 30 s (of fake time) on."""
    time = FakeTime()
    fake.clock = time.clock
    start = time.now
    limiters = ProviderLimiters(requests_per_minute=6000, clock=time.clock, sleep=time.sleep)
    fake.fail(429, retry_after="30")
    fake.fail(500)
    both_in = asyncio.Event()

    async def hold(number: int) -> None:
        if number == 1:
            for _ in range(1000):  # until the second request is in (its own connection)
                if len(fake.requests) >= 2:
                    break
                await asyncio.sleep(0.005)
        if number == 2:
            for _ in range(1000):  # until the first worker's 429 paused the parent
                if any(lim.statistics().pauses for lim in limiters.all().values()):
                    both_in.set()
                    break
                await asyncio.sleep(0.005)

    fake.hold = hold
    settings = ServiceSettings(retry=RetryPolicy(attempts=3, base=0.001, cap=0.001))
    await run(fake, limiters, 4, settings=settings)
    assert both_in.is_set(), "the 429 never paused the parent's limiter"
    first, second, *later = fake.stamps
    assert first == second == start
    assert len(later) == 4  # two retries, two more items
    assert all(stamp >= start + 30 for stamp in later), fake.stamps
