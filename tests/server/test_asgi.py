"""The HTTP API in-process, through httpx's ASGI transport (no socket, no subprocess)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from pocketbatch.server import ServerSettings, create_app

FLOW = "output: {doubled: {$template: '{input.x}{input.x}'}}\n"


async def _client(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(ServerSettings(db=tmp_path / "pb.db")):
        yield c


@pytest_asyncio.fixture
async def secured(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(ServerSettings(db=tmp_path / "pb.db", token="s3cret")):
        yield c


async def submit(client: httpx.AsyncClient, inputs: list[Any], **extra: Any) -> str:
    response = await client.post("/api/v1/batches", json={"flow": FLOW, "inputs": inputs, **extra})
    assert response.status_code == 201, response.text
    batch_id: str = response.json()["batch_id"]
    return batch_id


@pytest.mark.asyncio
async def test_health(client: httpx.AsyncClient) -> None:
    """Health answers with the version."""
    body = (await client.get("/api/v1/health")).json()
    assert body["status"] == "ok"


@pytest.mark.asyncio
async def test_batch_round_trip(client: httpx.AsyncClient) -> None:
    """A submitted batch runs in the background; outputs come back in input order."""
    batch_id = await submit(client, [{"x": i} for i in range(30)], max_concurrent=4)
    text = (await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})).text
    lines = text.splitlines()
    assert len(lines) == 30
    assert lines[3] == '{"index":3,"outcome":"success","result":{"doubled":"33"}}'
    status = (await client.get(f"/api/v1/batches/{batch_id}")).json()
    assert (status["status"], status["done"], status["failed"], status["running"]) == (
        "completed",
        30,
        0,
        0,
    )


@pytest.mark.asyncio
async def test_failed_inputs_fail_alone(client: httpx.AsyncClient) -> None:
    """A bad JSONL line and an input the flow cannot use fail their own records."""
    response = await client.post(
        "/api/v1/batches",
        json={"flow": FLOW, "inputs_jsonl": '{"x": 1}\nnot json\n{"y": 2}\n'},
    )
    batch_id = response.json()["batch_id"]
    lines = (
        await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})
    ).text.splitlines()
    assert [line.split('"outcome":"')[1][:6] for line in lines] == ["succes", "failed", "failed"]
    assert "line 2" in lines[1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"inputs": [{}]}, 422, "'flow' is required"),
        ({"flow": "steps: [", "inputs": [{}]}, 422, "the flow does not load"),
        ({"flow": FLOW, "inputs": [{}], "max_concurrent": 0}, 422, "max_concurrent"),
        ({"flow": FLOW, "inputs": [{}], "max_concurrent": 2**63}, 422, "max_concurrent"),
        ({"flow": FLOW}, 422, "'inputs' is required"),
    ],
)
async def test_bad_submissions_are_refused_with_a_message(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, text: str
) -> None:
    """Each bad submission gets its status and a message naming the problem."""
    response = await client.post("/api/v1/batches", json=body)
    assert response.status_code == status
    assert text in response.json()["detail"]


@pytest.mark.asyncio
async def test_unknown_batch_is_404(client: httpx.AsyncClient) -> None:
    """An unknown batch id is a 404."""
    assert (await client.get("/api/v1/batches/nope")).status_code == 404


@pytest.mark.asyncio
async def test_run_one_input(client: httpx.AsyncClient) -> None:
    """POST /runs runs the flow once and returns the FlowResult."""
    response = await client.post("/api/v1/runs", json={"flow": FLOW, "input": {"x": "a"}})
    assert response.json() == {"outcome": "success", "result": {"doubled": "aa"}}


@pytest.mark.asyncio
async def test_token_guards_everything_but_health(secured: httpx.AsyncClient) -> None:
    """With a token, the API and the schema need it; health does not."""
    assert (await secured.get("/api/v1/health")).status_code == 200
    for path in ("/api/v1/batches", "/openapi.json"):
        assert (await secured.get(path)).status_code == 401
        ok = await secured.get(path, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


@pytest.mark.asyncio
async def test_concurrent_batches_each_complete(client: httpx.AsyncClient) -> None:
    """Several batches submitted at once all complete with their own records."""
    ids = await asyncio.gather(*(submit(client, [{"x": b}] * 5) for b in range(4)))
    for b, batch_id in enumerate(ids):
        text = (
            await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})
        ).text
        assert text.count(f'"doubled":"{b}{b}"') == 5


@pytest.mark.asyncio
async def test_a_jsonl_body_submits_a_batch(client: httpx.AsyncClient) -> None:
    """A JSONL body: settings on line 1, inputs after, numbered as in the inputs file."""
    import orjson

    head = orjson.dumps({"flow": FLOW, "max_concurrent": 2})
    body = head + b'\n{"x": 1}\nnot json\n{"x": 3}\n'
    response = await client.post(
        "/api/v1/batches", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 201, response.text
    batch_id = response.json()["batch_id"]
    lines = (
        await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})
    ).text.splitlines()
    assert len(lines) == 3
    assert lines[0] == '{"index":0,"outcome":"success","result":{"doubled":"11"}}'
    assert "line 2" in lines[1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status"),
    [(b"not json\n{}\n", 400), (b'{"flow": "output: 1\\n", "inputs": []}\n', 422)],
)
async def test_a_bad_jsonl_header_is_refused(
    client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    """Line 1 of a JSONL body must be the batch settings."""
    response = await client.post(
        "/api/v1/batches", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == status
    assert "line 1" in response.json()["detail"]


COOKBOOK_CONFIG = Path(__file__).parents[2] / "cookbook" / "data-pipeline" / "pocketbatch.yaml"

ORDER = {"order_id": "ORD-1", "customer": "Ada", "email": "ada@example.com", "country": "GB"}
ORDER |= {"amount": 1.5, "currency": "GBP"}

EXPLOIT = """\
steps:
  - id: x
    component: /data/re/enum/bltns/eval
    input: "__import__('subprocess').getoutput('id')"
