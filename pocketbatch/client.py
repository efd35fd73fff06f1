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
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pocketbatch._errors import PocketbatchError

if TYPE_CHECKING:
    import httpx

__all__ = ("AsyncClient", "Client", "ServerError")

API = "/api/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRY_FOR = 60.0
_RETRY_STATUSES = frozenset({502, 503, 504})
_FINISHED = frozenset({"completed", "cancelled", "failed"})


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


def _token(token: str | None) -> str | None:
    return token or os.environ.get("POCKETBATCH_TOKEN") or None


def _flow_text(flow: str | os.PathLike[str]) -> str:
    """A flow's text: read a path, pass text (anything with a newline, or JSON) through."""
    if isinstance(flow, str) and ("\n" in flow or flow.lstrip().startswith("{")):
        return flow
    path = Path(flow)
    if isinstance(flow, str) and not path.is_file():
        return flow  # one-line text; the server says what is wrong with it
    return path.read_text(encoding="utf-8")


def _submission(
    flow: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Iterable[Any],
    max_concurrent: int,
) -> dict[str, Any]:
    """The ``POST /batches`` request (httpx arguments) for a batch.

    A JSONL file goes byte for byte, as a JSONL body after a line of settings, so
    the server reads its lines as ``run-batch`` reads the file (invalid UTF-8, a
    bare ``\\r``: the same records); a list of inputs goes as JSON.
    """
    settings = {"flow": _flow_text(flow), "max_concurrent": max_concurrent}
    if isinstance(inputs, str | os.PathLike):
        import orjson

        body = orjson.dumps(settings) + b"\n" + Path(inputs).read_bytes()
        return {"content": body, "headers": {"Content-Type": "application/x-ndjson"}}
    return {"json": {**settings, "inputs": list(inputs)}}


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


def _index(line: bytes) -> int:
    import orjson

    value = orjson.loads(line).get("index")
    return value if isinstance(value, int) else -1


