"""One budget for all the worker processes of a process executor.

Design: the parent process owns the provider limiters (a
:class:`~pocketbatch.loader._providers.ProviderLimiters`), and its workers ask it
for each request. :class:`LimiterHost` serves them on a loopback socket from the
parent's event loop; each worker holds one connection (a :class:`LimiterClient`)
whose limiters (:class:`RemoteLimiter`) are stand-ins: ``request()`` asks the
parent for the permit and tells it when the request ended; ``pause()``,
``update_from_headers()`` and ``set_limits()`` are passed on; the worker's retry
waits (``sleep``) are the parent's too, so one clock paces the whole run.

Why not split the budget among the workers (each ``limit / N``, rebalanced)? A
split is over budget while it is being rebalanced, wastes what idle workers hold,
and still needs a channel to share a provider's pause and learned limits. With
one limiter the budget is exact ("never over" holds by construction: it is the
same code as in one process), a ``retry-after`` pause stops everyone at once, and
the limits learned from one worker's answers pace all of them. The cost is a
local round trip per LLM request (well under a millisecond, against the
hundreds of an LLM call).

The wire: newline-delimited JSON. A worker first sends the host's secret (the
socket is on 127.0.0.1; the secret keeps other local processes out). Then
``{"id", "op": "acquire", "base", "digest", "tokens"}`` is answered
``{"id"}`` once granted; ``{"id", "op": "sleep", "seconds"}`` is answered
``{"id"}`` once slept; ``done`` (the request with that id ended, or was given
up while waiting), ``pause``, ``headers`` and ``limits`` are not answered. A
worker that goes away ends its requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from pocketbatch.loader._providers import ProviderLimiters

__all__ = ("LimiterClient", "LimiterHost", "RemoteLimiter")

Address = tuple[str, int, str]
"""Where a worker finds its parent's limiters: (host, port, secret)."""


class LimiterHost:
    """Serves ``limiters`` to worker processes (see the module docstring).

    Use ``async with LimiterHost(limiters) as host:`` and give the workers
    :attr:`address`.
    """

    def __init__(self, limiters: ProviderLimiters) -> None:
        self.limiters = limiters
        self._secret = secrets.token_hex(16)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._endings: set[asyncio.Task[None]] = set()
        self.address: Address | None = None

    async def __aenter__(self) -> LimiterHost:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = ("127.0.0.1", port, self._secret)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        granted: dict[int, AbstractAsyncContextManager[None]] = {}
        waiting: dict[int, asyncio.Task[None]] = {}
        try:
            first = await reader.readline()
            if first.strip().decode("ascii", "replace") != self._secret:
                return
            while line := await reader.readline():
                message: dict[str, Any] = json.loads(line)
                self._handle(message, writer, granted, waiting)
        except (asyncio.CancelledError, ConnectionError, ValueError):
            pass
        finally:
            for pending in waiting.values():
                pending.cancel()
            for permit in granted.values():  # the worker went away: its requests ended
                await permit.__aexit__(None, None, None)
            writer.close()
            self._connections.discard(task)

    def _handle(
        self,
        message: dict[str, Any],
        writer: asyncio.StreamWriter,
        granted: dict[int, AbstractAsyncContextManager[None]],
        waiting: dict[int, asyncio.Task[None]],
    ) -> None:
        op = message["op"]
        number = message.get("id", 0)
        if op == "sleep":
            waiting[number] = asyncio.create_task(self._sleep(number, message, writer, waiting))
            return
        if op == "done":
            pending = waiting.pop(number, None)
            if pending is not None:
                pending.cancel()
            permit = granted.pop(number, None)
            if permit is not None:
                ending = asyncio.create_task(_end(permit))
                self._endings.add(ending)
                ending.add_done_callback(self._endings.discard)
            return
        limiter = self.limiters.limiter(message["base"], message["digest"])
        if op == "acquire":
            permit = limiter.request(int(message["tokens"]))
            waiting[number] = asyncio.create_task(
                self._grant(number, permit, writer, granted, waiting)
            )
        elif op == "pause":
            limiter.pause(float(message["seconds"]))
        elif op == "headers":
            limiter.update_from_headers(message["headers"])
        elif op == "limits":
            limiter.set_limits(
                requests_per_minute=message.get("requests_per_minute"),
                tokens_per_minute=message.get("tokens_per_minute"),
            )

    async def _grant(
        self,
        number: int,
        permit: AbstractAsyncContextManager[None],
        writer: asyncio.StreamWriter,
        granted: dict[int, AbstractAsyncContextManager[None]],
        waiting: dict[int, asyncio.Task[None]],
    ) -> None:
        await permit.__aenter__()
        waiting.pop(number, None)
        granted[number] = permit
        _answer(writer, number)

    async def _sleep(
        self,
        number: int,
        message: dict[str, Any],
        writer: asyncio.StreamWriter,
        waiting: dict[int, asyncio.Task[None]],
    ) -> None:
        await self.limiters.sleep(float(message["seconds"]))
        waiting.pop(number, None)
        _answer(writer, number)