output: {$step: x}
"""


@pytest.mark.asyncio
@pytest.mark.parametrize("endpoint", ["/api/v1/runs", "/api/v1/batches"])
async def test_the_route_walk_exploit_is_a_422_naming_the_path(
    tmp_path: Path, endpoint: str
) -> None:
    """Issue 10: with the cookbook's config as --config, a submitted flow reached
    builtins.eval through '/data/re/enum/bltns/eval'. Now the flow does not load."""
    settings = ServerSettings(db=tmp_path / "pb.db", config=COOKBOOK_CONFIG)
    async for client in _client(settings):
        body: dict[str, Any] = {"flow": EXPLOIT}
        body.update({"input": {}} if endpoint.endswith("runs") else {"inputs": [{}]})
        response = await client.post(endpoint, json=body)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "component '/data/re/enum/bltns/eval' is not allowed" in detail
        assert "uid=" not in response.text
        # The cookbook's own components are still there.
        flow = "steps:\n  - {id: v, component: /data/validate, input: {$input: $}}\n"
        flow += "output: {$step: v, path: order.order_id}\n"
        ok = await client.post("/api/v1/runs", json={"flow": flow, "input": ORDER})
        assert ok.json() == {"outcome": "success", "result": "ORD-1"}, ok.text


@pytest.mark.asyncio
async def test_sub_flow_paths_are_confined_to_the_data_dir(tmp_path: Path) -> None:
    """/builtin/eval and /builtin/map read sub-flow files only under --data-dir, as
    /builtin/load_file does; outside, the answer does not depend on whether the
    file exists and never shows its content."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "inner.yaml").write_text("output: {doubled: {$input: x}}\n")
    (tmp_path / "secret.yaml").write_text("root:x:0:0:s3cret:/root:/bin/bash\n")
    settings = ServerSettings(db=tmp_path / "pb.db", data_dir=data)

    def flow(component: str, key: str, source: str) -> str:
        more = "input: {x: 2}" if key == "flow" else "items: [{x: 2}]"
        return (
            f"steps:\n  - id: s\n    component: {component}\n"
            f"    input: {{{key}: {source}, {more}}}\noutput: {{$step: s}}\n"
        )

    async for client in _client(settings):
        for component, key in (("/builtin/eval", "flow"), ("/builtin/map", "workflow")):
            details = set()
            for source in ("../secret.yaml", "../missing.yaml", str(tmp_path / "secret.yaml")):
                text = flow(component, key, f"'{source}'")
                response = await client.post("/api/v1/runs", json={"flow": text, "input": {}})
                assert response.status_code == 422, response.text
                assert "s3cret" not in response.text
                details.add(response.json()["detail"].replace(repr(source), "<path>"))
                dynamic = flow(component, key, "{$input: path}")
                response = await client.post(
                    "/api/v1/runs", json={"flow": dynamic, "input": {"path": source}}
                )
                error = response.json()["error"]
                assert error["code"] == "PERMISSION_DENIED", response.text
                assert "s3cret" not in response.text
                details.add(error["message"].replace(repr(source), "<path>"))
            assert len(details) == 2, details  # one at load time, one at run time
        inside = flow("/builtin/eval", "flow", "inner.yaml")  # relative to --data-dir
        ok = await client.post("/api/v1/runs", json={"flow": inside, "input": {}})
        assert ok.json()["result"]["result"]["result"] == {"doubled": 2}, ok.text


