"""The remote-batch clients against a REAL ``pocketbatch serve`` on 127.0.0.1.

A server subprocess is started with the cookbook data-pipeline's
``pocketbatch.yaml`` as its ``--config`` (the server compiles submitted flow
TEXT, so the ``/data`` routes come from the server's config). Checked:

- :class:`pocketbatch.client.Client` and :class:`~pocketbatch.client.AsyncClient`
  operations, URL forms, :class:`~pocketbatch.client.ServerError` (404, 422, 401);
- network errors while waiting and streaming are ridden out (a server restarted
  mid-wait, a stream cut mid-way) without losing or repeating a record;
- the CLI as subprocesses: ``submit-batch --wait`` output is byte-identical to
  ``run-batch`` on the same flow and inputs; ``get-batch``, ``list-batches``,
  ``cancel-batch``; tokens (right, wrong, missing); exit codes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pocketbatch.client import AsyncClient, Client, ServerError, api_url

REPO = Path(__file__).parent.parent
PIPELINE = REPO / "cookbook" / "data-pipeline"
FLOW = PIPELINE / "flow.yaml"
INPUTS = PIPELINE / "inputs.jsonl"
CONFIG = PIPELINE / "pocketbatch.yaml"
TOKEN = "s3cret-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    db: Path
    token: str | None
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "pocketbatch", "serve", "--port", str(self.port)]
        args += ["--db", str(self.db), "--config", str(CONFIG)]
        if self.token:
            args += ["--token", self.token]
        env = {k: v for k, v in os.environ.items() if k != "POCKETBATCH_TOKEN"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.db.parent, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _server(tmp: Path, token: str | None) -> Iterator[Server]:
    port = _free_port()
    server = Server(f"http://127.0.0.1:{port}", port, tmp / "pb.db", token, tmp / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory.mktemp("server"), None)


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory.mktemp("token_server"), TOKEN)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Server]:
    yield from _server(tmp_path, None)


@pytest.fixture(scope="module")
def local_records(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """What ``pocketbatch run-batch`` writes for the cookbook flow and inputs."""
    out = tmp_path_factory.mktemp("local") / "out.jsonl"
    ran = pb("run-batch", "--flow", FLOW, "--inputs", INPUTS, "--output", out, "--no-progress")
    assert ran.code == 1, ran.err  # the cookbook inputs include failing orders
    data = out.read_bytes()
    assert data.count(b"\n") == 20
    return data


@dataclass
class Ran:
    code: int
    out: str
    err: str
    raw: bytes


def pb(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> Ran:
    full_env = {k: v for k, v in os.environ.items() if k != "POCKETBATCH_TOKEN"}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "pocketbatch", *map(str, args)],
        capture_output=True,
        cwd=PIPELINE,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode(), done.stdout)


# --- the URL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://h:1", "http://h:1/", "http://h:1/api/v1", "http://h:1/api/v1/", " http://h:1// "],
)
def test_api_url_accepts_the_base_url_with_or_without_api_v1(url: str) -> None:
    assert api_url(url) == "http://h:1/api/v1"


def test_server_error_carries_status_and_detail() -> None:
    err = ServerError(401, "missing or wrong token")
    assert (err.status, err.detail) == (401, "missing or wrong token")
    assert "401" in str(err)


def test_importing_pocketbatch_does_not_import_httpx() -> None:
    code = (
        "import sys, pocketbatch, pocketbatch.client, pocketbatch.cli;print('httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert out.stdout.strip() == b"False"


# --- Client ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/", "/api/v1", "/api/v1/"])
def test_client_health_with_any_url_form(server: Server, suffix: str) -> None:
    with Client(server.url + suffix) as client:
        assert client.health()["status"] == "ok"


def test_client_batch_round_trip_matches_run_batch(server: Server, local_records: bytes) -> None:
    with Client(server.url) as client:
        batch_id = client.submit_batch(FLOW, INPUTS, max_concurrent=4)
        final = client.wait(batch_id, poll=0.2)
        assert final["status"] == "completed"
        assert (final["total"], final["done"], final["succeeded"], final["failed"]) == (
            20,
            20,
            15,
            5,
        )
        assert final["max_concurrent"] == 4
        lines = list(client.outputs(batch_id))
        assert b"".join(line + b"\n" for line in lines) == local_records
        assert client.get_batch(batch_id) == final
        listed = client.list_batches(limit=1000)
        assert batch_id in [b["batch_id"] for b in listed["batches"]]
        assert listed["total"] >= 1


def test_client_accepts_flow_text_and_input_lists(server: Server) -> None:
    records = [json.loads(line) for line in INPUTS.read_text().splitlines()[:3]]
    with Client(server.url + "/api/v1") as client:
        batch_id = client.submit_batch(FLOW.read_text(), records)
        lines = list(client.outputs(batch_id, wait=True))
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


def test_client_outputs_wait_and_download(
    server: Server, tmp_path: Path, local_records: bytes
) -> None:
    out = tmp_path / "out.jsonl"
    with Client(server.url) as client:
        batch_id = client.submit_batch(str(FLOW), str(INPUTS))
        assert client.download_outputs(batch_id, out, wait=True) == 20
    assert out.read_bytes() == local_records
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left


def test_a_bad_jsonl_line_becomes_a_record_naming_its_line(server: Server, tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    good = INPUTS.read_text().splitlines()[0]
    inputs.write_text(f"{good}\n{{not json\n{good}\n")
    with Client(server.url) as client:
        batch_id = client.submit_batch(FLOW, inputs)
        records = [json.loads(line) for line in client.outputs(batch_id, wait=True)]
    assert [r["outcome"] for r in records] == ["success", "failed", "success"]
    assert "line 2" in records[1]["error"]["message"]


def test_client_run(server: Server) -> None:
    order = json.loads(INPUTS.read_text().splitlines()[0])
    with Client(server.url) as client:
        result = client.run(FLOW, order)
    assert result["outcome"] == "success"
    assert result["result"]["order"]["order_id"] == order["order_id"]


def test_client_server_errors(server: Server) -> None:
    with Client(server.url) as client:
        with pytest.raises(ServerError) as unknown:
            client.get_batch("no-such-batch")
        assert unknown.value.status == 404
        assert "no-such-batch" in unknown.value.detail
        with pytest.raises(ServerError) as bad_flow:
            client.submit_batch("steps: [\n", [{}])
        assert bad_flow.value.status == 422
        assert "does not load" in bad_flow.value.detail


def test_client_unreachable_server_fails_fast_outside_waiting() -> None:
    with Client(f"http://127.0.0.1:{_free_port()}") as client:
        started = time.monotonic()
        with pytest.raises(ServerError) as err:
            client.list_batches()
        assert err.value.status is None
        assert time.monotonic() - started < 10


def test_cancel_batch(server: Server) -> None:
    order = json.loads(INPUTS.read_text().splitlines()[0])
    with Client(server.url) as client:
        batch_id = client.submit_batch(FLOW, [order] * 50_000, max_concurrent=1)
        cancelled = client.cancel_batch(batch_id)
        assert cancelled["batch_id"] == batch_id
        assert cancelled["status"] == "cancelled"  # 50,000 items one at a time: still running
        assert cancelled["done"] < 50_000
        final = client.wait(batch_id)
        lines = list(client.outputs(batch_id))
    assert len(lines) == final["done"]
    assert [json.loads(line)["index"] for line in lines] == list(range(len(lines)))


def test_wait_rides_out_a_server_restart(restartable: Server) -> None:
    with Client(restartable.url, retry_for=30) as client:
        batch_id = client.submit_batch(FLOW, INPUTS)
        client.wait(batch_id)
        restartable.stop()
        restarter = threading.Timer(1.0, restartable.start)
        restarter.start()
        try:
            final = client.wait(batch_id, poll=0.2)
            lines = list(client.outputs(batch_id, wait=True))
        finally:
            restarter.join()
    assert final["status"] == "completed"
    assert len(lines) == 20


class _CutOnce(httpx.BaseTransport):
    """A real transport whose first outputs stream breaks after ``cut`` bytes."""

    def __init__(self, cut: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.cut = cut
        self.cuts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/outputs") or self.cuts:
            return response
        self.cuts += 1
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Broken(response, self.cut)
        )

    def close(self) -> None:
        self.inner.close()


class _Broken(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, cut: int) -> None:
        self.response, self.cut = response, cut

    def __iter__(self) -> Iterator[bytes]:
        data = b"".join(self.response.stream)  # type: ignore[union-attr]
        yield data[: self.cut]
        raise httpx.ReadError("connection reset (simulated)")

    def close(self) -> None:
        self.response.close()


@pytest.mark.parametrize("cut", [1, 250, 1000, 3000])
def test_a_cut_stream_resumes_without_losing_or_repeating_records(
    server: Server, local_records: bytes, cut: int
) -> None:
    with Client(server.url) as client:
        batch_id = client.submit_batch(FLOW, INPUTS)
        client.wait(batch_id)
        transport = _CutOnce(cut)
        client._http.close()
        client._http = httpx.Client(base_url=client.url, transport=transport)
        lines = list(client.outputs(batch_id, wait=True))
        client._http.close()
    assert transport.cuts == 1
    assert b"".join(line + b"\n" for line in lines) == local_records


def test_a_failed_download_leaves_no_file(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("earlier\n")
    with Client(server.url, retry_for=0) as client:
        batch_id = client.submit_batch(FLOW, INPUTS)
        client.wait(batch_id)
        client._http.close()
        client._http = httpx.Client(base_url=client.url, transport=_CutOnce(500))
        with pytest.raises(ServerError):
            client.download_outputs(batch_id, out)
        client._http.close()
    assert out.read_text() == "earlier\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# --- AsyncClient -----------------------------------------------------------------


def test_async_client_operations(server: Server, local_records: bytes) -> None:
    async def main() -> dict[str, Any]:
        async with AsyncClient(server.url + "/api/v1/") as client:
            assert (await client.health())["status"] == "ok"
            batch_id = await client.submit_batch(FLOW, INPUTS, max_concurrent=2)
            final = await client.wait(batch_id, poll=0.2)
            lines = [line async for line in client.outputs(batch_id, wait=True)]
            assert b"".join(line + b"\n" for line in lines) == local_records
            assert (await client.get_batch(batch_id))["status"] == "completed"
            listed = await client.list_batches(limit=5)
            assert listed["batches"][0]["batch_id"] == batch_id
            assert (await client.cancel_batch(batch_id))["status"] == "completed"
            result = await client.run(FLOW, json.loads(INPUTS.read_text().splitlines()[0]))
            assert result["outcome"] == "success"
            with pytest.raises(ServerError) as err:
                await client.get_batch("nope")
            assert err.value.status == 404
            return final

    final = asyncio.run(asyncio.wait_for(main(), 60))
    assert (final["succeeded"], final["failed"]) == (15, 5)


def test_async_client_token(token_server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(token_server.url, token="wrong") as client:
            with pytest.raises(ServerError) as err:
                await client.list_batches()
            assert err.value.status == 401
        async with AsyncClient(token_server.url, token=TOKEN) as client:
            assert "batches" in await client.list_batches()

    asyncio.run(asyncio.wait_for(main(), 60))


# --- the CLI ---------------------------------------------------------------------


def test_cli_submit_batch_wait_is_byte_identical_to_run_batch(
    server: Server, local_records: bytes
) -> None:
    ran = pb("submit-batch", "--url", server.url, "--flow", FLOW, "--inputs", INPUTS, "--wait")
    assert ran.code == 1, ran.err  # some items failed, as with run-batch
    assert ran.raw == local_records
    assert "completed" in ran.err


def test_cli_submit_batch_wait_output_file(
    server: Server, tmp_path: Path, local_records: bytes
) -> None:
    out = tmp_path / "remote.jsonl"
    ran = pb(
        "submit-batch", "--url", server.url + "/api/v1", "--flow", FLOW, "--inputs", INPUTS,
        "--wait", "--output", out, "--max-concurrent", "3",
    )  # fmt: skip
    assert ran.code == 1, ran.err
    assert ran.out == ""
    assert out.read_bytes() == local_records


# CRLF; a bare \r inside line 2 (one line, as run-batch reads it, not two); a blank
# line; invalid UTF-8; an integer beyond 64 bits; no final newline.
ODD_LINES = (
    b'{"n": 1}\r\n{"n": 2}\r{"n": 3}\n\n{"n": "\xff"}\n'
    b'{"n": 123456789012345678901234567890}\r\n{"n": 4}'
)


@pytest.mark.parametrize(
    "lines", [ODD_LINES, ODD_LINES.replace(b"\xff", b"x")], ids=["bad-utf8", "utf8"]
)
def test_cli_submit_batch_reads_lines_as_run_batch_does(
    server: Server, tmp_path: Path, lines: bytes
) -> None:
    """submit-batch used to crash on invalid UTF-8 and to split lines at a bare \\r (more
    records than run-batch): the file now goes byte for byte, the records are run-batch's."""
    flow = tmp_path / "echo.yaml"
    flow.write_text("output: {$input: n}\n")
    inputs = tmp_path / "odd.jsonl"
    inputs.write_bytes(lines)
    local = pb("run-batch", "--flow", flow, "--inputs", inputs, "--no-progress")
    assert local.code == 1, local.err
    assert local.raw.count(b"\n") == 5
    ran = pb("submit-batch", "--url", server.url, "--flow", flow, "--inputs", inputs, "--wait")
    assert "Traceback" not in ran.err, ran.err
    assert ran.code == 1, ran.err
    assert ran.raw == local.raw
    with Client(server.url) as client:  # the Python client sends the file the same way
        batch_id = client.submit_batch(flow, inputs)
        assert b"".join(line + b"\n" for line in client.outputs(batch_id, wait=True)) == local.raw


