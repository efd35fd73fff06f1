"""Submitted flows and the network: no request forgery, no leak of the server's key.

A real ``pocketbatch serve`` subprocess on 127.0.0.1 and recording stub servers on
127.0.0.1 (the stubs run in this process, so a test sees what reached them). The
server denies loopback (so its own API and the stubs) unless ``--allow-host`` or
``--allow-network`` opens it, and sends its ``OPENAI_API_KEY`` only to its
``OPENAI_BASE_URL``. The in-process ASGI tests check the same through
``ServerSettings``. Nothing here reaches beyond loopback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _stub_http import Stub, running_stubs
from _support import ServerProcess

from pocketbatch.cli import main
from pocketbatch.server import ServerSettings, create_app

FETCH = """
steps:
  - id: get
    component: /http/request
    input: {url: {$input: url}, timeout: 10}
output: {$step: get, path: status_code}
"""

CHAT = """
steps:
  - id: chat
    component: /builtin/openai
    input:
      messages: [{role: user, content: hi}]
      base_url: {$input: base_url}
      api_key: {$input: api_key}
      timeout: 10
output: {$step: chat, path: response}
"""


@pytest.fixture
def stubs() -> Iterator[Callable[[], Stub]]:
    with running_stubs() as start:
        yield start


class Served(ServerProcess):
    """A ``pocketbatch serve`` subprocess on 127.0.0.1 (no proxies for its client)."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
        super().__init__(
            tmp_path,
            "--db",
            str(tmp_path / "pb.db"),
            *args,
            env=env,
            log=tmp_path / "server.log",
            trust_env=False,
        )

    def records(self, flow: str, inputs: list[Any]) -> list[dict[str, Any]]:
        r = self.client.post("/batches", json={"flow": flow, "inputs": inputs})
        assert r.status_code == 201, r.text
        out = self.client.get(f"/batches/{r.json()['batch_id']}/outputs", params={"wait": "true"})
        return [json.loads(line) for line in out.text.splitlines()]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def go(*args: str, **env: str) -> Served:
        base = {
            k: v
            for k, v in os.environ.items()
            if k != "POCKETBATCH_TOKEN" and not k.startswith("OPENAI_") and "PROXY" not in k.upper()
        }
        served = Served(tmp_path, list(args), {**base, **env})
        started.append(served)
        return served

    yield go
    for served in started:
        served.stop()


def test_a_submitted_flow_cannot_fetch_the_server_itself_or_loopback(
    serve: Callable[..., Served], stubs: Callable[[], Stub]
) -> None:
    stub = stubs()
    server = serve()
    own = f"127.0.0.1:{server.port}"
    urls = [
        f"http://{own}/api/v1/batches",
        f"http://localhost:{server.port}/api/v1/health",
        f"http://127.1:{server.port}/api/v1/health",
        f"http://2130706433:{server.port}/api/v1/health",
        f"http://0x7f000001:{server.port}/api/v1/health",
        f"http://[::ffff:127.0.0.1]:{server.port}/api/v1/health",
        f"{stub.url}/private",
    ]
    records = server.records(FETCH, [{"url": u} for u in urls])
    assert [r["outcome"] for r in records] == ["failed"] * len(urls), records
    assert {r["error"]["code"] for r in records} == {"PERMISSION_DENIED"}
    assert records[0]["error"]["message"] == (
        f"/http/request: GET http://{own}/api/v1/batches: {own} is a loopback address; flows "
        "on this server may not connect to loopback, link-local, private or other non-public "
        f"addresses. To allow it, start the server with --allow-host {own} or "
        "--allow-network 127.0.0.1/32"
    )
    assert "resolves to 127.0.0.1, a loopback address" in records[2]["error"]["message"]
    assert stub.seen == []


def test_allow_host_opens_exactly_that_host_and_port(
    serve: Callable[..., Served], stubs: Callable[[], Stub]
) -> None:
    opened, closed = stubs(), stubs()
    server = serve("--allow-host", f"127.0.0.1:{opened.port}")
    records = server.records(FETCH, [{"url": f"{opened.url}/a"}, {"url": f"{closed.url}/b"}])
    assert records[0] == {"index": 0, "outcome": "success", "result": 200}
    assert records[1]["error"]["code"] == "PERMISSION_DENIED"
    assert [s.path for s in opened.seen] == ["/a"]
    assert closed.seen == []


def test_allow_network_opens_a_range(
    serve: Callable[..., Served], stubs: Callable[[], Stub]
) -> None:
    stub = stubs()
    server = serve("--allow-network", "127.0.0.0/8")
    (record,) = server.records(FETCH, [{"url": f"http://127.1:{stub.port}/n"}])
    assert record["outcome"] == "success", record
    assert [s.path for s in stub.seen] == ["/n"]


def test_the_server_key_goes_only_to_its_configured_base_url(
    serve: Callable[..., Served], stubs: Callable[[], Stub]
) -> None:
    """The stub is the operator's endpoint (OPENAI_BASE_URL), opened by --allow-host;
    a flow that names another base URL, even on the same host, gets no server key."""
    llm = stubs()
    server = serve(
        "--allow-host",
        f"127.0.0.1:{llm.port}",
        OPENAI_BASE_URL=f"{llm.url}/v1",
        OPENAI_API_KEY="server-secret",
    )
    inputs = [
        {"base_url": None, "api_key": None},  # the configured endpoint
        {"base_url": f"{llm.url}/collect/v1", "api_key": None},
        {"base_url": f"{llm.url}/own/v1", "api_key": "flow-key"},
    ]
    records = server.records(CHAT, inputs)
    assert [r["outcome"] for r in records] == ["success"] * 3, records
    seen = sorted((s.path, s.headers.get("authorization")) for s in llm.seen)
    assert seen == [
        ("/collect/v1/chat/completions", None),
        ("/own/v1/chat/completions", "Bearer flow-key"),
        ("/v1/chat/completions", "Bearer server-secret"),
    ]


def test_bad_allowances_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for flag, value, message in (
        ("--allow-host", "example.com:http", "the port must be a number from 1 to 65535"),
        ("--allow-network", "10.0.0.5/8", "has host bits set"),
    ):
        with pytest.raises(SystemExit) as info:
            main(["serve", flag, value])
        assert info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a network"):
        create_app(ServerSettings(db=Path("unused.db"), allow_networks=frozenset({"ten"})))


# -- in process (ASGI) --------------------------------------------------------------------


async def _run(settings: ServerSettings, flow: str, input: Any) -> dict[str, Any]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post("/api/v1/runs", json={"flow": flow, "input": input})
            assert r.status_code == 200, r.text
            result: dict[str, Any] = r.json()
            return result


@pytest.mark.asyncio
async def test_server_settings_deny_loopback_by_default(
    tmp_path: Path, stubs: Callable[[], Stub]
) -> None:
    stub = stubs()
    denied = await _run(ServerSettings(db=tmp_path / "a.db"), FETCH, {"url": f"{stub.url}/x"})
    assert denied["outcome"] == "failed"
    assert denied["error"]["code"] == "PERMISSION_DENIED"
    assert stub.seen == []
    opened = ServerSettings(db=tmp_path / "b.db", allow_hosts=frozenset({f"127.0.0.1:{stub.port}"}))
    allowed = await _run(opened, FETCH, {"url": f"{stub.url}/x"})
    assert allowed == {"outcome": "success", "result": 200}
    assert [s.path for s in stub.seen] == ["/x"]
