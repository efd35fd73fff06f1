"""The server's step cache (issue 12): submitted flows' ``cache: true`` steps share one
SQLite file (``serve --cache``, default beside ``--db``), so a batch submitted again
calls the cached step zero times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketbatch import ComponentRegistry
from pocketbatch.cli._parser import build_parser
from pocketbatch.cli._remote import server_cache_path
from pocketbatch.server import ServerSettings, create_app

FLOW = """
steps:
  - {id: ask, component: /t/ask, input: {q: {$input: q}}, cache: {salt: v1}}
output: {$step: ask}
"""


async def run_batch(client: httpx.AsyncClient, inputs: list[Any]) -> list[str]:
    response = await client.post("/api/v1/batches", json={"flow": FLOW, "inputs": inputs})
    assert response.status_code == 201, response.text
    batch_id = response.json()["batch_id"]
    outputs = await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})
    return outputs.text.splitlines()


@pytest.mark.asyncio
async def test_a_batch_submitted_again_makes_no_call(tmp_path: Path) -> None:
    calls: list[Any] = []
    registry = ComponentRegistry()

    @registry.component("/t/ask")
    def ask(data: Any) -> Any:
        calls.append(data["q"])
        return f"A{data['q']}"

    settings = ServerSettings(db=tmp_path / "pb.db", registry=registry, cache=tmp_path / "c.db")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await run_batch(client, [{"q": i} for i in range(5)])
            again = await run_batch(client, [{"q": i} for i in range(5)])
    assert first == again
    assert '"result":"A3"' in first[3]
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert (tmp_path / "c.db").is_file()


def test_serve_cache_flags() -> None:
    def path(*argv: str) -> Path | None:
        return server_cache_path(build_parser().parse_args(["serve", *argv]))

    assert path("--db", "x/pb.db") == Path("x/pb.db.cache.sqlite")
    assert path("--cache", "c.sqlite") == Path("c.sqlite")
    assert path("--no-cache") is None
    with pytest.raises(SystemExit):
        path("--no-cache", "--cache", "c.sqlite")
