"""The server spends one budget per LLM provider across its batches and ``/runs``
calls, set at ``serve`` time or by its config's ``providers:`` (issue 12).

In process (ASGI), against the fake provider. The server's limiters get a
:class:`FakeTime` (``manager.limiters``' clock and sleep), and the fake provider
stamps each request's arrival with it: a request arrives after its permit, never
before, so "at most B + t * rate by fake time t" holding for the arrivals is
what the limiter promised.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from _fake_llm import CHAT_FLOW_TO_INPUT_URL, FakeLLM, fake_llm
from _support import FakeTime

from pocketbatch.loader._services import ServiceSettings
from pocketbatch.server import ServerSettings, create_app


def within(stamps: list[float], start: float, burst: float, per_minute: float) -> bool:
    """Whether by every arrival at most ``burst + elapsed * per_minute / 60`` came."""
    return all(
        count <= burst + (stamp - start) * per_minute / 60 + 1e-9
        for count, stamp in enumerate(sorted(stamps), start=1)
    )


async def _batches(
    settings: ServerSettings, time: FakeTime, fake: FakeLLM, sizes: list[int]
) -> tuple[list[Any], Any]:
    """Submit batches of ``sizes`` items at once, wait for them; their statuses, and
    a ``/runs`` call's result made after them."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        limiters = app.state.manager.limiters
        limiters.clock, limiters.sleep = time.clock, time.sleep
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ids = []
            for size in sizes:
                inputs = [{"q": str(i), "base_url": fake.base_url} for i in range(size)]
                r = await client.post(
                    "/api/v1/batches",
                    json={"flow": CHAT_FLOW_TO_INPUT_URL, "inputs": inputs, "max_concurrent": 4},
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["batch_id"])
            await asyncio.gather(
                *(client.get(f"/api/v1/batches/{b}/outputs", params={"wait": "true"}) for b in ids)
            )
            views = [(await client.get(f"/api/v1/batches/{b}")).json() for b in ids]
            run = await client.post(
                "/api/v1/runs",
                json={
                    "flow": CHAT_FLOW_TO_INPUT_URL,
                    "input": {"q": "x", "base_url": fake.base_url},
                },
            )
            return views, run.json()


@pytest.mark.asyncio
async def test_two_concurrent_batches_share_one_limiter(tmp_path: Path) -> None:
    """4 requests a minute set at serve time: two batches of 4 send 4 between them,
    then one every 15 s; each batch's status shows its own 4 requests; a /runs call
    after them waits its turn in the same budget."""
    time = FakeTime()
    start = time.now
    with fake_llm() as fake:
        fake.clock = time.clock
        settings = ServerSettings(
            db=tmp_path / "pb.db",
            allow_hosts=frozenset({f"127.0.0.1:{fake.port}"}),
            services=ServiceSettings(requests_per_minute=4),
        )
        views, run = await _batches(settings, time, fake, [4, 4])
        stamps = list(fake.stamps)
    assert [v["succeeded"] for v in views] == [4, 4]
    assert [v["usage"]["requests"] for v in views] == [4, 4]
    assert run["outcome"] == "success"
    assert len(stamps) == 9
    assert within(stamps, start, burst=4, per_minute=4), stamps
    assert stamps[-1] >= start + 75  # the run's request: the 9th in the budget


@pytest.mark.asyncio
async def test_the_server_honours_providers_from_its_config(tmp_path: Path) -> None:
    time = FakeTime()
    start = time.now
    with fake_llm() as fake:
        fake.clock = time.clock
        config = tmp_path / "pocketbatch.yaml"
        config.write_text(
            f"providers:\n  {fake.base_url}:\n    requests_per_minute: 3\n", encoding="utf-8"
        )
        settings = ServerSettings(
            db=tmp_path / "pb.db",
            config=config,
            allow_hosts=frozenset({f"127.0.0.1:{fake.port}"}),
        )
        views, _ = await _batches(settings, time, fake, [6])
        stamps = list(fake.stamps)
    assert views[0]["succeeded"] == 6
    assert within(stamps, start, burst=3, per_minute=3), stamps
    assert time.now - start >= 60  # after the first 3, one every 20 s
