"""The HTTP API against a real ``pocketbatch serve`` subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ServerProcess, free_port
from _support import server_env as clean_env

DATA = Path(__file__).parent / "data"
CONFIG = DATA / "pocketbatch.yaml"
SQUARE = (DATA / "square.yaml").read_text()
SLEEP = (DATA / "sleep.yaml").read_text()
LOAD = (DATA / "load.yaml").read_text()


class Server(ServerProcess):
    """A ``pocketbatch serve`` subprocess (on ``tmp_path/pb.db``) and a client for it."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        config: Path | None = CONFIG,
        env: dict[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        options = ["--db", str(tmp_path / "pb.db")]
        if config is not None:
            options += ["--config", str(config)]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        super().__init__(tmp_path, *options, *args, env=env or clean_env(), headers=headers)

    # helpers
    def submit(self, flow: str, inputs: list[Any], **extra: Any) -> str:
        r = self.client.post("/batches", json={"flow": flow, "inputs": inputs, **extra})
        assert r.status_code == 201, r.text
        batch_id: str = r.json()["batch_id"]
        return batch_id

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            assert self.proc.poll() is None, "the server died"
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def go(*args: str, **kw: Any) -> Server:
        server = Server(tmp_path, *args, **kw)
        servers.append(server)
        return server

    yield go
    for server in servers:
        server.stop()


@pytest.fixture
def server(start: Callable[..., Server]) -> Server:
    return start()


INPUTS_JSONL = '{"i": 1}\n{"i": 2}\n{"i": 3, "fail": true}\n{"i": "x"}\nnot json\n\n[1]\n{"i": 4}\n'


# -- submitting and reading ------------------------------------------------------------


def test_health(server: Server) -> None:
    r = server.client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_submit_returns_the_flow_warnings(server: Server) -> None:
    """A key Stepflow ignores: the batch runs, and the response lists the warning."""
    flow = SQUARE.replace("steps:\n", "depends_on: []\nsteps:\n", 1)
    assert flow != SQUARE
    r = server.client.post("/batches", json={"flow": flow, "inputs": [{"i": 2}]})
    assert r.status_code == 201
    (warning,) = r.json()["warnings"]
    assert warning.endswith("unknown key 'depends_on' in the flow, which Stepflow ignores")
    assert warning.startswith("<string>:")
    assert server.outputs(r.json()["batch_id"])[0]["outcome"] == "success"


def test_submit_inputs_list(server: Server) -> None:
    r = server.client.post(
        "/batches", json={"flow": SQUARE, "inputs": [{"i": k} for k in range(5)]}
    )
    assert r.status_code == 201
    assert r.json()["warnings"] == []  # keys Stepflow ignores would be listed here
    assert set(r.json()) == {"batch_id", "warnings"}
    records = server.outputs(r.json()["batch_id"])
    assert records == [
        {
            "index": k,
            "outcome": "success",
            "result": {"i": k, "square": k * k, "label": "odd" if k % 2 else "even"},
        }
        for k in range(5)
    ]


def test_submit_inputs_jsonl_counts(server: Server) -> None:
    r = server.client.post("/batches", json={"flow": SQUARE, "inputs_jsonl": INPUTS_JSONL})
    assert r.status_code == 201, r.text
    batch_id = r.json()["batch_id"]
    server.outputs(batch_id)
    view = server.batch(batch_id)
    assert view["batch_id"] == batch_id
    assert view["status"] == "completed"
    assert (view["total"], view["done"], view["succeeded"], view["failed"]) == (7, 7, 3, 4)
    assert view["pending"] == 0
    assert view["finished"] is not None
    assert view["finished"] >= view["created"]


def test_bad_jsonl_lines_fail_their_own_record_naming_the_line(server: Server) -> None:
    r = server.client.post("/batches", json={"flow": SQUARE, "inputs_jsonl": INPUTS_JSONL})
    records = server.outputs(r.json()["batch_id"])
    assert [rec["index"] for rec in records] == list(range(7))
    bad = {rec["index"]: rec["error"] for rec in records if rec["outcome"] == "failed"}
    assert bad[3]["code"] == "INVALID_INPUT"
    assert bad[3]["message"].startswith("line 4:")
    assert bad[4]["code"] == "INVALID_JSON"
    assert bad[4]["message"].startswith("line 5:")
    assert bad[5]["code"] == "INVALID_INPUT"
    assert bad[5]["message"].startswith("line 7:")
    assert bad[2]["code"] == "COMPONENT_FAILED"


@pytest.mark.parametrize("max_concurrent", [1, 3])
def test_outputs_equal_run_batch_byte_for_byte(
    server: Server, tmp_path: Path, max_concurrent: int
) -> None:
    lines = INPUTS_JSONL + "".join(f'{{"i": {k}}}\n' for k in range(5, 60))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(lines)
    local = tmp_path / "local.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pocketbatch",
            "run-batch",
            "--flow",
            str(DATA / "square.yaml"),
            "--config",
            str(CONFIG),
            "--inputs",
            str(inputs),
            "--output",
            str(local),
            "--max-concurrent",
            str(max_concurrent),
            "--no-progress",
        ],
        capture_output=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 1, done.stderr  # some items fail
    r = server.client.post(
        "/batches",
        json={"flow": SQUARE, "inputs_jsonl": lines, "max_concurrent": max_concurrent},
    )
    assert r.status_code == 201
    remote = server.client.get(f"/batches/{r.json()['batch_id']}/outputs?wait=true")
    assert remote.status_code == 200
    assert remote.headers["content-type"].startswith("application/x-ndjson")
    assert remote.content == local.read_bytes()


