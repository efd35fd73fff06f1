"""Clients for a ``pocketbatch serve`` server: :class:`Client` (sync) and :class:`AsyncClient`.

Both speak the server's HTTP API (``/api/v1``) through httpx and offer the same
operations: :meth:`~Client.submit_batch`, :meth:`~Client.get_batch`,
:meth:`~Client.list_batches`, :meth:`~Client.cancel_batch`,
:meth:`~Client.outputs` (the JSONL records, streamed),
:meth:`~Client.download_outputs` (the records into a file, atomically),
:meth:`~Client.wait`, :meth:`~Client.run` and :meth:`~Client.health`.

``url`` is the server's base URL, with or without a trailing ``/api/v1``. The
token comes from ``token=`` or the ``POCKETBATCH_TOKEN`` environment variable.
An HTTP error raises :class:`ServerError` with the status and the server's
``detail`` message. Network errors while waiting for a batch or streaming its
outputs are retried with exponential backoff for up to ``retry_for`` seconds per
outage (other calls fail at once; a submit or a run is never retried: it could
run twice).

A submitted flow is compiled by the server: its components come from the
server's ``--config``, not from a config beside your local flow file.

Example:
    >>> from pocketbatch.client import Client
    >>> with Client("http://127.0.0.1:7837") as client:  # doctest: +SKIP
    ...     batch_id = client.submit_batch("flow.yaml", "inputs.jsonl")
    ...     final = client.wait(batch_id)
    ...     records = [json.loads(line) for line in client.outputs(batch_id)]
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from pocketbatch._client_parts import (
    AtomicFile,
    Backoff,
    Call,
    Records,
    finished,
    flow_text,
    poll_intervals,
    submission,
    token_or_env,
)
from pocketbatch._errors import PocketbatchError

if TYPE_CHECKING:
    import httpx

__all__ = ("AsyncClient", "Client", "ServerError")

API = "/api/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRY_FOR = 60.0
_RETRY_STATUSES = frozenset({502, 503, 504})
_Http = TypeVar("_Http")  # httpx.Client or httpx.AsyncClient


class ServerError(PocketbatchError):
    """The server answered with an HTTP error, or could not be reached.

    Attributes:
        status: the HTTP status (401, 404, 422, ...), or ``None`` when the server
            could not be reached at all.
        detail: the server's ``detail`` message (or the network error).

    Example:
        >>> err = ServerError(404, "no batch 'abc'")
        >>> print(err)
        HTTP 404: no batch 'abc'
        >>> print(ServerError(None, "connection refused"))
        server unreachable: connection refused
    """

    def __init__(self, status: int | None, detail: str) -> None:
        self.status = status
        self.detail = detail
        head = f"HTTP {status}" if status is not None else "server unreachable"
        super().__init__(f"{head}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.detail), self.__dict__)


def api_url(url: str) -> str:
    """The ``/api/v1`` URL of a server, given its base URL with or without ``/api/v1``.

    Example:
        >>> api_url("http://127.0.0.1:7837")
        'http://127.0.0.1:7837/api/v1'
        >>> api_url("http://127.0.0.1:7837/api/v1/")
        'http://127.0.0.1:7837/api/v1'
    """
    base = url.strip().rstrip("/")
    if base.endswith(API):
        base = base[: -len(API)].rstrip("/")
    return base + API


def _error(response: httpx.Response) -> ServerError:
    detail: Any
    try:
        detail = response.json().get("detail", response.text)
    except Exception:
        detail = response.text or response.reason_phrase
    if not isinstance(detail, str):
        import json

        detail = json.dumps(detail, ensure_ascii=False)
    return ServerError(response.status_code, detail)


def _batch_path(batch_id: str) -> str:
    """``/batches/ID``, the id quoted (an id holding ``/`` or ``?`` is still one id).

    Example:
        >>> _batch_path("a/b")
        '/batches/a%2Fb'
    """
    from urllib.parse import quote

    if not batch_id:
        raise ValueError("batch_id is empty")
    return f"/batches/{quote(batch_id, safe='')}"


def _json_of(response: httpx.Response) -> Any:
    """The answer's JSON; an answer that is not JSON is a :class:`ServerError`."""
    try:
        return response.json()
    except ValueError:
        head = response.text[:200] or "(empty)"
        raise ServerError(
            response.status_code, f"the answer to {response.request.url} is not JSON: {head}"
        ) from None


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError,)


