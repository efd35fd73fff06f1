"""Guards against slow, large and too many requests (needs the ``server`` extra).

Two pieces, both on by default in ``pocketbatch serve``:

* :class:`BodyLimit`, an ASGI middleware: it answers ``413`` as soon as a request
  body passes ``max_bytes`` while it streams in (a ``Content-Length`` above the
  limit is refused before a byte of the body is read, chunked bodies are counted
  as they arrive), and it turns a client that hangs up or stalls mid-body into a
  quiet end of the request instead of a logged traceback.
* :func:`guarded_protocol`, uvicorn's h11 HTTP protocol with a deadline for the
  request head (``header_timeout``: a client that sends its headers slowly, or
  part of them and then nothing, is cut off), an idle limit while a body is read
  (``body_timeout``), and a cap on open connections (``max_connections``): one
  more gets ``503`` and is closed at once, without reaching the application.

Nothing here logs per connection, so a flood of slow or refused clients does not
flood the log either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ("BodyLimit", "guarded_protocol")

_MAX_LINGERING = 64  # refused connections that may drain at once before being closed

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def _json_response(status: int, detail: str) -> tuple[Message, Message]:
    import json

    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the rest of the body is not read
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


class BodyLimit:
    """ASGI middleware: refuse a request body larger than ``max_bytes`` while it streams.

    The application sees at most ``max_bytes`` of body: the message that passes
    the limit is never handed on; a ``413`` with ``Connection: close`` goes out
    instead (unless the application already started its response), so the server
    stops reading the rest. A client that disconnects mid-body ends the request
    quietly.

    Example:
        >>> async def app(scope, receive, send):
        ...     body = b""
        ...     while True:
        ...         message = await receive()
        ...         body += message.get("body", b"")
        ...         if not message.get("more_body"):
        ...             break
        ...     await send({"type": "http.response.start", "status": 200, "headers": []})
        ...     await send({"type": "http.response.body", "body": b"%d" % len(body)})
        >>> import asyncio
        >>> async def post(chunks):
        ...     incoming = [{"type": "http.request", "body": c, "more_body": True}
        ...                 for c in chunks] + [{"type": "http.request", "body": b""}]
        ...     sent = []
        ...     async def receive():
        ...         return incoming.pop(0)
        ...     async def send(message):
        ...         sent.append(message)
        ...     await BodyLimit(app, max_bytes=10)({"type": "http", "headers": []}, receive, send)
        ...     return sent[0]["status"], len(incoming)
        >>> asyncio.run(post([b"12345", b"12345"]))  # exactly the limit
        (200, 0)
        >>> asyncio.run(post([b"12345", b"123456", b"more", b"more"]))  # stops reading at once
        (413, 3)
    """

    def __init__(self, app: App, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"request larger than {self.max_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (
                not value.strip().isdigit() or int(value) > self.max_bytes
            ):
                for message in _json_response(413, too_large):
                    await send(message)
                return
        received = 0
        started = body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
                body_done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect" and not body_done:
                raise _ClientGone  # hung up (or timed out) mid-body
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            for message in _json_response(413, too_large):
                await send(message)
        except _ClientGone:
            return  # nobody to answer


def guarded_protocol(
    *,
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a request-head deadline, a body idle limit and a
    connection cap; pass it as ``uvicorn.run(..., http=...)``.

    * The request line and headers must be complete within ``header_timeout``
      seconds of the connection opening (or, on a kept-alive connection, of the
      next request's first byte); otherwise the connection is closed (after a
      ``408`` when part of a request had arrived).
    * While a request body is being read, ``body_timeout`` seconds without a byte
      close the connection (time the server itself holds reading paused does not
      count).
    * With ``max_connections`` connections open, one more gets ``503`` with
      ``Connection: close`` straight away and is closed; it never reaches the app.

    Example:
        >>> protocol = guarded_protocol(header_timeout=10, body_timeout=60, max_connections=1000)
        >>> protocol.__name__, protocol.max_connections
        ('GuardedH11Protocol', 1000)
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    head_seconds, body_seconds, cap = header_timeout, body_timeout, max_connections

    refusal = (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"content-type: application/json\r\n"
        b"connection: close\r\n"
        b"content-length: %d\r\n\r\n"
    )
    refusal_body = b'{"detail":"too many connections; try again later"}'
    timeout_response = (
        b"HTTP/1.1 408 Request Timeout\r\n"
        b"content-type: application/json\r\n"
        b"connection: close\r\n"
        b"content-length: %d\r\n\r\n"
    )
    timeout_body = b'{"detail":"the request was not received in time"}'

    class GuardedH11Protocol(H11Protocol):
        """See :func:`guarded_protocol`."""

        header_timeout: float = head_seconds
        body_timeout: float = body_seconds
        max_connections: int = cap
        _lingering = 0  # refused connections still draining (all servers of this class)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._deadline: asyncio.TimerHandle | None = None
            self._phase = "head"  # head | body | other
            self._refused = False
            self._lingers = False
            self._got_bytes = False

        # -- connection cap ----------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > self.max_connections:
                self._refused = True
                self.connections.discard(self)  # not served, so not counted
                transport.write(refusal % len(refusal_body) + refusal_body)
                if transport.can_write_eof() and GuardedH11Protocol._lingering < _MAX_LINGERING:
                    # Half-close and let the client's request (if any) drain briefly,
                    # so it can read the 503 instead of meeting a reset. Only a few at
                    # a time: under a flood, the rest are closed at once.
                    GuardedH11Protocol._lingering += 1
                    self._lingers = True
                    transport.write_eof()
                    self._arm(min(1.0, self.header_timeout), transport.close)
                else:
                    transport.close()
                return
            self._arm(self.header_timeout, self._head_expired)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # discarded
            if self._phase == "other" and self.conn.their_state is h11.IDLE:
                # The next request on a kept-alive connection: its head has a deadline.
                self._phase = "head"
                self._got_bytes = False
                self._arm(self.header_timeout, self._head_expired)
            self._got_bytes = self._got_bytes or bool(data)
            super().data_received(data)
            self._follow_state()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._lingers:
                self._lingers = False
                GuardedH11Protocol._lingering -= 1
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow_state()

        # -- timers --------------------------------------------------------------------

        def _follow_state(self) -> None:
            """Move the timer along with h11's view of the client."""
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._phase == "head" and self._deadline is None:
                    self._arm(self.header_timeout, self._head_expired)
            elif state is h11.SEND_BODY:
                if self._phase != "body":
                    self._phase = "body"
                self._arm(self.body_timeout, self._body_expired)  # idle: from the last byte
            else:  # the request is in (DONE), or the connection is closing
                self._phase = "other"
                self._disarm()

        def _arm(self, seconds: float, then: Callable[[], None]) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, then)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _head_expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self._got_bytes and self.conn.our_state is h11.IDLE:
                self.transport.write(timeout_response % len(timeout_body) + timeout_body)
            self.transport.close()

        def _body_expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
                return
            if self.flow.read_paused:  # the server is not reading: not the client's fault
                self._arm(self.body_timeout, self._body_expired)
                return
            self.transport.close()  # the app's receive() sees a disconnect

    return GuardedH11Protocol