def run_batch_output(tmp_path: Path, inputs: Path, max_concurrent: int = 1) -> bytes:
    """What ``pocketbatch run-batch`` writes for the square flow over ``inputs``."""
    out = tmp_path / f"{inputs.stem}.run-batch.jsonl"
    done = subprocess.run(
        [
            sys.executable, "-m", "pocketbatch", "run-batch", "--flow", str(DATA / "square.yaml"),
            "--config", str(CONFIG), "--inputs", str(inputs), "--output", str(out),
            "--max-concurrent", str(max_concurrent), "--no-progress",
        ],
        capture_output=True, timeout=120, env=clean_env(), check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert b"Traceback" not in done.stderr, done.stderr
    return out.read_bytes()


def jsonl_body(settings: dict[str, Any], lines: bytes) -> dict[str, Any]:
    """httpx arguments for a JSONL body: the settings line, then the lines as they are."""
    body = json.dumps(settings).encode() + b"\n" + lines
    return {"content": body, "headers": {"Content-Type": "application/x-ndjson"}}


BIG = 123456789012345678901234567890


@pytest.mark.parametrize("max_concurrent", [1, 4])
def test_an_integer_beyond_64_bits_is_one_record_not_the_end_of_the_batch(
    server: Server, tmp_path: Path, max_concurrent: int
) -> None:
    """One such input used to fail the whole server batch (the rest never ran, no resume);
    now every input runs and the records are run-batch's, byte for byte."""
    lines = f'{{"i": 1}}\n{{"i": {BIG}}}\n{{"i": {-(2**70)}}}\n' + "".join(
        f'{{"i": {k}}}\n' for k in range(2, 12)
    )
    inputs = tmp_path / "big.jsonl"
    inputs.write_text(lines)
    local = run_batch_output(tmp_path, inputs, max_concurrent)
    r = server.client.post(
        "/batches",
        json={"flow": SQUARE, "inputs_jsonl": lines, "max_concurrent": max_concurrent},
    )
    assert r.status_code == 201, r.text
    batch_id = r.json()["batch_id"]
    remote = server.client.get(f"/batches/{batch_id}/outputs?wait=true")
    assert remote.content == local
    records = [json.loads(line) for line in local.splitlines()]
    assert records[1]["result"] == {"i": BIG, "square": BIG * BIG, "label": "even"}
    view = server.batch(batch_id)
    assert (view["status"], view["done"], view["failed"]) == ("completed", 13, 0)


# Lines as run-batch reads them: CRLF (its \r dropped); a bare \r inside line 2 (one
# line, not two); a blank CRLF line; invalid UTF-8 (that line's INVALID_JSON); no final LF.
ODD_LINES = b'{"i": 1}\r\n{"i": 2}\r{"i": 3}\n\r\n{"i": "\xff"}\n{"i": 4}\r\n\n{"i": 5}'


@pytest.mark.parametrize(
    "lines", [ODD_LINES, ODD_LINES.replace(b"\xff", b"x")], ids=["bad-utf8", "utf8"]
)
def test_a_jsonl_body_gives_run_batchs_records_byte_for_byte(
    server: Server, tmp_path: Path, lines: bytes
) -> None:
    """Invalid UTF-8 used to become U+FFFD and succeed on the server (it fails in
    run-batch); lines are now split, numbered and read exactly as run-batch reads them."""
    inputs = tmp_path / "odd.jsonl"
    inputs.write_bytes(lines)
    local = run_batch_output(tmp_path, inputs)
    assert local.count(b"\n") == 5  # 7 lines, 2 blank
    r = server.client.post("/batches", **jsonl_body({"flow": SQUARE}, lines))
    assert r.status_code == 201, r.text
    remote = server.client.get(f"/batches/{r.json()['batch_id']}/outputs?wait=true")
    assert remote.content == local
    if b"\xff" not in lines:  # the same through 'inputs_jsonl' (text cannot hold \xff)
        r = server.client.post("/batches", json={"flow": SQUARE, "inputs_jsonl": lines.decode()})
        remote = server.client.get(f"/batches/{r.json()['batch_id']}/outputs?wait=true")
        assert remote.content == local


def test_unknown_batch_is_404(server: Server) -> None:
    for method, path in [
        ("GET", "/batches/nope"),
        ("GET", "/batches/nope/outputs"),
        ("GET", "/batches/nope/outputs?wait=true"),
        ("POST", "/batches/nope/cancel"),
    ]:
        r = server.client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert "nope" in r.json()["detail"]


def test_list_batches_pages(server: Server) -> None:
    ids = [server.submit(SQUARE, [{"i": k}]) for k in range(5)]
    seen: list[str] = []
    for offset in (0, 2, 4):
        r = server.client.get("/batches", params={"limit": 2, "offset": offset})
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == 5
        assert len(body["batches"]) == (2 if offset < 4 else 1)
        seen += [b["batch_id"] for b in body["batches"]]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 5
    assert seen == list(reversed(ids))  # newest first
    assert server.client.get("/batches").json()["total"] == 5
    for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        assert server.client.get("/batches", params=bad).status_code == 422


def test_runs_is_synchronous(server: Server) -> None:
    r = server.client.post("/runs", json={"flow": SQUARE, "input": {"i": 7}})
    assert r.status_code == 200
    assert r.json() == {"outcome": "success", "result": {"i": 7, "square": 49, "label": "odd"}}
    r = server.client.post("/runs", json={"flow": SQUARE, "input": {"i": 7, "fail": True}})
    assert r.status_code == 200
    assert r.json()["outcome"] == "failed"
    assert r.json()["error"]["code"] == "COMPONENT_FAILED"
    r = server.client.post("/runs", json={"flow": "steps: [\n", "input": {}})
    assert r.status_code == 422


def test_cancel_a_slow_batch(server: Server) -> None:
    batch_id = server.submit(SLEEP, [{"i": k, "ms": 50} for k in range(200)], max_concurrent=4)
    server.wait_for(lambda: server.batch(batch_id)["done"] >= 4, "some progress")
    r = server.client.post(f"/batches/{batch_id}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert r.json()["finished"] is not None
    records = server.outputs(batch_id)
    indexes = [rec["index"] for rec in records]
    assert 4 <= len(indexes) < 200
    assert indexes == sorted(set(indexes))
    assert all(
        rec == {"index": i, "outcome": "success", "result": {"i": i}}
        for i, rec in zip(indexes, records)
    )
    view = server.batch(batch_id)
    assert view["status"] == "cancelled"
    assert view["done"] == len(indexes)
    # a cancelled batch stays put; cancelling again is harmless
    again = server.client.post(f"/batches/{batch_id}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert server.batch(batch_id)["done"] == len(indexes)


def test_cancel_of_a_finished_batch_keeps_it(server: Server) -> None:
    batch_id = server.submit(SQUARE, [{"i": 1}])
    server.outputs(batch_id)
    r = server.client.post(f"/batches/{batch_id}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "completed"


def test_small_batch_is_not_starved_by_a_large_one(start: Callable[..., Server]) -> None:
    server = start("--max-concurrent", "4")
    large = server.submit(SLEEP, [{"i": k, "ms": 30} for k in range(400)], max_concurrent=4)
    server.wait_for(lambda: server.batch(large)["done"] >= 8, "the large batch to run")
    small = server.submit(SLEEP, [{"i": k, "ms": 30} for k in range(6)], max_concurrent=4)
    records = server.outputs(small)  # waits for the small batch
    assert [r["index"] for r in records] == list(range(6))
    assert server.batch(small)["status"] == "completed"
    view = server.batch(large)
    assert view["status"] == "running"
    assert view["done"] < 400
    assert server.client.post(f"/batches/{large}/cancel").status_code == 200


# -- validation ------------------------------------------------------------------------


def test_malformed_json_body_is_400(server: Server) -> None:
    for path in ("/batches", "/runs"):
        r = server.client.post(
            path, content=b'{"flow": ', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        assert "not JSON" in r.json()["detail"]


def test_body_must_be_an_object(server: Server) -> None:
    r = server.client.post("/batches", json=[SQUARE])
    assert r.status_code == 422


def test_bad_flow_yaml_is_422_with_line_and_column(server: Server) -> None:
    flow = (
        "name: broken\nsteps:\n  - id: a\n    component: /builtin/noop\n"
        "    input: {text: [unclosed\n"
    )
    r = server.client.post("/batches", json={"flow": flow, "inputs": [{}]})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "invalid YAML" in detail
    assert "<string>:" in detail
    import re

    assert re.search(r":\d+:\d+:", detail), detail


def test_unknown_component_is_422_naming_it(server: Server) -> None:
    flow = "steps:\n  - id: a\n    component: /nowhere/thing\n    input: {}\noutput: {$step: a}\n"
    r = server.client.post("/batches", json={"flow": flow, "inputs": [{}]})
    assert r.status_code == 422
    assert "/nowhere/thing" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"i": 1}]},
        {"flow": "", "inputs": [{"i": 1}]},
        {"flow": "   \n", "inputs": [{"i": 1}]},
        {"flow": 3, "inputs": [{"i": 1}]},
    ],
)
def test_missing_flow_is_422(server: Server, body: dict[str, Any]) -> None:
    r = server.client.post("/batches", json=body)
    assert r.status_code == 422
    assert "flow" in r.json()["detail"]