class _Attempts:
    """The retry decisions of one call (the clients only send and sleep).

    Example:
        >>> attempts = _Attempts("http://h/health", retry_for=0)
        >>> attempts.failed(OSError("refused"))
        Traceback (most recent call last):
        ...
        pocketbatch.client.ServerError: server unreachable: http://h/health: OSError('refused')
    """

    def __init__(self, where: str, *, retry_for: float, retry_statuses: bool = False) -> None:
        self._where = where
        self._backoff = Backoff(retry_for)
        self._retry_statuses = retry_statuses

    def failed(self, exc: BaseException) -> float:
        """The seconds to wait after a network error before trying again.

        Raises:
            ServerError: (status ``None``) the time to retry for is spent.
        """
        delay = self._backoff.next_delay()
        if delay is None:
            raise ServerError(None, f"{self._where}: {exc!r}") from exc
        return delay

    def answered(self, response: httpx.Response) -> float | None:
        """``None`` when ``response`` is the answer, else the seconds to wait before
        trying again (a 502, 503 or 504 while retrying).

        Raises:
            ServerError: the answer is an HTTP error.
        """
        if self._retry_statuses and response.status_code in _RETRY_STATUSES:
            delay = self._backoff.next_delay()
            if delay is not None:
                return delay
        if response.is_error:
            raise _error(response)
        return None


