"""A fake OpenAI-compatible provider on 127.0.0.1 that counts TCP connections.

It speaks just enough HTTP/1.1 (keep-alive, ``Content-Length`` bodies) on a raw
asyncio server running in its own thread, so sync tests (the CLI) and async tests
can both use it. Every accepted socket is counted, and every closed one, so a test
can tell one pooled client from a client per request. Replies are scripted: a
queue of ``(status, headers, body)`` taken first, then a chat completion with a
fixed ``usage`` and the ``x-ratelimit-*`` headers of :attr:`FakeLLM.headers`.

The realistic provider of the benchmarks (rate limits, latency, faults) is
``benchmarks/fake_provider.py``; tests reach it through :data:`fake_provider`, loaded
from its file: ``benchmarks/`` is not on the import path, so its top-level names
(``core``, ``batch``, ``server``...) cannot shadow anything a test imports.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, imported from its file (once) as ``_benchmarks_<name>``."""
    qualified = f"_benchmarks_{name}"
    found = sys.modules.get(qualified)
    if found is not None:
        return found
    spec = importlib.util.spec_from_file_location(qualified, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


fake_provider = benchmark_module("fake_provider")

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


@dataclass
class FakeLLM:
    """What a test sees of the fake provider."""

    port: int = 0
    connections: int = 0  # sockets accepted
    closed: int = 0  # sockets the client closed
    requests: list[dict[str, Any]] = field(default_factory=list)  # request bodies
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # sent with every success
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next ``times`` requests with ``status`` (and these headers;
        ``retry_after_ms="250"`` becomes ``retry-after-ms: 250``)."""
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        self.script.extend([(status, named, json.dumps({"error": f"HTTP {status}"}))] * times)

    def reply(self, body: Any) -> tuple[int, dict[str, str], str]:
        self.requests.append(body)
        if self.script:
            return self.script.pop(0)
        content = "echo: " + str(body.get("messages", [{}])[-1].get("content", ""))
        answer = {
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "model": "fake-model",
            "usage": USAGE,
        }
        return 200, dict(self.headers), json.dumps(answer)


async def _serve(fake: FakeLLM, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    fake.connections += 1
    fake.writers.add(writer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {"raw": raw.decode("utf-8", "replace")}
            status, extra, text = fake.reply(body)
            data = text.encode()
            out = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
            out += [f"{k}: {v}" for k, v in extra.items()]
            out.append(f"Content-Length: {len(data)}")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + data)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        fake.closed += 1
        fake.writers.discard(writer)
        writer.close()


@contextmanager
def fake_llm() -> Iterator[FakeLLM]:
    """Run a :class:`FakeLLM` on a free port of 127.0.0.1 for the ``with`` block."""
    fake = FakeLLM()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server: asyncio.Server | None = None

    async def start() -> None:
        nonlocal server
        server = await asyncio.start_server(lambda r, w: _serve(fake, r, w), "127.0.0.1", 0)
        fake.port = server.sockets[0].getsockname()[1]
        ready.set()

    def run() -> None:
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield fake
    finally:

        async def stop() -> None:
            assert server is not None
            server.close()
            for writer in list(fake.writers):
                writer.close()
            await server.wait_closed()
            await asyncio.sleep(0)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(stop()))
        thread.join(10)
        loop.close()


def wait_until_closed(fake: FakeLLM, count: int) -> bool:
    """Whether the fake has seen ``count`` sockets closed (its thread may lag a moment
    behind the client's close; this waits on events, at most 5 s)."""
    for _ in range(500):
        if fake.closed >= count:
            return True
        threading.Event().wait(0.01)
    return fake.closed >= count