def test_cli_all_succeeded_exits_0(server: Server, tmp_path: Path) -> None:
    inputs = tmp_path / "ok.jsonl"
    inputs.write_text("".join(INPUTS.read_text().splitlines(keepends=True)[:2]))
    ran = pb("submit-batch", "--url", server.url, "--flow", FLOW, "--inputs", inputs, "--wait")
    assert ran.code == 0, ran.err
    assert [json.loads(line)["outcome"] for line in ran.out.splitlines()] == ["success"] * 2


def test_cli_submit_then_get_batch(server: Server, tmp_path: Path, local_records: bytes) -> None:
    ran = pb("submit-batch", "--url", server.url + "/", "--flow", FLOW, "--inputs", INPUTS)
    assert ran.code == 0, ran.err
    batch_id = json.loads(ran.out)["batch_id"]
    assert list(json.loads(ran.out)) == ["batch_id"]

    out = tmp_path / "got.jsonl"
    got = pb("get-batch", "--url", server.url, "--batch-id", batch_id, "--wait", "--output", out)
    assert got.code == 1, got.err
    assert out.read_bytes() == local_records

    status = pb("get-batch", "--url", server.url, "--batch-id", batch_id)
    assert status.code == 0, status.err
    batch = json.loads(status.out)
    assert (batch["batch_id"], batch["status"], batch["total"]) == (batch_id, "completed", 20)

    records = pb("get-batch", "--url", server.url, "--batch-id", batch_id, "--wait")
    assert records.raw == local_records

    listed = pb("list-batches", "--url", server.url, "--limit", "1000")
    assert listed.code == 0, listed.err
    assert batch_id in [b["batch_id"] for b in json.loads(listed.out)["batches"]]

    cancelled = pb("cancel-batch", "--url", server.url, "--batch-id", batch_id)
    assert cancelled.code == 0, cancelled.err
    assert json.loads(cancelled.out)["batch_id"] == batch_id


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("get-batch", "--batch-id", "nope"), "404"),
        (("cancel-batch", "--batch-id", "nope"), "404"),
        (("get-batch", "--batch-id", "nope", "--wait"), "404"),
    ],
)
def test_cli_server_errors_exit_2(server: Server, args: tuple[str, ...], status: str) -> None:
    ran = pb(*args, "--url", server.url)
    assert ran.code == 2
    assert status in ran.err
    assert ran.out == ""


