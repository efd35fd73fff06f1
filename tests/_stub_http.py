"""A recording HTTP stub on 127.0.0.1 for the network-policy tests (``tests`` is on
pytest's ``pythonpath``).

Each stub answers every request with a minimal OpenAI-style chat completion, or
with a 302 to ``redirect_to`` when set, and records the method, path and headers
of what it received, so a test can check what reached it (and what did not).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    """One request a stub received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Stub:
    """What a test sees of a stub: its port, what it received, whether it redirects."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    redirect_to: str | None = None
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        stub.seen.append(Seen(self.command, self.path, headers))
        if stub.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", stub.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(
            {"model": "m", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for every handler thread
    block_on_close = True

    def __init__(self, stub: Stub, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.stub = stub


@contextmanager
def running_stubs(tls: ssl.SSLContext | None = None) -> Iterator[Callable[[], Stub]]:
    """A function that starts one more stub (HTTPS with the server context ``tls``);
    every stub stops when the block ends."""
    running: list[tuple[_Server, threading.Thread]] = []

    def start() -> Stub:
        stub = Stub(scheme="http" if tls is None else "https")
        httpd = _Server(stub, tls)
        stub.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        running.append((httpd, thread))
        return stub

    try:
        yield start
    finally:
        for httpd, thread in running:
            httpd.shutdown()
            httpd.server_close()
            thread.join(10)
