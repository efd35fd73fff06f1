"""The fake provider of ``benchmarks/fake_provider.py`` behaves like a rate-limited
provider: what the benchmark (and tests of clients) rely on. Counted, not timed: the
limits are per minute, so nothing refills noticeably during a test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from _fake_llm import fake_provider

Bucket = fake_provider.Bucket
ProviderConfig = fake_provider.ProviderConfig
RunningProvider = fake_provider.RunningProvider
running_provider = fake_provider.running_provider


@pytest.fixture
def limited() -> Iterator[RunningProvider]:
    config = ProviderConfig(
        latency=0.0, requests_limit=3, requests_window=60, tokens_limit=1000, tokens_window=60
    )
    with running_provider(config) as provider:
        yield provider


def chat(client: httpx.Client, base_url: str, text: str, **extra: object) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    return client.post(f"{base_url}/chat/completions", json=body)


def test_limits_are_reported_and_a_request_over_them_gets_a_429_that_consumes_nothing(
    limited: RunningProvider,
) -> None:
    with httpx.Client(trust_env=False) as client:
        replies = [chat(client, limited.base_url, f"q{i}") for i in range(5)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]
    first = replies[0].headers
    assert first["x-ratelimit-limit-requests"] == "3"
    assert first["x-ratelimit-remaining-requests"] == "2"
    assert first["x-ratelimit-limit-tokens"] == "1000"
    assert int(first["x-ratelimit-remaining-tokens"]) < 1000
    assert first["x-ratelimit-reset-requests"].endswith("s")
    refused = replies[3]
    assert int(refused.headers["retry-after-ms"]) > 0
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # the refused requests took nothing: the tokens left are those after the third answer
    assert (
        replies[4].headers["x-ratelimit-remaining-tokens"]
        == replies[2].headers["x-ratelimit-remaining-tokens"]
    )
    stats = limited.stats()
    assert (stats["requests"], stats["ok"], stats["rate_limited"]) == (5, 3, 2)
    assert stats["connections"] == 1  # keep-alive


def test_a_request_needing_more_tokens_than_left_is_refused() -> None:
    # a request costs its prompt tokens (7 here) plus max_tokens
    config = ProviderConfig(latency=0.0, tokens_limit=50, tokens_window=60)
    with running_provider(config) as provider, httpx.Client(trust_env=False) as client:
        assert chat(client, provider.base_url, "hi", max_tokens=30).status_code == 200
        assert chat(client, provider.base_url, "hi", max_tokens=30).status_code == 429
        assert chat(client, provider.base_url, "hi", max_tokens=1).status_code == 200


def test_faults_hit_first_attempts_only_and_repeat_answers_are_counted() -> None:
    config = ProviderConfig(latency=0.0, fault_rate=1.0)
    with running_provider(config) as provider, httpx.Client(trust_env=False) as client:
        statuses = [chat(client, provider.base_url, "same").status_code for _ in range(3)]
        statuses.append(chat(client, provider.base_url, "other").status_code)
        stats = provider.stats()
    assert statuses == [503, 200, 200, 503]
    assert (stats["faults"], stats["answered_twice"], stats["extra_answers"]) == (2, 1, 1)


def test_the_fault_rate_picks_the_same_prompts_every_run() -> None:
    def faulted() -> list[int]:
        config = ProviderConfig(latency=0.0, fault_rate=0.2)
        with running_provider(config) as provider, httpx.Client(trust_env=False) as client:
            return [i for i in range(50) if chat(client, provider.base_url, f"p{i}").is_error]

    first = faulted()
    assert first == faulted()
    assert 0 < len(first) < 50


def test_a_bucket_refills_continuously_up_to_its_limit() -> None:
    bucket = Bucket(10, 1.0, now=0.0)
    assert bucket.take(10, now=0.0)
    assert not bucket.take(1, now=0.05)  # 0.5 refilled
    assert bucket.take(1, now=0.1)
    assert bucket.wait_for(10, now=0.1) == pytest.approx(1.0)
    bucket.take(0, now=100.0)
    assert bucket.level == 10


def test_benchmark_modules_are_not_top_level_names_in_tests() -> None:
    """``benchmarks/`` is not on pytest's path (tests load its modules by file,
    ``_fake_llm.benchmark_module``), so its ``core.py``, ``batch.py``, ``server.py``
    cannot stand in for a test's ``import core`` or the like."""
    import importlib.util

    from _fake_llm import BENCHMARKS

    for name in ("fake_provider", "llm", "scaleout", "core", "batch", "server"):
        spec = importlib.util.find_spec(name)
        origins = [] if spec is None else [spec.origin, *(spec.submodule_search_locations or [])]
        assert not any(str(BENCHMARKS) in str(origin) for origin in origins), (name, origins)
    assert fake_provider.__file__ == str(BENCHMARKS / "fake_provider.py")
