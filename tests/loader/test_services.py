"""A run's services for LLM calls (issue 12): one connection pool per run, a shared
provider limiter (learned from headers, paused on 429 for every item), default
retries, usage sums. Against a fake provider on 127.0.0.1 that counts TCP
connections (tests/_fake_llm.py). No wall clock: limiters and retries wait on fake
clocks and sleeps; only the fake's own thread is waited for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fake_llm import USAGE, FakeLLM, fake_llm, wait_until_closed
from _support import FakeTime

from pocketbatch import Usage, evaluate_batch, load_flow
from pocketbatch.loader._services import RunServices, ServiceSettings

FLOW = """
steps:
  - id: chat
    component: /builtin/openai
    input:
      messages: [{role: user, content: {$input: q}}]
      max_tokens: 5
output: {$step: chat, path: response}
"""

HTTP_FLOW = """
steps:
  - id: get
    component: /http/request
    input: {url: {$input: url}, method: POST, json: {messages: [{content: x}]}}
output: {$step: get, path: status_code}
"""


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


def chat_flow(fake: FakeLLM) -> Any:
    return load_flow(FLOW, variables={"openai_base_url": fake.base_url})


# --------------------------------------------------------------------------- connections


@pytest.mark.asyncio
async def test_a_batch_uses_one_pool_of_kept_alive_connections(fake: FakeLLM) -> None:
    """30 items, 4 at a time: at most 4 TCP connections (a client per request made
    30), all closed when the batch ends."""
    usage = Usage()
    results = await evaluate_batch(
        chat_flow(fake), [{"q": f"n{i}"} for i in range(30)], max_concurrency=4, usage=usage
    )
    assert [r.result for r in results] == [f"echo: n{i}" for i in range(30)]
    assert len(fake.requests) == 30
    assert 1 <= fake.connections <= 4
    assert wait_until_closed(fake, fake.connections)  # the run closed its client
    assert usage.requests == 30


@pytest.mark.asyncio
async def test_http_request_borrows_the_same_pool(fake: FakeLLM) -> None:
    flow = load_flow(HTTP_FLOW)
    url = fake.base_url + "/chat/completions"
    results = await evaluate_batch(flow, [{"url": url}] * 12, max_concurrency=1)
    assert [r.result for r in results] == [200] * 12
    assert fake.connections == 1


@pytest.mark.asyncio
async def test_a_single_run_gets_its_own_services_and_closes_them(fake: FakeLLM) -> None:
    assert (await chat_flow(fake).run_async({"q": "a"})).result == "echo: a"
    assert fake.connections == 1
    assert wait_until_closed(fake, 1)


# --------------------------------------------------------------------------- retries


@pytest.mark.asyncio
async def test_5xx_and_429_are_retried_by_default_with_backoff(fake: FakeLLM) -> None:
    """No on_error in the flow: a 503 and a 429 are retried; the sleeps are the
    policy's full-jitter backoff (at most 0.5 s, then 1 s)."""
    fake.fail(503)
    fake.fail(429)
    time = FakeTime()
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        result = await chat_flow(fake).run_async({"q": "x"}, services=services)
    assert result.result == "echo: x"
    assert len(fake.requests) == 3
    assert services.usage.retries == 2
    assert services.usage.rate_limited == 1
    assert services.usage.requests == 3
    assert 0 <= time.sleeps[0] <= 0.5
    assert 0 <= time.sleeps[1] <= 1.0


@pytest.mark.asyncio
async def test_retries_stop_at_the_default_attempts(fake: FakeLLM) -> None:
    fake.fail(500, times=10)
    time = FakeTime()
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        result = await chat_flow(fake).run_async({"q": "x"}, services=services)
    assert result.error is not None
    assert result.error.code == "RESOURCE_UNAVAILABLE"
    assert len(fake.requests) == ServiceSettings().retry.attempts == 5
    assert services.usage.retries == 4


@pytest.mark.asyncio
async def test_other_4xx_are_not_retried(fake: FakeLLM) -> None:
    fake.fail(400, times=3)
    time = FakeTime()
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        result = await chat_flow(fake).run_async({"q": "x"}, services=services)
    assert result.error is not None
    assert result.error.code == "INVALID_INPUT"
    assert len(fake.requests) == 1
    assert time.sleeps == []


