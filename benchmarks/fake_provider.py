"""A fake OpenAI-compatible chat-completions provider on 127.0.0.1, for benchmarks and tests.

It behaves like a real, rate-limited provider, deterministically:

* ``POST /v1/chat/completions`` (any path ending in ``/chat/completions``) answers
  after ``latency`` seconds with a completion derived from the last user message
  (:func:`answer_text`), a ``usage`` block (tokens estimated as characters / 4),
  ``n`` choices, JSON for ``response_format`` (``json_object``: ``{"answer": ...}``;
  ``json_schema``: an instance built from the schema, :func:`example_for`), and a
  tool call when ``tools`` are given and the prompt says ``call <name>`` (or
  ``tool_choice`` names a function or is ``required``). A prompt containing
  ``[bad-json]`` gets content that does not match the schema; ``[not-json]`` gets
  plain text.
* Two token buckets, requests and tokens, each with a limit per window (``--rps`` or
  ``--rpm``; ``--tps`` or ``--tpm``), refilled continuously, starting full. A request
  costs 1 request and its prompt tokens plus ``max_tokens`` (or, without it, its
  completion's tokens). A request a bucket cannot pay for is answered 429 at once,
  with ``retry-after-ms`` and ``retry-after`` (whole seconds, rounded up) saying when
  it could be paid, and consumes nothing.
* Every response carries ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
  as OpenAI sends them: the limit per minute (a bucket of 20 a second says 1200),
  what the bucket holds now, and the reset as ``"1.5s"``/``"250ms"`` (the time until
  the bucket is full again).
* Faults: the first admitted attempt of a prompt whose hash falls under
  ``fault_rate`` is answered 503 (so the same prompts fail on every run).
* ``GET /stats`` returns the counters (:meth:`Counters.as_dict`): requests, 200s,
  429s, 503s, connections accepted, the most requests in flight, tokens, prompts
  answered more than once ("requests answered twice"); ``POST /stats/reset`` zeroes
  them. ``GET /v1/models`` lists one model.

The server is plain asyncio (HTTP/1.1 with keep-alive, ``Content-Length`` bodies), so
hundreds of concurrent connections cost little. Run it standalone::

    python benchmarks/fake_provider.py --port 8765 --latency 0.3 --rps 20 --tps 20000 \\
        --fault-rate 0.01

(``--port 0`` picks a free port; the first line printed is ``listening on URL``), or
start it in a background thread from Python::

    with running_provider(ProviderConfig(latency=0.01)) as provider:
        client_base_url = provider.base_url   # http://127.0.0.1:PORT/v1
        provider.counters.as_dict()

Tests also use :class:`ScriptedProvider` (through ``tests/_fake_llm.py``): the same
server, answering ``echo: ...`` or scripted failures, counting connections.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

__all__ = (
    "Bucket",
    "Counters",
    "FakeProvider",
    "ProviderConfig",
    "RunningProvider",
    "SCRIPTED_USAGE",
    "ScriptedProvider",
    "answer_text",
    "example_for",
    "running_provider",
)


# --------------------------------------------------------------------------- the behaviour


@dataclass(frozen=True)
class ProviderConfig:
    """How the fake provider behaves.

    ``requests_limit``/``tokens_limit`` are per ``*_window`` seconds (1 or 60);
    ``None`` means unlimited. ``fault_rate`` is the share of prompts whose first
    admitted attempt gets a 503.
    """

    latency: float = 0.3
    requests_limit: float | None = None
    requests_window: float = 1.0
    tokens_limit: float | None = None
    tokens_window: float = 1.0
    fault_rate: float = 0.0
    model: str = "fake-model"
    record_bodies: bool = False  # keep every chat request body in FakeProvider.bodies


def tokens_of(text: str) -> int:
    """The token estimate used everywhere here: characters / 4, at least 1."""
    return max(1, len(text) // 4)


def answer_text(prompt: str, index: int = 0) -> str:
    """The completion for a prompt (the last user message): it reversed, ``#index``
    appended for choices after the first.

    >>> answer_text("abc"), answer_text("abc", 2)
    ('cba', 'cba #2')
    """
    text = prompt[::-1]
    return text if index == 0 else f"{text} #{index}"


def example_for(schema: Any, seed: str) -> Any:
    """A value matching a simple JSON Schema (type, properties, items, enum, const),
    derived from ``seed``.

    >>> example_for({"type": "object", "properties": {"n": {"type": "integer"}}}, "ab")
    {'n': 2}
    """
    if not isinstance(schema, dict):
        return seed
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for(schema[key][0], seed)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example_for(sub, seed) for name, sub in props.items()}
    if kind == "array":
        return [example_for(schema.get("items", {}), seed)]
    if kind == "integer":
        return len(seed)
    if kind == "number":
        return len(seed) / 2
    if kind == "boolean":
        return len(seed) % 2 == 0
    if kind == "null":
        return None
    return answer_text(seed)


class Bucket:
    """A token bucket: ``limit`` per ``window`` seconds, refilled continuously, full at start.

    >>> b = Bucket(2, 1.0, now=0.0)
    >>> b.take(2, now=0.0), b.take(1, now=0.0), round(b.wait_for(1, now=0.0), 3)
    (True, False, 0.5)
    """

    def __init__(self, limit: float, window: float, *, now: float) -> None:
        self.limit = limit
        self.window = window
        self.rate = limit / window
        self.level = float(limit)
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float, *, now: float) -> float:
        """Seconds until ``amount`` can be taken (0 when it can be now)."""
        self._refill(now)
        return max(0.0, (amount - self.level) / self.rate)

    def take(self, amount: float, *, now: float) -> bool:
        """Take ``amount`` if the bucket holds it; take nothing otherwise."""
        self._refill(now)
        if amount > self.level:
            return False
        self.level -= amount
        return True

    def headers(self, name: str, *, now: float) -> dict[str, str]:
        self._refill(now)
        reset = (self.limit - self.level) / self.rate
        return {
            # Per minute, as OpenAI reports it, whatever the bucket's own window: a
            # 20-a-second bucket says 1200. What remains is what the bucket holds now.
            f"x-ratelimit-limit-{name}": str(round(self.rate * 60)),
            f"x-ratelimit-remaining-{name}": str(int(self.level)),
            f"x-ratelimit-reset-{name}": _duration(reset),
        }


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``"1.5s"``, ``"250ms"``, ``"1m2s"``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3g}s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass
class Counters:
    """What the provider saw. ``answers`` counts 200s per prompt key."""

    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    faults: int = 0
    connections: int = 0
    closed: int = 0  # connections ended (by either side)
    in_flight: int = 0
    max_in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)  # admitted attempts per prompt

    def as_dict(self) -> dict[str, Any]:
        twice = [n for n in self.answers.values() if n > 1]
        return {
            "requests": self.requests,
            "ok": self.ok,
            "rate_limited": self.rate_limited,
            "faults": self.faults,
            "connections": self.connections,
            "closed": self.closed,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "prompts_answered": len(self.answers),
            "answered_twice": len(twice),  # prompts answered more than once
            "extra_answers": sum(n - 1 for n in twice),
        }


def _last_user(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _tool_to_call(body: dict[str, Any], prompt: str) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    functions = {t["function"]["name"]: t["function"] for t in tools if "function" in t}
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        return functions.get(name)
    for name, function in functions.items():
        if f"call {name}" in prompt:
            return function
    if choice == "required" and functions:
        return next(iter(functions.values()))
    return None


def _content(body: dict[str, Any], prompt: str, index: int) -> str:
    text = answer_text(prompt, index)
    fmt = body.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_object", "json_schema"):
        return text
    if "[not-json]" in prompt:
        return f"Sure! {text}"
    if "[bad-json]" in prompt:
        return json.dumps({"unexpected": [1, 2]})
    if kind == "json_object":
        return json.dumps({"answer": text})
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    return json.dumps(example_for(schema, prompt if index == 0 else f"{prompt} #{index}"))


def completion(body: dict[str, Any], model: str) -> tuple[dict[str, Any], int, int]:
    """The chat completion for a request body, and its prompt and completion tokens."""
    messages = body.get("messages") or []
    prompt = _last_user(messages)
    prompt_tokens = sum(tokens_of(json.dumps(m)) for m in messages)
    n = body.get("n") or 1
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    tool = _tool_to_call(body, prompt)
    choices = []
    completion_tokens = 0
    for i in range(n):
        message: dict[str, Any] = {"role": "assistant"}
        finish = "stop"
        if tool is not None:
            arguments = json.dumps(example_for(tool.get("parameters") or {}, prompt))
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": f"call_{i}_{_digest(prompt)[:8]}",
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": arguments},
                }
            ]
            finish = "tool_calls"
            completion_tokens += tokens_of(arguments)
        else:
            content = _content(body, prompt, i)
            if isinstance(limit, int) and tokens_of(content) > limit:
                content = content[: limit * 4]
                finish = "length"
            message["content"] = content
            completion_tokens += tokens_of(content)
        choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
    reply = {
        "id": f"chatcmpl-{_digest(prompt)[:12]}",
        "object": "chat.completion",
        "created": 1700000000,
        "model": body.get("model") or model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return reply, prompt_tokens, completion_tokens


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _faulty(key: str, rate: float) -> bool:
    return rate > 0 and int(_digest("fault:" + key)[:8], 16) / 0xFFFFFFFF < rate


# --------------------------------------------------------------------------- the server

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


class FakeProvider:
    """The provider's state and its asyncio HTTP/1.1 server (see the module docstring)."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.counters = Counters()
        now = time.monotonic()
        self.requests_bucket = (
            None
            if config.requests_limit is None
            else Bucket(config.requests_limit, config.requests_window, now=now)
        )
        self.tokens_bucket = (
            None
            if config.tokens_limit is None
            else Bucket(config.tokens_limit, config.tokens_window, now=now)
        )
        self.bodies: list[Any] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        """Zero the counters and refill the buckets."""
        self.counters = Counters()
        now = time.monotonic()
        for bucket in (self.requests_bucket, self.tokens_bucket):
            if bucket is not None:
                bucket.level, bucket.stamp = float(bucket.limit), now

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", port, backlog=1024, limit=1 << 22
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # connections in keep-alive stay open in 3.11 unless closed by their clients
            await asyncio.sleep(0)

    # -- HTTP ------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, extra, payload = await self._handle(method, target.split("?")[0], body)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                out = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
                    "content-type: application/json",
                    f"content-length: {len(payload)}",
                    f"connection: {'close' if close else 'keep-alive'}",
                ]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.counters.closed += 1
            writer.close()

    async def _handle(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and path == "/stats":
            return 200, {}, json.dumps(self.counters.as_dict()).encode()
        if method == "POST" and path == "/stats/reset":
            self.reset()
            return 200, {}, b"{}"
        if method == "GET" and path.endswith("/models"):
            models = {"object": "list", "data": [{"id": self.config.model, "object": "model"}]}
            return 200, {}, json.dumps(models).encode()
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(body)
        return 404, {}, json.dumps({"error": {"message": f"no route {method} {path}"}}).encode()

    async def _chat(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        c = self.counters
        c.requests += 1
        try:
            body = json.loads(raw)
            if self.config.record_bodies:
                self.bodies.append(body)
            messages = body["messages"]
            reply, prompt_tokens, completion_tokens = completion(body, self.config.model)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            return 400, {}, _error(f"bad request: {exc!r}", "invalid_request_error")
        key = json.dumps(messages, sort_keys=True)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        cost = prompt_tokens + (limit if isinstance(limit, int) else completion_tokens)

        now = time.monotonic()
        wait = 0.0
        for bucket, amount in ((self.requests_bucket, 1), (self.tokens_bucket, cost)):
            if bucket is not None:
                wait = max(wait, bucket.wait_for(amount, now=now))
        if wait > 0:
            c.rate_limited += 1
            headers = self._limit_headers(now)
            headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            return 429, headers, _error("Rate limit reached; retry later.", "rate_limit_exceeded")
        for bucket, amount in ((self.requests_bucket, 1), (self.tokens_bucket, cost)):
            if bucket is not None:
                bucket.take(amount, now=now)
        headers = self._limit_headers(now)

        c.attempts[key] += 1
        if c.attempts[key] == 1 and _faulty(key, self.config.fault_rate):
            c.faults += 1
            return 503, headers, _error("The server is overloaded; retry.", "server_error")

        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        try:
            await asyncio.sleep(self.config.latency)
        finally:
            c.in_flight -= 1
        c.ok += 1
        c.answers[key] += 1
        c.prompt_tokens += prompt_tokens
        c.completion_tokens += completion_tokens
        headers["x-request-id"] = f"req_{c.requests}"
        return 200, headers, json.dumps(reply).encode()

    def _limit_headers(self, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.requests_bucket is not None:
            headers |= self.requests_bucket.headers("requests", now=now)
        if self.tokens_bucket is not None:
            headers |= self.tokens_bucket.headers("tokens", now=now)
        return headers


def _error(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()


# --------------------------------------------------------------------------- scripted

SCRIPTED_USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


class ScriptedProvider(FakeProvider):
    """For tests: no limits, no latency, any JSON body (kept in :attr:`bodies`).

    A chat request gets the next reply scripted by :meth:`fail`, else ``echo: <the
    last message's content>`` with :data:`SCRIPTED_USAGE` and the headers in
    :attr:`headers`. :attr:`counters` counts the connections accepted and closed.
    """

    def __init__(self) -> None:
        super().__init__(ProviderConfig(latency=0.0))
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.headers: dict[str, str] = {}  # sent with every success
        # A test's clock (e.g. a FakeTime's): each chat request's arrival is stamped.
        self.clock: Callable[[], float] | None = None
        self.stamps: list[float] = []
        # Awaited (on the provider's loop) before the n-th reply (1-based) is sent.
        self.hold: Callable[[int], Awaitable[None]] | None = None

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next ``times`` requests with ``status`` (and these headers;
        ``retry_after_ms="250"`` becomes ``retry-after-ms: 250``)."""
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        error = json.dumps({"error": f"HTTP {status}"}).encode()
        self.script.extend([(status, named, error)] * times)

    async def _chat(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.counters.requests += 1
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode("utf-8", "replace")}
        self.bodies.append(body)
        if self.clock is not None:
            self.stamps.append(self.clock())
        if self.hold is not None:
            await self.hold(len(self.bodies))
        if self.script:
            return self.script.pop(0)
        content = "echo: " + str(body.get("messages", [{}])[-1].get("content", ""))
        answer = {
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "model": "fake-model",
            "usage": SCRIPTED_USAGE,
        }
        return 200, dict(self.headers), json.dumps(answer).encode()


# --------------------------------------------------------------------------- starting it


@dataclass
class RunningProvider:
    """A provider serving from a background thread (:func:`running_provider`)."""

    provider: FakeProvider
    loop: asyncio.AbstractEventLoop

    @property
    def base_url(self) -> str:
        return self.provider.base_url

    @property
    def counters(self) -> Counters:
        return self.provider.counters

    @property
    def bodies(self) -> list[Any]:
        """The chat request bodies received (with ``record_bodies``)."""
        return self.provider.bodies

    def stats(self) -> dict[str, Any]:
        """The counters, read on the provider's loop."""
        return asyncio.run_coroutine_threadsafe(_stats(self.provider), self.loop).result(10)

    def reset(self) -> None:
        self.loop.call_soon_threadsafe(self.provider.reset)


async def _stats(provider: FakeProvider) -> dict[str, Any]:
    return provider.counters.as_dict()


@contextmanager
def running_provider(
    config: ProviderConfig | None = None, *, provider: FakeProvider | None = None
) -> Iterator[RunningProvider]:
    """A fake provider on 127.0.0.1 (a free port), served by its own event loop in a
    background thread until the block ends: a new :class:`FakeProvider` for ``config``,
    or the ``provider`` given (e.g. a :class:`ScriptedProvider`)."""
    provider = provider if provider is not None else FakeProvider(config or ProviderConfig())
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(provider.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(provider.close())
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=serve, name="fake-provider", daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the fake provider did not start")
    try:
        yield RunningProvider(provider, loop)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def config_from_args(args: argparse.Namespace) -> ProviderConfig:
    def limit(per_second: float | None, per_minute: float | None) -> tuple[float | None, float]:
        if per_second is not None:
            return per_second, 1.0
        if per_minute is not None:
            return per_minute, 60.0
        return None, 1.0

    requests, requests_window = limit(args.rps, args.rpm)
    tokens, tokens_window = limit(args.tps, args.tpm)
    return ProviderConfig(
        latency=args.latency,
        requests_limit=requests,
        requests_window=requests_window,
        tokens_limit=tokens,
        tokens_window=tokens_window,
        fault_rate=args.fault_rate,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per answer")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--rps", type=float, help="requests per second")
    group.add_argument("--rpm", type=float, help="requests per minute")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tps", type=float, help="tokens per second")
    group.add_argument("--tpm", type=float, help="tokens per minute")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of prompts whose first attempt gets a 503",
    )
    args = parser.parse_args(argv)

    async def serve() -> None:
        provider = FakeProvider(config_from_args(args))
        await provider.start(args.port)
        print(f"listening on {provider.base_url}", flush=True)
        await asyncio.Event().wait()

    with suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