@pytest.mark.parametrize("value", [0, -1, "4", 1.5, True, None])
def test_bad_max_concurrent_is_422(server: Server, value: Any) -> None:
    r = server.client.post(
        "/batches", json={"flow": SQUARE, "inputs": [{"i": 1}], "max_concurrent": value}
    )
    assert r.status_code == 422
    assert "max_concurrent" in r.json()["detail"]


def test_inputs_and_inputs_jsonl_together_is_422(server: Server) -> None:
    r = server.client.post(
        "/batches", json={"flow": SQUARE, "inputs": [{"i": 1}], "inputs_jsonl": '{"i": 1}\n'}
    )
    assert r.status_code == 422
    assert "not both" in r.json()["detail"]


@pytest.mark.parametrize("body", [{}, {"inputs": {"i": 1}}, {"inputs_jsonl": ["x"]}])
def test_missing_or_wrong_inputs_is_422(server: Server, body: dict[str, Any]) -> None:
    r = server.client.post("/batches", json={"flow": SQUARE, **body})
    assert r.status_code == 422
    assert "inputs" in r.json()["detail"]


def test_refused_submissions_store_nothing(server: Server) -> None:
    server.client.post("/batches", json={"flow": "steps: [\n", "inputs": [{}]})
    server.client.post("/batches", json={"flow": SQUARE, "inputs": [{}], "max_concurrent": 0})
    assert server.client.get("/batches").json()["total"] == 0