@pytest.mark.asyncio
async def test_retry_after_pauses_the_provider_for_every_item(fake: FakeLLM) -> None:
    """Item A gets a 429 with retry-after-ms 2000 and sleeps 2 s; item B, started
    while A sleeps, waits 2 s too, in the limiter, before sending anything."""
    fake.fail(429, retry_after_ms="2000")
    now = [1000.0]
    sleeps: list[float] = []
    release = asyncio.Event()
    slept: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        slept.put_nowait(None)
        await release.wait()

    flow = chat_flow(fake)
    async with RunServices(clock=lambda: now[0], sleep=sleep) as services:
        a = asyncio.create_task(flow.run_async({"q": "a"}, services=services))
        await slept.get()  # A has had its 429 and sleeps
        b = asyncio.create_task(flow.run_async({"q": "b"}, services=services))
        await slept.get()  # B waits in the limiter
        assert sleeps == [2.0, 2.0]
        assert len(fake.requests) == 1  # B sent nothing during the pause
        now[0] += 2.0
        release.set()
        results = await asyncio.gather(a, b)
    assert [r.result for r in results] == ["echo: a", "echo: b"]
    assert len(fake.requests) == 3
    assert services.usage.rate_limited == 1
    assert services.usage.retries == 1
    assert services.limiter(fake.base_url).statistics().pauses == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "headers", "pauses"),
    [
        (503, {}, 0),  # one server error says nothing of the provider's budget
        (503, {"retry_after_ms": "2000"}, 1),  # the provider asked everyone to wait
        (429, {}, 1),  # over the limit: everyone backs off, asked or not
    ],
)
async def test_only_a_429_or_a_retry_after_pauses_every_item(
    fake: FakeLLM, status: int, headers: dict[str, str], pauses: int
) -> None:
    """A 503 without ``retry-after`` is retried by its own item only: the others are
    not held for its backoff (the benchmark's 1% of 503s paused the whole batch)."""
    fake.fail(status, **headers)
    time = FakeTime()
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        result = await chat_flow(fake).run_async({"q": "x"}, services=services)
        assert result.result == "echo: x"
        assert services.limiter(fake.base_url).statistics().pauses == pauses
    assert services.usage.retries == 1


# --------------------------------------------------------------------------- limits


@pytest.mark.asyncio
async def test_limits_are_learned_from_the_provider_headers(fake: FakeLLM) -> None:
    """The provider says 60 requests a minute, none left, full again in 1.5 s: the next
    request waits until one has refilled at 60 a minute (1 s, sooner than the full
    reset); the limit is then the provider's."""
    fake.headers.update(
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1.5s",
            "x-ratelimit-limit-tokens": "10000",
            "x-ratelimit-remaining-tokens": "9000",
        }
    )
    time = FakeTime()
    flow = chat_flow(fake)
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        await flow.run_async({"q": "1"}, services=services)
        assert time.sleeps == []
        stats = services.limiter(fake.base_url).statistics()
        assert (stats.requests_per_minute, stats.tokens_per_minute) == (60, 10000)
        assert stats.requests_available == 0
        assert stats.paused_for == 1.0
        await flow.run_async({"q": "2"}, services=services)
    assert time.sleeps == [1.0]
    assert len(fake.requests) == 2


@pytest.mark.asyncio
async def test_limits_set_in_the_step_space_the_requests(fake: FakeLLM) -> None:
    text = FLOW.replace("max_tokens: 5", "max_tokens: 5\n      requests_per_minute: 60")
    flow = load_flow(text, variables={"openai_base_url": fake.base_url})
    time = FakeTime()
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        for q in "abc":
            await flow.run_async({"q": q}, services=services)
    # a full bucket of 60 at the start: no waits; the limit is in force
    assert services.limiter(fake.base_url).statistics().requests_per_minute == 60
    assert services.limiter(fake.base_url).statistics().requests_available == 57


# --------------------------------------------------------------------------- usage


@pytest.mark.asyncio
@pytest.mark.parametrize("executor", ["async", "process"])
async def test_usage_is_summed_over_the_batch(fake: FakeLLM, executor: str) -> None:
    """Tokens from each reply's usage add up; from worker processes too."""
    fake.fail(503)
    usage = Usage()
    results = await evaluate_batch(
        chat_flow(fake),
        [{"q": str(i)} for i in range(6)],
        max_concurrency=2,
        executor=executor,
        max_workers=2,
        usage=usage,
    )
    assert all(r.ok for r in results)
    assert usage.to_dict() == {
        "requests": 7,
        "tokens_in": 6 * USAGE["prompt_tokens"],
        "tokens_out": 6 * USAGE["completion_tokens"],
        "rate_limited": 0,
        "retries": 1,
        "cache_hits": 0,
    }


# --------------------------------------------------------------------------- config