class _Backoff:
    """Exponential delays (``first``, doubling, at most ``cap``) within a ``budget`` of seconds."""

    def __init__(self, budget: float, *, first: float = 0.25, cap: float = 8.0) -> None:
        self._deadline = time.monotonic() + budget
        self._delay = first
        self._cap = cap

    def next_delay(self) -> float | None:
        """The seconds to sleep before the next try, or ``None`` when the budget is spent."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return None
        delay = min(self._delay, self._cap, left)
        self._delay *= 2
        return delay


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError,)


def _poll_intervals(poll: float) -> Iterator[float]:
    delay = min(0.05, poll)
    while True:
        yield delay
        delay = min(delay * 2, poll)


class Client:
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

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> None:
        import httpx

        self.url = api_url(url)
        self.retry_for = retry_for
        token = _token(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._timeout = timeout

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _request(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> Any:
        backoff = _Backoff(self.retry_for if retry else 0.0)
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except _network_errors() as exc:
                delay = backoff.next_delay()
                if delay is None:
                    raise ServerError(None, f"{self.url}{path}: {exc!r}") from exc
                time.sleep(delay)
                continue
            if response.status_code in _RETRY_STATUSES and retry:
                delay = backoff.next_delay()
                if delay is not None:
                    time.sleep(delay)
                    continue
            if response.is_error:
                raise _error(response)
            return response.json()

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "version": ...}`` (needs no token)."""
        return dict(self._request("GET", "/health", retry=False))

    def submit_batch(
        self,
        flow: str | os.PathLike[str],
        inputs: str | os.PathLike[str] | Iterable[Any],
        *,
        max_concurrent: int = 16,
    ) -> str:
        """Submit a batch; its id. Returns once the server has stored the inputs.

        Args:
            flow: a flow file's path, or the flow's YAML/JSON text.
            inputs: a JSONL file's path (sent byte for byte, so each line gives the
                record ``run-batch`` gives it: a bad line becomes a failed record naming
                its line), or the inputs themselves (a list).
            max_concurrent: inputs of this batch in flight at once.

        Example:
            >>> client.submit_batch("flow.yaml", [{"n": 1}, {"n": 2}])  # doctest: +SKIP
            '5bde5c0ab7154c3dbdc4ae11ce2bc649'
        """
        request = _submission(flow, inputs, max_concurrent)
        return str(self._request("POST", "/batches", retry=False, **request)["batch_id"])

    def get_batch(self, batch_id: str, *, retry: bool = False) -> dict[str, Any]:
        """A batch's status and counts (``status``, ``total``, ``done``, ``failed``, ...).

        With ``retry``, network errors are retried for up to ``retry_for`` seconds.
        """
        return dict(self._request("GET", f"/batches/{batch_id}", retry=retry))

    def list_batches(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """``{"batches": [...], "total": N}``, newest first."""
        params = {"limit": limit, "offset": offset}
        return dict(self._request("GET", "/batches", retry=False, params=params))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel a running batch (the records made so far are kept); the batch after."""
        return dict(self._request("POST", f"/batches/{batch_id}/cancel", retry=False))

    def run(self, flow: str | os.PathLike[str], input: Any) -> dict[str, Any]:
        """Run a flow once on ``input``, on the server; the FlowResult as a dict.

        Example:
            >>> client.run("flow.yaml", {"n": 1})  # doctest: +SKIP
            {'outcome': 'success', 'result': {'n': 2}}
        """
        import httpx

        body = {"flow": _flow_text(flow), "input": input}
        timeout = httpx.Timeout(self._timeout, read=None)
        return dict(self._request("POST", "/runs", retry=False, json=body, timeout=timeout))

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
        for delay in _poll_intervals(poll):
            batch = self.get_batch(batch_id, retry=True)
            if on_poll is not None:
                on_poll(batch)
            if batch["status"] in _FINISHED:
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
        last = -1
        backoff = _Backoff(self.retry_for)
        params = {"wait": "true"} if wait else {}
        while True:
            try:
                with self._http.stream("GET", f"/batches/{batch_id}/outputs", params=params) as r:
                    if r.is_error:
                        r.read()
                        raise _error(r)
                    pending = b""
                    for chunk in r.iter_bytes():
                        *lines, pending = (pending + chunk).split(b"\n")
                        for line in lines:
                            if line.strip() and (index := _index(line)) > last:
                                last = index
                                yield line
                    if pending.strip() and (index := _index(pending)) > last:
                        last = index
                        yield pending
                return
            except _network_errors() as exc:
                delay = backoff.next_delay()
                if delay is None:
                    raise ServerError(None, f"{self.url}: reading outputs: {exc!r}") from exc
                time.sleep(delay)

    def download_outputs(
        self, batch_id: str, path: str | os.PathLike[str], *, wait: bool = False
    ) -> int:
        """Write the batch's records to ``path`` as JSONL; how many were written.

        The file appears complete or not at all (written beside it, then renamed).

        Example:
            >>> client.download_outputs(batch_id, "out.jsonl", wait=True)  # doctest: +SKIP
            20
        """
        with _AtomicFile(Path(path)) as out:
            count = 0
            for line in self.outputs(batch_id, wait=wait):
                out.write(line + b"\n")
                count += 1
        return count


class AsyncClient:
    """An asyncio client of a pocketbatch server: :class:`Client`'s operations, awaited.

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     async with AsyncClient("http://127.0.0.1:7837") as client:
        ...         batch_id = await client.submit_batch("flow.yaml", "inputs.jsonl")
        ...         await client.wait(batch_id)
        ...         return [line async for line in client.outputs(batch_id)]
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
    ) -> None:
        import httpx

        self.url = api_url(url)
        self.retry_for = retry_for
        token = _token(token)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self._timeout = timeout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _request(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> Any:
        backoff = _Backoff(self.retry_for if retry else 0.0)
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except _network_errors() as exc:
                delay = backoff.next_delay()
                if delay is None:
                    raise ServerError(None, f"{self.url}{path}: {exc!r}") from exc
                await asyncio.sleep(delay)
                continue
            if response.status_code in _RETRY_STATUSES and retry:
                delay = backoff.next_delay()
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
            if response.is_error:
                raise _error(response)
            return response.json()

    async def health(self) -> dict[str, Any]:
        """See :meth:`Client.health`."""
        return dict(await self._request("GET", "/health", retry=False))

    async def submit_batch(
        self,
        flow: str | os.PathLike[str],
        inputs: str | os.PathLike[str] | Iterable[Any],
        *,
        max_concurrent: int = 16,
    ) -> str:
        """See :meth:`Client.submit_batch`."""
        request = _submission(flow, inputs, max_concurrent)
        return str((await self._request("POST", "/batches", retry=False, **request))["batch_id"])

    async def get_batch(self, batch_id: str, *, retry: bool = False) -> dict[str, Any]:
        """See :meth:`Client.get_batch`."""
        return dict(await self._request("GET", f"/batches/{batch_id}", retry=retry))

    async def list_batches(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """See :meth:`Client.list_batches`."""
        params = {"limit": limit, "offset": offset}
        return dict(await self._request("GET", "/batches", retry=False, params=params))

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """See :meth:`Client.cancel_batch`."""
        return dict(await self._request("POST", f"/batches/{batch_id}/cancel", retry=False))

    async def run(self, flow: str | os.PathLike[str], input: Any) -> dict[str, Any]:
        """See :meth:`Client.run`."""
        import httpx

        body = {"flow": _flow_text(flow), "input": input}
        timeout = httpx.Timeout(self._timeout, read=None)
        return dict(await self._request("POST", "/runs", retry=False, json=body, timeout=timeout))

    async def wait(
        self,
        batch_id: str,
        *,
        poll: float = 1.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """See :meth:`Client.wait`."""
        for delay in _poll_intervals(poll):
            batch = await self.get_batch(batch_id, retry=True)
            if on_poll is not None:
                on_poll(batch)
            if batch["status"] in _FINISHED:
                return batch
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def outputs(
        self, batch_id: str, *, wait: bool = False, poll: float = 1.0
    ) -> AsyncIterator[bytes]:
        """See :meth:`Client.outputs`."""
        if wait:
            await self.wait(batch_id, poll=poll)
        last = -1
        backoff = _Backoff(self.retry_for)
        params = {"wait": "true"} if wait else {}
        while True:
            try:
                path = f"/batches/{batch_id}/outputs"
                async with self._http.stream("GET", path, params=params) as r:
                    if r.is_error:
                        await r.aread()
                        raise _error(r)
                    pending = b""
                    async for chunk in r.aiter_bytes():
                        *lines, pending = (pending + chunk).split(b"\n")
                        for line in lines:
                            if line.strip() and (index := _index(line)) > last:
                                last = index
                                yield line
                    if pending.strip() and (index := _index(pending)) > last:
                        last = index
                        yield pending
                return
            except _network_errors() as exc:
                delay = backoff.next_delay()
                if delay is None:
                    raise ServerError(None, f"{self.url}: reading outputs: {exc!r}") from exc
                await asyncio.sleep(delay)

    async def download_outputs(
        self, batch_id: str, path: str | os.PathLike[str], *, wait: bool = False
    ) -> int:
        """See :meth:`Client.download_outputs`."""
        with _AtomicFile(Path(path)) as out:
            count = 0
            async for line in self.outputs(batch_id, wait=wait):
                out.write(line + b"\n")
                count += 1
        return count


class _AtomicFile:
    """A binary file written beside ``path`` and renamed onto it on success only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")

    def __enter__(self) -> Any:
        return self._file

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
