"""Slow, large and too many clients against a real ``pocketbatch serve`` subprocess.

Everything is counted, not timed: a body limit "holds while streaming" when the
upload generator is not drained; a timeout "cuts a client off" when its socket
reads EOF (the sockets themselves wait up to 30 s, far beyond the 0.5 s flags);
the connection cap holds when a third connection reads ``503`` while two are open.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import ServerProcess

WAIT = 30.0  # generous socket timeout; the server's own timeouts are 0.5 s


class Served(ServerProcess):
    """A ``pocketbatch serve`` subprocess on 127.0.0.1 (no token, no config)."""

    def __init__(self, tmp_path: Path, *args: str, open_files: int | None = None) -> None:
        super().__init__(
            tmp_path,
            "--db",
            str(tmp_path / "pb.db"),
            *args,
            up_timeout=60,
            preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
        )

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        return sock


def _limit_open_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    servers: list[Served] = []

    def start(*args: str, open_files: int | None = None) -> Served:
        server = Served(tmp_path, *args, open_files=open_files)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (``socket.timeout``
    after WAIT seconds of silence means it never did)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


FLOW = "output: {$input: x}\n"


# --------------------------------------------------------------------------- body size


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(
    serve: Callable[..., Served],
) -> None:
    """64 MiB sent chunked (no Content-Length) against a 1 MiB limit: 413, and the
    upload stops early (it used to be read whole, then refused)."""
    server = serve("--max-request-bytes", str(1024 * 1024))
    chunk, chunks = b"x" * 65536, 1024
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"flow": "output: 1\\n", "inputs": ["'
        for _ in range(chunks):
            sent += 1
            yield chunk
        yield b'"]}'

    with httpx.Client(timeout=WAIT) as client:
        response = client.post(f"{server.url}/batches", content=body())
    assert response.status_code == 413
    assert response.json() == {"detail": f"request larger than {1024 * 1024} bytes"}
    assert sent < chunks, "the server read the whole body before refusing it"
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_a_content_length_over_the_limit_is_refused_before_the_body(
    serve: Callable[..., Served],
) -> None:
    server = serve("--max-request-bytes", "1000")
    with server.connect() as sock:
        sock.sendall(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000000\r\n\r\n"
        )
        reply = read_until_eof(sock)  # not a byte of the body was sent
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert reply.endswith(b'{"detail":"request larger than 1000 bytes"}')


def test_a_body_at_the_limit_is_accepted(serve: Callable[..., Served]) -> None:
    server = serve("--max-request-bytes", "300")
    head = b'{"flow": "output: {$input: x}\\n", "input": {"x": "'
    text = "y" * (300 - len(head) - 3)
    body = head + text.encode() + b'"}}'
    assert len(body) == 300

    def chunks() -> Iterator[bytes]:
        yield from (body[i : i + 7] for i in range(0, len(body), 7))

    response = httpx.post(f"{server.url}/runs", content=chunks(), timeout=WAIT)
    assert response.status_code == 200, response.text
    assert response.json()["result"] == text


# --------------------------------------------------------------------------- slow clients


def test_partial_headers_then_nothing_are_cut_off(serve: Callable[..., Served]) -> None:
    """A request line and one header, then silence: 408 and the connection closes."""
    server = serve("--header-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"POST /api/v1/batches HTTP/1.1\r\nHost: x\r\n")
        reply = read_until_eof(sock)
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert reply.endswith(b'{"detail":"the request was not received in time"}')


def test_a_silent_connection_is_closed(serve: Callable[..., Served]) -> None:
    server = serve("--header-timeout", "0.5")
    with server.connect() as sock:
        assert read_until_eof(sock) == b""


def test_headers_dripping_a_byte_at_a_time_are_cut_off(serve: Callable[..., Served]) -> None:
    """Slowloris: a byte every 50 ms never finishes the head; the deadline is for the
    whole head, so the server closes the connection while bytes still arrive."""
    server = serve("--header-timeout", "0.5")
    head = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 2000
    dripped = 0
    with server.connect() as sock:
        try:
            for byte in head:
                sock.send(bytes([byte]))
                dripped += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = read_until_eof(sock)
    assert dripped < len(head), "the server waited for the whole dripped head"
    assert reply.startswith(b"HTTP/1.1 408 ")


def test_a_stalled_body_is_cut_off_without_a_traceback(serve: Callable[..., Served]) -> None:
    server = serve("--body-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"flow": '
        )
        assert read_until_eof(sock) == b""
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert "Traceback" not in server.log_text()


def test_a_kept_alive_connection_gets_a_head_deadline_again(
    serve: Callable[..., Served],
) -> None:
    """After one full request, the next partial head on the same connection is cut off."""
    server = serve("--header-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b'"status":"ok"' not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
        assert read_until_eof(sock).startswith(b"HTTP/1.1 408 ")


# --------------------------------------------------------------------------- connection cap


def test_a_connection_over_the_cap_gets_503_while_two_are_held(
    serve: Callable[..., Served],
) -> None:
    server = serve("--max-connections", "2")
    held = [server.connect(), server.connect()]
    try:
        for sock in held:  # two clients in the middle of their heads
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
        refused = []
        for _ in range(20):
            with server.connect() as third:
                third.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                refused.append(read_until_eof(third))
        assert all(r.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") for r in refused)
        assert refused[0].endswith(b'{"detail":"too many connections; try again later"}')
        # the held ones are still served
        held[0].sendall(b"Host: x\r\n\r\n")
        answer = b""
        while b'"status":"ok"' not in answer:
            answer += held[0].recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()
    # with the two gone, a new client is served again (once the server saw them go)
    statuses: list[Any] = []
    for _ in range(200):
        statuses.append(httpx.get(f"{server.url}/health", timeout=WAIT).status_code)
        if statuses[-1] == 200:
            break
        time.sleep(0.05)
    assert statuses[-1] == 200
    assert server.log_after_banner() == "", "refused connections must not be logged one by one"


def test_a_flood_of_connections_never_runs_the_server_out_of_descriptors(
    serve: Callable[..., Served],
) -> None:
    """900 connections held open against a server allowed 400 open files: it serves
    fewer connections than asked (saying so once), refuses the rest, never fails to
    accept (which asyncio would log with a traceback every second), and serves again
    once the flood is gone."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1200), hard))
    flood = min(900, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    server = serve("--header-timeout", "5", open_files=400)
    socks = []
    try:
        for _ in range(flood):
            sock = server.connect()
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")
            socks.append(sock)
        # every held connection is either being served (its head is pending) or refused
        refused = 0
        for sock in socks:
            sock.settimeout(0.01)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                refused += sock.recv(12).startswith(b"HTTP/1.1 503")
        assert refused > 0
    finally:
        for sock in socks:
            sock.close()
    statuses: list[Any] = []
    for _ in range(400):
        statuses.append(httpx.get(f"{server.url}/health", timeout=WAIT).status_code)
        if statuses[-1] == 200:
            break
        time.sleep(0.05)
    assert statuses[-1] == 200
    log = server.log_after_banner()
    assert log.splitlines() == [
        "pocketbatch serve: the open-file limit is 400: serving at most 104 connections "
        "instead of 1000 (raise it with ulimit -n)"
    ], log


def test_repeated_bad_requests_are_logged_once(serve: Callable[..., Served]) -> None:
    """uvicorn warns once per malformed request; 30 of them make one log line."""
    server = serve()
    for _ in range(30):
        with server.connect() as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert read_until_eof(sock).startswith(b"HTTP/1.1 400 ")
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert server.log_text().count("Invalid HTTP request received.") == 1