def test_cli_bad_flow_exits_2_with_422(server: Server, tmp_path: Path) -> None:
    flow = tmp_path / "bad.yaml"
    flow.write_text("steps:\n  - id: x\n    component: /no/such\n")
    ran = pb("submit-batch", "--url", server.url, "--flow", flow, "--inputs", INPUTS)
    assert ran.code == 2
    assert "422" in ran.err


@pytest.mark.parametrize(
    "args",
    [
        ("submit-batch", "--flow", "missing.yaml", "--inputs", str(INPUTS)),
        ("submit-batch", "--flow", str(FLOW), "--inputs", "missing.jsonl"),
        ("submit-batch", "--flow", str(FLOW), "--inputs", str(INPUTS), "--output", "x.jsonl"),
        ("submit-batch", "--flow", str(FLOW)),
        ("get-batch",),
        ("list-batches", "--limit", "0"),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    ran = pb(*args, "--url", "http://127.0.0.1:9")
    assert ran.code == 2
    assert ran.err


def test_cli_unreachable_server_exits_2() -> None:
    ran = pb("list-batches", "--url", f"http://127.0.0.1:{_free_port()}")
    assert ran.code == 2
    assert "unreachable" in ran.err


@pytest.mark.parametrize(
    ("token_args", "env", "ok"),
    [
        ((), {}, False),
        (("--token", "wrong"), {}, False),
        ((), {"POCKETBATCH_TOKEN": "wrong"}, False),
        (("--token", TOKEN), {}, True),
        ((), {"POCKETBATCH_TOKEN": TOKEN}, True),
    ],
)
def test_cli_token(
    token_server: Server, token_args: tuple[str, ...], env: dict[str, str], ok: bool
) -> None:
    url = token_server.url
    listed = pb("list-batches", "--url", url, *token_args, env=env)
    submitted = pb(
        "submit-batch", "--url", url, "--flow", FLOW, "--inputs", INPUTS, *token_args, env=env
    )
    if ok:
        assert listed.code == 0, listed.err
        assert submitted.code == 0, submitted.err
        batch_id = json.loads(submitted.out)["batch_id"]
        got = pb("get-batch", "--url", url, "--batch-id", batch_id, "--wait", *token_args, env=env)
        assert got.code == 1, got.err
        assert got.out.count("\n") == 20
    else:
        for ran in (listed, submitted):
            assert ran.code == 2
            assert "401" in ran.err
            assert ran.out == ""


def test_a_bom_and_blank_lines_give_run_batchs_records_naming_their_lines(
    server: Server, tmp_path: Path
) -> None:
    """Issue 14: a BOM opening the inputs is accepted (it failed line 1), and a failed
    record names its input line (blank lines counted), on the server as in run-batch."""
    flow = tmp_path / "echo.yaml"
    flow.write_text(
        "input_schema: {type: object, required: [n]}\noutput: {$input: n}\n", encoding="utf-8"
    )
    inputs = tmp_path / "bom.jsonl"
    inputs.write_bytes(b'\xef\xbb\xbf{"n": 1}\r\n\r\n{"m": 2}\n\n{"n": 3}\n')
    local = pb("run-batch", "--flow", flow, "--inputs", inputs, "--no-progress")
    assert local.code == 1, local.err
    assert [json.loads(x) for x in local.raw.splitlines()] == [
        {"index": 0, "outcome": "success", "result": 1},
        {
            "index": 1,
            "line": 3,
            "outcome": "failed",
            "error": {
                "code": "INVALID_INPUT",
                "message": "line 3: input $: 'n' is a required property",
            },
        },
        {"index": 2, "outcome": "success", "result": 3},
    ]
    ran = pb("submit-batch", "--url", server.url, "--flow", flow, "--inputs", inputs, "--wait")
    assert ran.code == 1, ran.err
    assert ran.raw == local.raw
    with Client(server.url) as client:
        batch_id = client.submit_batch(flow, inputs)
        remote = b"".join(line + b"\n" for line in client.outputs(batch_id, wait=True))
        assert remote == local.raw
        as_text = client.submit_batch(flow, [{"n": 1}, {"m": 2}])  # a list: line = index + 1
        listed = [json.loads(x) for x in client.outputs(as_text, wait=True)]
    assert listed[1]["line"] == 2


def test_submit_batch_prints_the_servers_warnings(server: Server, tmp_path: Path) -> None:
    """The server finds a key Stepflow ignores in the submitted flow: submit-batch prints
    it on stderr as every local command does (the batch id alone on stdout), and the
    Python client hands it to on_warning."""
    flow = tmp_path / "echo.yaml"
    flow.write_text("output: {$input: n}\ndepends_on: [x]\n", encoding="utf-8")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"n": 1}\n', encoding="utf-8")
    ran = pb("submit-batch", "--url", server.url, "--flow", flow, "--inputs", inputs)
    assert ran.code == 0, ran.err
    assert list(json.loads(ran.out)) == ["batch_id"]
    assert "pocketbatch: warning: <string>:2:1: unknown key 'depends_on' in the flow" in ran.err
    seen: list[str] = []
    with Client(server.url) as client:
        batch_id = client.submit_batch(flow, [{"n": 2}], on_warning=seen.append)
        assert client.wait(batch_id)["status"] == "completed"
    (warning,) = seen
    assert "depends_on" in warning
