"""The server's batch status shows what a batch's LLM calls spent (issue 12), kept
in the store when the batch stops; its items share one connection pool through
the server's guarded transport. In process (ASGI), against the fake provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from _fake_llm import CHAT_FLOW_TO_INPUT_URL, USAGE, fake_llm

from pocketbatch.server import ServerSettings, create_app


async def _status(settings: ServerSettings, submit: dict[str, Any] | None, batch: str = "") -> Any:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if submit is not None:
                r = await client.post("/api/v1/batches", json=submit)
                assert r.status_code == 201, r.text
                batch = r.json()["batch_id"]
                await client.get(f"/api/v1/batches/{batch}/outputs", params={"wait": "true"})
            r = await client.get(f"/api/v1/batches/{batch}")
            return batch, r.json()


@pytest.mark.asyncio
async def test_batch_status_has_its_usage_and_keeps_it(tmp_path: Path) -> None:
    with fake_llm() as fake:
        fake.fail(429, retry_after_ms="1")
        allow = frozenset({f"127.0.0.1:{fake.port}"})
        settings = ServerSettings(db=tmp_path / "pb.db", allow_hosts=allow)
        inputs = [{"q": str(i), "base_url": fake.base_url} for i in range(10)]
        submit = {"flow": CHAT_FLOW_TO_INPUT_URL, "inputs": inputs, "max_concurrent": 2}
        batch, view = await _status(settings, submit)
        connections = fake.connections
    assert view["status"] == "completed"
    assert view["succeeded"] == 10
    expected = {
        "requests": 11,
        "tokens_in": 10 * USAGE["prompt_tokens"],
        "tokens_out": 10 * USAGE["completion_tokens"],
        "rate_limited": 1,
        "retries": 1,
        "cache_hits": 0,
    }
    assert view["usage"] == expected
    assert connections <= 2  # one pool for the batch, through the guarded transport
    _, again = await _status(settings, None, batch)  # a restarted server reads it back
    assert again["usage"] == expected


@pytest.mark.asyncio
async def test_a_batch_without_llm_calls_has_no_usage(tmp_path: Path) -> None:
    settings = ServerSettings(db=tmp_path / "pb.db")
    _, view = await _status(settings, {"flow": "output: {$input: x}\n", "inputs": [{"x": 1}]})
    assert view["succeeded"] == 1
    assert view["usage"] is None