class _ClientBase(Generic[_Http]):
    """What :class:`Client` and :class:`AsyncClient` share: the settings, and every
    operation's request as a :class:`Call`. The subclasses send and wait."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> None:
        self.url = api_url(url)
        self.retry_for = retry_for
        token = token_or_env(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = self._open(base_url=self.url, headers=headers, timeout=timeout)
        self._timeout = timeout

    def _open(self, **options: Any) -> _Http:
        raise NotImplementedError

    def _attempts(self, call: Call) -> _Attempts:
        retry_for = self.retry_for if call.retry else 0.0
        return _Attempts(f"{self.url}{call.path}", retry_for=retry_for, retry_statuses=call.retry)

    def _stream_attempts(self) -> _Attempts:
        return _Attempts(f"{self.url}: reading outputs", retry_for=self.retry_for)

    @staticmethod
    def _health() -> Call:
        return Call("GET", "/health")

    @staticmethod
    def _submit(
        flow: str | os.PathLike[str],
        inputs: str | os.PathLike[str] | Iterable[Any],
        max_concurrent: int,
    ) -> Call:
        return Call("POST", "/batches", options=submission(flow, inputs, max_concurrent))

    @staticmethod
    def _get(batch_id: str, retry: bool) -> Call:
        return Call("GET", _batch_path(batch_id), retry=retry)

    @staticmethod
    def _list(limit: int, offset: int) -> Call:
        return Call("GET", "/batches", options={"params": {"limit": limit, "offset": offset}})

    @staticmethod
    def _cancel(batch_id: str) -> Call:
        return Call("POST", f"{_batch_path(batch_id)}/cancel")

    def _run(self, flow: str | os.PathLike[str], input: Any) -> Call:
        import httpx

        body = {"flow": flow_text(flow), "input": input}
        timeout = httpx.Timeout(self._timeout, read=None)  # a run may take long
        return Call("POST", "/runs", options={"json": body, "timeout": timeout})

    @staticmethod
    def _outputs(batch_id: str, wait: bool) -> Call:
        params = {"wait": "true"} if wait else {}
        return Call("GET", f"{_batch_path(batch_id)}/outputs", options={"params": params})


class Client(_ClientBase["httpx.Client"]):
    """A synchronous client of a pocketbatch server.

    Args:
        url: the server's base URL (``http://host:7837``), with or without ``/api/v1``.
        token: the bearer token (default: ``POCKETBATCH_TOKEN``, else none).
        timeout: seconds for connecting and for each read (``run`` has no read limit).
        retry_for: seconds to keep retrying a read through network errors.

    Example:
        >>> client = Client("http://127.0.0.1:7837/api/v1/", token="s3cret")
        >>> client.url
        'http://127.0.0.1:7837/api/v1'
        >>> client.close()
        >>> with Client("http://127.0.0.1:7837") as client:  # doctest: +SKIP
        ...     client.health()
        {'status': 'ok', 'version': '0.1.0'}
    """

    def _open(self, **options: Any) -> httpx.Client:
        import httpx

        return httpx.Client(**options)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, call: Call) -> Any:
        attempts = self._attempts(call)
        while True:
            try:
                response = self._http.request(call.method, call.path, **call.options)
            except _network_errors() as exc:
                delay = attempts.failed(exc)
            else:
                if (answer := attempts.answered(response)) is None:
                    return _json_of(response)
                delay = answer
            time.sleep(delay)

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "version": ...}`` (needs no token)."""
        return dict(self._send(self._health()))

    def submit_batch(
        self,
        flow: str | os.PathLike[str],
        inputs: str | os.PathLike[str] | Iterable[Any],
        *,
        max_concurrent: int = 16,
        on_warning: Callable[[str], object] | None = None,
    ) -> str:
        """Submit a batch; its id. Returns once the server has stored the inputs.

        Args:
            flow: a flow file's path, or the flow's YAML/JSON text.
            inputs: a JSONL file's path (sent byte for byte, so each line gives the
                record ``run-batch`` gives it: a bad line becomes a failed record naming
                its line), or the inputs themselves (a list).
            max_concurrent: inputs of this batch in flight at once.
            on_warning: called with each of the flow's warnings the server found (keys
                Stepflow ignores, a flow whose steps will not run), as
                ``file:line:column: ...`` text; the batch runs all the same.

        Example:
            >>> client.submit_batch("flow.yaml", [{"n": 1}, {"n": 2}],
            ...                     on_warning=print)  # doctest: +SKIP
            '5bde5c0ab7154c3dbdc4ae11ce2bc649'
        """
        created = self._send(self._submit(flow, inputs, max_concurrent))
        return _created(created, on_warning)

    def get_batch(self, batch_id: str, *, retry: bool = False) -> dict[str, Any]:
        """A batch's status and counts (``status``, ``total``, ``done``, ``failed``, ...).

        With ``retry``, network errors are retried for up to ``retry_for`` seconds.
        """
        return dict(self._send(self._get(batch_id, retry)))

    def list_batches(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """``{"batches": [...], "total": N}``, newest first."""
        return dict(self._send(self._list(limit, offset)))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel a running batch (the records made so far are kept); the batch after."""
        return dict(self._send(self._cancel(batch_id)))

    def run(self, flow: str | os.PathLike[str], input: Any) -> dict[str, Any]:
        """Run a flow once on ``input``, on the server; the FlowResult as a dict.

        Example:
            >>> client.run("flow.yaml", {"n": 1})  # doctest: +SKIP
            {'outcome': 'success', 'result': {'n': 2}}
        """
        return dict(self._send(self._run(flow, input)))

    def wait(
        self,
        batch_id: str,
        *,
        poll: float = 1.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the batch is no longer running; the final batch.

        Args:
            poll: the longest pause between polls (they start faster).
            on_poll: called with the batch after every poll (for progress).

        Example:
            >>> client.wait(batch_id)["status"]  # doctest: +SKIP
            'completed'
        """
        for delay in poll_intervals(poll):
            if finished(batch := self.get_batch(batch_id, retry=True), on_poll):
                return batch
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def outputs(self, batch_id: str, *, wait: bool = False, poll: float = 1.0) -> Iterator[bytes]:
        """The batch's output records, in input order, as raw JSON lines (without newline).

        Streamed; a broken connection is resumed after the last record received, so
        no record is lost or repeated. With ``wait``, first waits for the batch to
        finish (polling, which rides out network errors); without it, the records
        made so far.

        Example:
            >>> for line in client.outputs(batch_id, wait=True):  # doctest: +SKIP
            ...     print(json.loads(line)["outcome"])
            success
        """
        if wait:
            self.wait(batch_id, poll=poll)
        call, records, attempts = self._outputs(batch_id, wait), Records(), self._stream_attempts()
        while True:
            try:
                with self._http.stream(call.method, call.path, **call.options) as r:
                    if r.is_error:
                        r.read()
                        raise _error(r)
                    records.restart()
                    for chunk in r.iter_bytes():
                        yield from records.feed(chunk)
                    yield from records.end()
                return
            except _network_errors() as exc:
                time.sleep(attempts.failed(exc))

    def download_outputs(
        self, batch_id: str, path: str | os.PathLike[str], *, wait: bool = False
    ) -> int:
        """Write the batch's records to ``path`` as JSONL; how many were written.

        The file appears complete or not at all (written beside it, then renamed).

        Example:
            >>> client.download_outputs(batch_id, "out.jsonl", wait=True)  # doctest: +SKIP
            20
        """
        with AtomicFile(Path(path)) as out:
            for line in self.outputs(batch_id, wait=wait):
                out.write(line + b"\n")
        return out.count


class AsyncClient(_ClientBase["httpx.AsyncClient"]):
    """An asyncio client of a pocketbatch server: :class:`Client`'s operations, awaited.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with AsyncClient("http://127.0.0.1:7837") as client:
        ...         batch_id = await client.submit_batch("flow.yaml", "inputs.jsonl")
        ...         await client.wait(batch_id)
        ...         return [line async for line in client.outputs(batch_id)]
    """

    def _open(self, **options: Any) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(**options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        attempts = self._attempts(call)
        while True:
            try:
                response = await self._http.request(call.method, call.path, **call.options)
            except _network_errors() as exc:
                delay = attempts.failed(exc)
            else:
                if (answer := attempts.answered(response)) is None:
                    return _json_of(response)
                delay = answer
            await asyncio.sleep(delay)

    async def health(self) -> dict[str, Any]:
        """See :meth:`Client.health`."""
        return dict(await self._send(self._health()))

    async def submit_batch(
        self,
        flow: str | os.PathLike[str],
        inputs: str | os.PathLike[str] | Iterable[Any],
        *,
        max_concurrent: int = 16,
        on_warning: Callable[[str], object] | None = None,
    ) -> str:
        """See :meth:`Client.submit_batch`."""
        created = await self._send(self._submit(flow, inputs, max_concurrent))
        return _created(created, on_warning)

    async def get_batch(self, batch_id: str, *, retry: bool = False) -> dict[str, Any]:
        """See :meth:`Client.get_batch`."""
        return dict(await self._send(self._get(batch_id, retry)))

    async def list_batches(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """See :meth:`Client.list_batches`."""
        return dict(await self._send(self._list(limit, offset)))

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """See :meth:`Client.cancel_batch`."""
        return dict(await self._send(self._cancel(batch_id)))

    async def run(self, flow: str | os.PathLike[str], input: Any) -> dict[str, Any]:
        """See :meth:`Client.run`."""
        return dict(await self._send(self._run(flow, input)))

    async def wait(
        self,
        batch_id: str,
        *,
        poll: float = 1.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """See :meth:`Client.wait`."""
        for delay in poll_intervals(poll):
            if finished(batch := await self.get_batch(batch_id, retry=True), on_poll):
                return batch
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def outputs(
        self, batch_id: str, *, wait: bool = False, poll: float = 1.0
    ) -> AsyncIterator[bytes]:
        """See :meth:`Client.outputs`."""
        if wait:
            await self.wait(batch_id, poll=poll)
        call, records, attempts = self._outputs(batch_id, wait), Records(), self._stream_attempts()
        while True:
            try:
                async with self._http.stream(call.method, call.path, **call.options) as r:
                    if r.is_error:
                        await r.aread()
                        raise _error(r)
                    records.restart()
                    async for chunk in r.aiter_bytes():
                        for line in records.feed(chunk):
                            yield line
                    for line in records.end():
                        yield line
                return
            except _network_errors() as exc:
                await asyncio.sleep(attempts.failed(exc))

    async def download_outputs(
        self, batch_id: str, path: str | os.PathLike[str], *, wait: bool = False
    ) -> int:
        """See :meth:`Client.download_outputs`."""
        with AtomicFile(Path(path)) as out:
            async for line in self.outputs(batch_id, wait=wait):
                out.write(line + b"\n")
        return out.count


def _created(created: Any, on_warning: Callable[[str], object] | None) -> str:
    """The new batch's id, after handing each of the server's warnings to ``on_warning``."""
    if on_warning is not None:
        for warning in created.get("warnings") or ():
            on_warning(str(warning))
    return str(created["batch_id"])