def test_flow_larger_than_the_limit_is_413(server: Server) -> None:
    flow = SQUARE + "# " + "x" * (1024 * 1024) + "\n"
    r = server.client.post("/batches", json={"flow": flow, "inputs": [{"i": 1}]})
    assert r.status_code == 413
    assert "bytes" in r.json()["detail"]
    assert server.client.get("/health").status_code == 200


# -- security ----------------------------------------------------------------------------


def test_token_guards_every_endpoint_but_health(start: Callable[..., Server]) -> None:
    server = start("--token", "s3cret", token="s3cret")
    batch_id = server.submit(SQUARE, [{"i": 2}])
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/batches", {"flow": SQUARE, "inputs": [{"i": 1}]}),
        ("GET", "/batches", None),
        ("GET", f"/batches/{batch_id}", None),
        ("GET", f"/batches/{batch_id}/outputs?wait=true", None),
        ("POST", f"/batches/{batch_id}/cancel", None),
        ("POST", "/runs", {"flow": SQUARE, "input": {"i": 1}}),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as anon:
        assert anon.get("/health").status_code == 200
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret"},
            {"Authorization": "Bearer s3cretX"},
            {"Authorization": "Basic s3cret"},
        ):
            for method, path, body in calls:
                r = anon.request(method, path, json=body, headers=headers)
                assert r.status_code == 401, (headers, method, path, r.status_code)
        before = anon.get("/batches", headers={"Authorization": "Bearer s3cret"}).json()
        assert before["total"] == 1  # the refused POSTs stored nothing
    for method, path, body in calls:
        r = server.client.request(method, path, json=body)
        assert r.status_code in (200, 201), (method, path, r.text)


