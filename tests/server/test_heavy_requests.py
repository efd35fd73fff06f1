"""Requests that used to stall or crash the server, in-process through httpx's ASGI
transport: flows over the reader's limits (422), deeply nested inputs and results
(their own failed records), and compiling off the event loop (``/health`` answers
while a flow compiles).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import pocketbatch.loader
from pocketbatch import ComponentRegistry
from pocketbatch.loader._source import MAX_ALIAS_NODES, MAX_DEPTH
from pocketbatch.server import ServerSettings, create_app

ECHO = "output: {$input: x}\n"


def laughs() -> str:
    lines = ["steps: []", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]")
    return "\n".join([*lines, "output: *a9"]) + "\n"


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


async def serving(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def outputs(client: httpx.AsyncClient, batch_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (laughs(), f"more than the limit of {MAX_ALIAS_NODES}"),
        ("steps: []\noutput: " + "[" * 500 + "]" * 500 + "\n", "nested more than"),
        ('{"output": ' + '{"a": ' * 600 + "1" + "}" * 600 + "}", "nested more than"),
    ],
    ids=["alias-bomb", "deep-yaml", "deep-json"],
)
async def test_flows_over_the_reader_limits_are_422(
    tmp_path: Path, flow: str, message: str
) -> None:
    async for client in serving(ServerSettings(db=tmp_path / "pb.db")):
        for path, body in (
            ("/api/v1/runs", {"flow": flow, "input": {}}),
            ("/api/v1/batches", {"flow": flow, "inputs": [{}]}),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert detail.startswith("the flow does not load: <string>:")
            assert message in detail


@pytest.mark.asyncio
async def test_deep_inputs_fail_their_own_records(tmp_path: Path) -> None:
    """Inputs nested past the limit (even past orjson's 255 levels for writing, or its
    1024 for reading) are failed records; the other inputs run; nothing is a 500."""
    async for client in serving(ServerSettings(db=tmp_path / "pb.db")):
        listed = [{"x": 1}, {"x": deep(MAX_DEPTH)}, {"x": deep(600)}, {"x": 4}]
        response = await client.post("/api/v1/batches", json={"flow": ECHO, "inputs": listed})
        assert response.status_code == 201, response.text
        got = await outputs(client, response.json()["batch_id"])
        assert [r["outcome"] for r in got] == ["success", "failed", "failed", "success"]
        assert got[1]["error"] == {
            "code": "INVALID_INPUT",
            "message": f"line 2: the input nests more than {MAX_DEPTH} levels of objects "
            f"and arrays (the limit is {MAX_DEPTH})",
        }
        assert got[2]["error"]["message"].startswith("line 3: the input nests more than")

        lines = "\n".join(['{"x": 1}', '{"x": ' + '{"a":' * 2000 + "1" + "}" * 2001])
        response = await client.post("/api/v1/batches", json={"flow": ECHO, "inputs_jsonl": lines})
        assert response.status_code == 201, response.text
        got = await outputs(client, response.json()["batch_id"])
        assert [r["outcome"] for r in got] == ["success", "failed"]
        assert got[1]["error"]["code"] == "INVALID_JSON"

        response = await client.post("/api/v1/runs", json={"flow": ECHO, "input": {"x": deep(600)}})
        assert response.status_code == 200
        assert response.json()["error"]["code"] == "INVALID_INPUT"


@pytest.mark.asyncio
async def test_a_result_orjson_cannot_write_is_still_stored(tmp_path: Path) -> None:
    """A component's 300-level result (past orjson's 255) used to fail the whole batch."""
    components = ComponentRegistry()

    @components.component("/test/deep")
    def make_deep(input: Any) -> Any:
        return deep(input["levels"])

    flow = "steps:\n  - {id: d, component: /test/deep, input: {levels: {$input: n}}}\n"
    flow += "output: {$step: d}\n"
    settings = ServerSettings(db=tmp_path / "pb.db", registry=components)
    async for client in serving(settings):
        inputs = [{"n": 2}, {"n": 300}, {"n": 5000}, {"n": 3}]
        response = await client.post("/api/v1/batches", json={"flow": flow, "inputs": inputs})
        batch_id = response.json()["batch_id"]
        got = await outputs(client, batch_id)
        assert [r["outcome"] for r in got] == ["success", "success", "failed", "success"]
        assert got[2]["error"]["code"] == "INVALID_OUTPUT"
        status = (await client.get(f"/api/v1/batches/{batch_id}")).json()
        assert (status["status"], status["failed"]) == ("completed", 1)


@pytest.mark.asyncio
async def test_health_answers_while_a_flow_compiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compile is held on a threading.Event; /health must answer meanwhile, which
    it can only do when the compile is not on the event loop."""
    started, release, compiled = threading.Event(), threading.Event(), threading.Event()
    real = pocketbatch.loader.load_flow

    def held(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(timeout=60)  # (only a safety net: the test releases it)
        try:
            return real(*args, **kwargs)
        finally:
            compiled.set()

    monkeypatch.setattr(pocketbatch.loader, "load_flow", held)
    async for client in serving(ServerSettings(db=tmp_path / "pb.db")):
        run = asyncio.create_task(
            client.post("/api/v1/runs", json={"flow": ECHO, "input": {"x": 7}})
        )
        assert await asyncio.to_thread(started.wait, 60)
        health = await client.get("/api/v1/health")
        assert health.status_code == 200
        assert not compiled.is_set(), "/health only answered once the compile was done"
        release.set()
        response = await run
        assert response.json() == {"outcome": "success", "result": 7}


@pytest.mark.asyncio
async def test_runs_answers_a_result_json_cannot_hold_with_a_failure(tmp_path: Path) -> None:
    """/runs used to answer 500 (RecursionError, or ValueError for NaN) here."""
    components = ComponentRegistry()

    @components.component("/test/value")
    def value(input: Any) -> Any:
        return deep(5000) if input["kind"] == "deep" else float("nan")

    flow = "steps:\n  - {id: v, component: /test/value, input: {kind: {$input: kind}}}\n"
    flow += "output: {$step: v}\n"
    settings = ServerSettings(db=tmp_path / "pb.db", registry=components)
    async for client in serving(settings):
        for kind in ("deep", "nan"):
            response = await client.post(
                "/api/v1/runs", json={"flow": flow, "input": {"kind": kind}}
            )
            assert response.status_code == 200, response.text
            assert response.json()["outcome"] == "failed"
            assert response.json()["error"]["code"] == "INVALID_OUTPUT"