# -- results JSON cannot hold, integers beyond 64 bits (issue 10) --------------------------

WEIRD_FLOW = (
    "steps:\n  - id: w\n    component: /t/weird\n    input: {$input: '$'}\noutput: {$step: w}\n"
)


def _weird(data: dict[str, Any]) -> Any:
    """What the input's ``kind`` names: values JSON cannot hold, or a big integer."""
    return {
        "set": lambda: {"s": {1, 2}},
        "object": lambda: {"o": object()},
        "nan": lambda: {"x": float("nan")},
        "big": lambda: {"n": 2**70, "m": -(2**64)},
    }.get(data.get("kind", ""), lambda: data)()


@pytest_asyncio.fixture
async def weird(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    from pocketbatch.loader import ComponentRegistry

    registry = ComponentRegistry()
    registry.register("/t/weird", _weird)
    async for c in _client(ServerSettings(db=tmp_path / "pb.db", registry=registry)):
        yield c


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["set", "object", "nan"])
async def test_run_of_a_result_that_is_not_json_is_invalid_output_not_500(
    weird: httpx.AsyncClient, kind: str
) -> None:
    """POST /runs answers the item's failed FlowResult, as run-batch's record says."""
    response = await weird.post("/api/v1/runs", json={"flow": WEIRD_FLOW, "input": {"kind": kind}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "failed"
    assert body["error"]["code"] == "INVALID_OUTPUT"
    assert "index" not in body


@pytest.mark.asyncio
async def test_run_keeps_integers_beyond_64_bits_exact(weird: httpx.AsyncClient) -> None:
    """In and out: a big integer in the input (not rounded to a float) and in the result."""
    big = 123456789012345678901234567890
    body = b'{"flow": ' + json.dumps(WEIRD_FLOW).encode() + b', "input": {"n": %d}}' % big
    echoed = await weird.post("/api/v1/runs", content=body)
    assert echoed.content == b'{"outcome":"success","result":{"n":%d}}' % big
    made = await weird.post("/api/v1/runs", json={"flow": WEIRD_FLOW, "input": {"kind": "big"}})
    assert made.content == (
        b'{"outcome":"success","result":{"n":1180591620717411303424,"m":-18446744073709551616}}'
    )


@pytest.mark.asyncio
async def test_a_result_that_is_not_json_fails_its_record_not_the_batch(
    weird: httpx.AsyncClient,
) -> None:
    """Such a result used to fail the whole batch (the rest never ran); now it is that
    item's INVALID_OUTPUT record, counted as failed, and the batch completes."""
    kinds = ["ok", "set", "big", "object", "nan", "ok"]
    response = await weird.post(
        "/api/v1/batches",
        json={"flow": WEIRD_FLOW, "inputs": [{"kind": k} for k in kinds], "max_concurrent": 1},
    )
    assert response.status_code == 201, response.text
    batch_id = response.json()["batch_id"]
    text = (await weird.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})).text
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["index"] for r in records] == list(range(6))
    assert [r["outcome"] for r in records] == [
        "success", "failed", "success", "failed", "failed", "success",
    ]  # fmt: skip
    assert {records[i]["error"]["code"] for i in (1, 3, 4)} == {"INVALID_OUTPUT"}
    assert records[2]["result"] == {"n": 2**70, "m": -(2**64)}
    status = (await weird.get(f"/api/v1/batches/{batch_id}")).json()
    assert (status["status"], status["done"], status["succeeded"], status["failed"]) == (
        "completed",
        6,
        3,
        3,
    )


@pytest.mark.asyncio
async def test_inputs_list_keeps_integers_beyond_64_bits_exact(client: httpx.AsyncClient) -> None:
    """A big integer in a JSON 'inputs' list used to become a float: it stays exact."""
    big = 123456789012345678901234567890
    body = b'{"flow": ' + json.dumps(FLOW).encode() + b', "inputs": [{"x": %d}, {"x": 1}]}' % big
    response = await client.post("/api/v1/batches", content=body)
    assert response.status_code == 201, response.text
    batch_id = response.json()["batch_id"]
    lines = (
        await client.get(f"/api/v1/batches/{batch_id}/outputs", params={"wait": "true"})
    ).text.splitlines()
    assert lines == [
        f'{{"index":0,"outcome":"success","result":{{"doubled":"{big}{big}"}}}}',
        '{"index":1,"outcome":"success","result":{"doubled":"11"}}',
    ]