def test_token_from_the_environment(start: Callable[..., Server]) -> None:
    server = start(env=clean_env(POCKETBATCH_TOKEN="envtok"), token="envtok")
    assert server.client.get("/batches").status_code == 200
    with httpx.Client(base_url=server.url, timeout=60) as anon:
        assert anon.get("/batches").status_code == 401


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_no_token_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pocketbatch",
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            "--db",
            str(tmp_path / "pb.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert "refusing to listen" in done.stderr
    assert "--token" in done.stderr
    assert not (tmp_path / "pb.db").exists()
    with socket.socket() as s:  # the port was never taken
        s.bind(("127.0.0.1", port))


def test_python_imports_are_refused(server: Server) -> None:
    flow = (
        "steps:\n  - id: a\n    component: /python/os.getcwd\n    input: {}\noutput: {$step: a}\n"
    )
    for path in ("/batches", "/runs"):
        r = server.client.post(path, json={"flow": flow, "inputs": [{}], "input": {}})
        assert r.status_code == 422
        assert "/python/os.getcwd" in r.json()["detail"]


def _module(tmp_path: Path, name: str) -> None:
    (tmp_path / f"{name}.py").write_text(
        "def shout(data):\n    return {'text': str(data.get('text', '')).upper()}\n"
    )


def _python_flow(module: str) -> str:
    return (
        "steps:\n  - id: a\n"
        f"    component: /python/{module}.shout\n"
        "    input: {text: {$input: text}}\n"
        "output: {$step: a, path: text}\n"
    )


def test_allow_module_lets_only_that_module_in(
    start: Callable[..., Server], tmp_path: Path
) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    _module(mods, "pbsrv_allowed")
    _module(mods, "pbsrv_other")
    server = start("--allow-module", "pbsrv_allowed", env=clean_env(PYTHONPATH=str(mods)))
    batch_id = server.submit(_python_flow("pbsrv_allowed"), [{"text": "hi"}, {"text": "yo"}])
    assert server.outputs(batch_id) == [
        {"index": 0, "outcome": "success", "result": "HI"},
        {"index": 1, "outcome": "success", "result": "YO"},
    ]
    r = server.client.post(
        "/runs", json={"flow": _python_flow("pbsrv_allowed"), "input": {"text": "a"}}
    )
    assert r.status_code == 200
    assert r.json()["result"] == "A"
    for other in ("pbsrv_other", "os", "pbsrv_allowed_not"):
        r = server.client.post("/batches", json={"flow": _python_flow(other), "inputs": [{}]})
        assert r.status_code == 422, (other, r.text)
        assert f"/python/{other}.shout" in r.json()["detail"]


def test_load_file_is_confined_to_the_data_dir(
    start: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "inside.json").write_text('{"ok": 1}')
    (tmp_path / "secret.json").write_text('{"secret": 1}')
    server = start("--data-dir", str(data_dir))
    inputs = [
        {"path": "inside.json"},
        {"path": str(data_dir / "inside.json")},
        {"path": "../secret.json"},
        {"path": str(tmp_path / "secret.json")},
        {"path": "/etc/passwd"},
    ]
    records = server.outputs(server.submit(LOAD, inputs))
    assert records[0] == {"index": 0, "outcome": "success", "result": {"ok": 1}}
    assert records[1] == {"index": 1, "outcome": "success", "result": {"ok": 1}}
    for rec in records[2:]:
        assert rec["outcome"] == "failed", rec
        assert rec["error"]["code"] == "PERMISSION_DENIED"
        assert 'secret": 1' not in json.dumps(rec)
    r = server.client.post("/runs", json={"flow": LOAD, "input": {"path": "../secret.json"}})
    assert r.json()["error"]["code"] == "PERMISSION_DENIED"


def test_submitted_flow_cannot_route_to_its_own_modules(
    start: Callable[..., Server], tmp_path: Path
) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    marker = tmp_path / "imported"
    (mods / "pbsrv_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef shout(data):\n    return 'pwned'\n"
    )
    server = start(config=None, env=clean_env(PYTHONPATH=str(mods)))
    flow = (
        "steps:\n  - id: a\n    component: /evil/shout\n    input: {}\n"
        "output: {$step: a}\n"
        "test:\n  config:\n    routes:\n      /evil: pbsrv_evil\n"
    )
    r = server.client.post("/runs", json={"flow": flow, "input": {}})
    assert r.status_code == 422, r.text
    assert not marker.exists()
