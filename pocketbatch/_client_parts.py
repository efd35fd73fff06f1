"""What :class:`~pocketbatch.client.Client` and :class:`~pocketbatch.client.AsyncClient`
share that does no network I/O: a request as data (:class:`Call`, built from a flow
and inputs by :func:`submission`), retry delays (:class:`Backoff`), polling, the
records of a resumable output stream (:class:`Records`) and the atomic output file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = (
    "FINISHED",
    "AtomicFile",
    "Backoff",
    "Call",
    "Records",
    "finished",
    "flow_text",
    "poll_intervals",
    "record_index",
    "submission",
    "token_or_env",
)

FINISHED = frozenset({"completed", "cancelled", "failed"})


def token_or_env(token: str | None) -> str | None:
    """``token``, else ``POCKETBATCH_TOKEN``, else none."""
    return token or os.environ.get("POCKETBATCH_TOKEN") or None


def flow_text(flow: str | os.PathLike[str]) -> str:
    """A flow's text: read a path, pass text (anything with a newline, or JSON) through."""
    if isinstance(flow, str) and ("\n" in flow or flow.lstrip().startswith("{")):
        return flow
    path = Path(flow)
    if isinstance(flow, str) and not path.is_file():
        return flow  # one-line text; the server says what is wrong with it
    return path.read_text(encoding="utf-8")


def submission(
    flow: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Iterable[Any],
    max_concurrent: int,
) -> dict[str, Any]:
    """The ``POST /batches`` request (httpx arguments) for a batch.

    A JSONL file goes byte for byte, as a JSONL body after a line of settings, so
    the server reads its lines as ``run-batch`` reads the file (invalid UTF-8, a
    bare ``\\r``: the same records); a list of inputs goes as JSON.
    """
    settings = {"flow": flow_text(flow), "max_concurrent": max_concurrent}
    if isinstance(inputs, str | os.PathLike):
        import orjson

        body = orjson.dumps(settings) + b"\n" + Path(inputs).read_bytes()
        return {"content": body, "headers": {"Content-Type": "application/x-ndjson"}}
    return {"json": {**settings, "inputs": list(inputs)}}


def record_index(line: bytes) -> int:
    import orjson

    value = orjson.loads(line).get("index")
    return value if isinstance(value, int) else -1


class Backoff:
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


def poll_intervals(poll: float) -> Iterator[float]:
    delay = min(0.05, poll)
    while True:
        yield delay
        delay = min(delay * 2, poll)


def finished(batch: dict[str, Any], on_poll: Callable[[dict[str, Any]], None] | None) -> bool:
    """Whether a polled batch is no longer running (after telling ``on_poll`` of it)."""
    if on_poll is not None:
        on_poll(batch)
    return batch["status"] in FINISHED


@dataclass(frozen=True)
class Call:
    """One request: its method, path and httpx options; ``retry``: ride out network
    errors and 502/503/504 for up to ``retry_for`` seconds."""

    method: str
    path: str
    retry: bool = False
    options: dict[str, Any] = field(default_factory=dict)


class Records:
    """Splits streamed output chunks into records and drops any at or before the last
    index already given, so a stream resumed after a broken connection neither loses
    nor repeats a record.

    Example:
        >>> records = Records()
        >>> records.feed(b'{"index":0}\\n{"ind')
        [b'{"index":0}']
        >>> records.restart()  # the connection broke; the server sends from the start
        >>> records.feed(b'{"index":0}\\n{"index":1}\\n') + records.end()
        [b'{"index":1}']
    """

    def __init__(self) -> None:
        self._last = -1
        self._pending = b""

    def restart(self) -> None:
        """A new stream begins (a partial line of the broken one is dropped)."""
        self._pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The new complete records that ``chunk`` ends."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return [line for line in lines if self._is_new(line)]

    def end(self) -> list[bytes]:
        """The stream ended: its last record, if it had no newline."""
        rest, self._pending = self._pending, b""
        return [rest] if self._is_new(rest) else []

    def _is_new(self, line: bytes) -> bool:
        if line.strip() and (index := record_index(line)) > self._last:
            self._last = index
            return True
        return False


class AtomicFile:
    """A binary file written beside ``path`` and renamed onto it on success only;
    ``count``: the lines written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")

    def __enter__(self) -> Self:
        return self

    def write(self, line: bytes) -> None:
        """Write one line (ending in a newline)."""
        self._file.write(line)
        self.count += 1

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