async def _end(permit: AbstractAsyncContextManager[None]) -> None:
    await permit.__aexit__(None, None, None)


def _answer(writer: asyncio.StreamWriter, number: int) -> None:
    if not writer.is_closing():
        writer.write(b'{"id": %d}\n' % number)


class LimiterClient:
    """A worker's connection to its parent's :class:`LimiterHost`: a
    :class:`~pocketbatch.loader._providers.LimiterSource` whose limiters ask the
    parent, and a ``sleep`` that waits on the parent's clock. Connects on first
    use, in the event loop of the worker that uses it."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Lock | None = None
        self._replies: dict[int, asyncio.Future[None]] = {}
        self._next = 0
        self._limiters: dict[tuple[str, str], RemoteLimiter] = {}

    def limiter(self, base: str, digest: str) -> RemoteLimiter:
        found = self._limiters.get((base, digest))
        if found is None:
            found = self._limiters[(base, digest)] = RemoteLimiter(self, base, digest)
        return found

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the parent's clock."""
        await self.call({"op": "sleep", "seconds": seconds})

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None:
                host, port, secret = self.address
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(secret.encode("ascii") + b"\n")
                self._reader_task = asyncio.create_task(self._read(reader))
                self._writer = writer
        return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                future = self._replies.pop(json.loads(line)["id"], None)
                if future is not None and not future.done():
                    future.set_result(None)
        finally:
            error = ConnectionError("the parent process's limiter host went away")
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(error)
            self._replies.clear()
            self._writer = None

    async def call(self, message: dict[str, Any], number: int | None = None) -> int:
        """Send ``message`` and wait for its answer; its id."""
        writer = await self._connect()
        if number is None:
            number = self.new_id()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._replies[number] = future
        writer.write(json.dumps({**message, "id": number}).encode() + b"\n")
        try:
            await future
        finally:
            self._replies.pop(number, None)
        return number

    def new_id(self) -> int:
        self._next += 1
        return self._next

    def tell(self, message: dict[str, Any]) -> None:
        """Send ``message``, which gets no answer (dropped when not connected: the
        worker has sent no request yet, or the parent went away)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(json.dumps(message).encode() + b"\n")

    async def aclose(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task


class RemoteLimiter:
    """A worker's stand-in for one of its parent's provider limiters."""

    def __init__(self, client: LimiterClient, base: str, digest: str) -> None:
        self._client = client
        self._key = {"base": base, "digest": digest}

    def set_limits(
        self, *, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None:
        if requests_per_minute is not None or tokens_per_minute is not None:
            self._client.tell(
                {
                    "op": "limits",
                    **self._key,
                    "requests_per_minute": requests_per_minute,
                    "tokens_per_minute": tokens_per_minute,
                }
            )

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        # Sent even when empty: the parent's limiter learns that an answer came.
        wanted = {k: v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
        self._client.tell({"op": "headers", **self._key, "headers": wanted})

    def pause(self, seconds: float) -> None:
        self._client.tell({"op": "pause", **self._key, "seconds": seconds})

    @asynccontextmanager
    async def request(self, tokens: int = 0) -> AsyncIterator[None]:
        number = self._client.new_id()
        try:
            await self._client.call({"op": "acquire", **self._key, "tokens": tokens}, number)
            yield
        finally:  # ended, or given up while waiting: either way the parent lets go
            self._client.tell({"op": "done", "id": number})