@pytest.mark.asyncio
async def test_limits_from_pocketbatch_yaml_by_base_url(fake: FakeLLM, tmp_path: Path) -> None:
    """The provider's limits come from pocketbatch.yaml, and the request still goes to
    ``{base_url}/chat/completions`` (it went to the configured base URL itself, which
    the fake answers 404, when the loop over the providers reused the name ``url``)."""
    (tmp_path / "pocketbatch.yaml").write_text(
        f"providers:\n  {fake.base_url}/:\n    requests_per_minute: 30\n"
        "    tokens_per_minute: 5000\n",
        encoding="utf-8",
    )
    (tmp_path / "flow.yaml").write_text(FLOW, encoding="utf-8")
    flow = load_flow(tmp_path / "flow.yaml", variables={"openai_base_url": fake.base_url})
    time = FakeTime()
    async with RunServices(clock=time.clock, sleep=time.sleep) as services:
        assert (await flow.run_async({"q": "a"}, services=services)).result == "echo: a"
    stats = services.limiter(fake.base_url).statistics()
    assert (stats.requests_per_minute, stats.tokens_per_minute) == (30, 5000)


def test_a_bad_provider_limit_is_a_load_error(tmp_path: Path) -> None:
    from pocketbatch import LoadError

    (tmp_path / "pocketbatch.yaml").write_text(
        "providers:\n  http://llm.local/v1: {requests_per_minute: -1}\n", encoding="utf-8"
    )
    (tmp_path / "flow.yaml").write_text(FLOW, encoding="utf-8")
    with pytest.raises(LoadError, match="'requests_per_minute' must be a number > 0"):
        load_flow(tmp_path / "flow.yaml")


# --------------------------------------------------------------------------- pools


@pytest.mark.asyncio
async def test_the_pool_is_split_into_small_ones_and_requests_go_to_the_least_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One httpcore pool of 64 cost more CPU than the requests (it scans all its
    connections on every event); the run's client spreads them over pools of 4."""
    from pocketbatch.loader._transport import ShardedTransport

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    async with RunServices(ServiceSettings(max_connections=64)) as services:
        transport = services.client(None)._transport
        assert isinstance(transport, ShardedTransport)
        # (issue 14: the 16 pools are made as requests need them, not up front)
        assert (transport.max_pools, len(transport.pools)) == (16, 0)
        for _ in range(64):  # 64 requests in flight fill 16 pools of 4
            transport._busy[transport._pick()] += 1
        assert len(transport.pools) == 16
        assert transport._busy == [4] * 16
        transport._busy[5] -= 1  # pool 5 finished one: the next request goes there
        assert transport._pick() == 5


def test_a_huge_pool_size_makes_no_pool_up_front() -> None:
    """--max-concurrent 1000000 made 250 000 pools (each with its own SSL context, about
    40 ms) before the first request: now pools come one at a time, as needed."""
    from pocketbatch.loader._transport import ShardedTransport

    transport = ShardedTransport(10**6)
    assert (transport.max_pools, transport.pools) == (250_000, [])
    for _ in range(9):
        transport._busy[transport._pick()] += 1
    assert len(transport.pools) == 3  # 9 requests in flight, 4 per pool
    assert len({id(pool._pool._ssl_context) for pool in transport.pools}) == 1


@pytest.mark.asyncio
async def test_the_small_pools_share_one_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making a TLS context loads the CA bundle (about 30 ms of CPU): one per pool
    made 16 for 64 connections, half a second at the start of every run."""
    import ssl

    from pocketbatch.loader._transport import ShardedTransport

    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    transport = ShardedTransport(64)
    for _ in range(64):  # every pool made (lazily, as requests need them)
        transport._busy[transport._pick()] += 1
    assert len(transport.pools) == 16
    assert len(made) == 1
    await transport.aclose()


@pytest.mark.asyncio
async def test_a_proxy_in_the_environment_is_still_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transport of our own would make httpx ignore HTTPS_PROXY: with one set, the
    run's client is httpx's own (one pool, the environment's proxy mounted)."""
    from pocketbatch.loader._transport import ShardedTransport

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    async with RunServices() as services:
        client = services.client(None)
        assert not isinstance(client._transport, ShardedTransport)
        assert any(pattern.scheme == "https" for pattern in client._mounts)


@pytest.mark.asyncio
async def test_the_clients_and_threads_close_even_when_an_owned_part_fails() -> None:
    class Breaks:
        async def aclose(self) -> None:
            raise RuntimeError("worker did not stop")

    services = RunServices()
    client = services.client(None)
    threads = services.threads()
    services.owned("hub", Breaks)
    with pytest.raises(RuntimeError, match="worker did not stop"):
        await services.aclose()
    assert client.is_closed
    with pytest.raises(RuntimeError, match="shutdown"):
        threads.submit(print)  # the pool was shut down
