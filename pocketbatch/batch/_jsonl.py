"""JSONL in and out: JSON that keeps big integers exact, an ordered writer, resume.

Reading input lines (numbering, parsing, failing a bad line on its own) is
:mod:`pocketbatch.batch._lines`; this module reads and writes the JSON itself.
Integers beyond 64 bits are kept exact both ways (:func:`loads_json`,
:func:`dumps_json`).

Output records are one JSON object per line, in input order::

    {"index": 0, "outcome": "success", "result": ...}
    {"index": 1, "line": 3, "outcome": "failed", "error": {"code": ..., "message": ...}}

A failed record names its input line (``line``: 1-based, blank lines counted;
``index`` counts only the non-blank lines from 0) whenever the input came from a
line: run-batch, and the server's batches.

Because records are written in order, an interrupted output file is always a
prefix of the full one (plus, after a hard kill, maybe one torn last line).
:func:`resume_point` repairs the tear and says how many inputs are done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pocketbatch._errors import PocketbatchError
from pocketbatch._result import FlowResult

__all__ = (
    "JsonlWriter",
    "ResumeError",
    "Resumed",
    "dumps_json",
    "encode_record",
    "loads_json",
    "non_finite",
    "record",
    "resume_point",
    "resume_state",
)


class ResumeError(PocketbatchError):
    """An existing output file cannot be resumed (it is not this batch's output)."""


def loads_json(data: bytes | str) -> Any:
    """Parse JSON (strict UTF-8) with orjson, keeping integers beyond 64 bits exact.

    orjson reads such integers as floats; a document holding a float that big is
    read again by the standard library, which keeps them exact. Numbers beyond
    the range of a double are refused, as orjson refuses them.

    Raises:
        ValueError: not JSON (an ``orjson.JSONDecodeError`` with its position), or
            nested too deeply to read exactly.

    Example:
        >>> loads_json(b'{"n": -123456789012345678901234567890, "f": 1.5}')
        {'n': -123456789012345678901234567890, 'f': 1.5}
    """
    import orjson

    value = orjson.loads(data)
    if _has_huge_number(value):
        import json

        try:
            value = json.loads(data)
        except RecursionError:
            raise ValueError(
                "nested too deeply to read its integers beyond 64 bits exactly"
            ) from None
    return value


_HUGE = float(2**63)


def _any_float(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether some float inside the JSON ``value`` passes ``test`` (iterative: any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if test(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _has_huge_number(value: Any) -> bool:
    """Whether a float in ``value`` may be an integer too big for 64 bits."""
    return _any_float(value, lambda f: abs(f) >= _HUGE)


def non_finite(value: Any) -> bool:
    """Whether ``value`` holds NaN or an infinity (which JSON cannot represent).

    Example:
        >>> non_finite({"a": [1.0, float("nan")]}), non_finite({"a": 1.5})
        (True, False)
    """
    return _any_float(value, lambda f: not math.isfinite(f))


def record(index: int, result: FlowResult) -> dict[str, Any]:
    """The output record for one input; a failed one names its input line when known.

    Example:
        >>> from pocketbatch import FlowResult
        >>> record(3, FlowResult("success", {"n": 1}))
        {'index': 3, 'outcome': 'success', 'result': {'n': 1}}
        >>> record(4, FlowResult.failed("COMPONENT_FAILED", "boom", line=6))["line"]
        6
    """
    if result.line is not None and result.outcome == "failed":
        return {"index": index, "line": result.line, **result.to_dict()}
    return {"index": index, **result.to_dict()}


def dumps_json(value: Any) -> bytes:
    """``value`` as compact JSON bytes in orjson's layout, integers of any size exact.

    orjson writes what it can. What it refuses (an integer beyond 64 bits, keys that
    are not strings, nesting beyond its 254 levels) is written by :func:`_write_like_orjson`
    in the very same layout (each scalar is still written by orjson), so every record
    of a batch looks alike byte for byte whatever it holds. NaN and infinities are not
    looked for here (see :func:`non_finite`).

    Raises:
        TypeError: ``value`` is not JSON (a set, an object...): orjson's message.
        ValueError: nested more than 512 levels.

    Example:
        >>> dumps_json({"n": 2**70, "f": [1.5, 1e-7, None]})
        b'{"n":1180591620717411303424,"f":[1.5,1e-7,null]}'
        >>> dumps_json({1: 2**70, "f": 1e-7})  # the standard library would write 1e-07
        b'{"1":1180591620717411303424,"f":1e-7}'
    """
    import orjson

    try:
        return orjson.dumps(value)
    except TypeError as exc:
        refused = exc
    try:  # the common case, at orjson's speed: only big integers were refused
        return orjson.dumps(_big_ints_as_fragments(value))
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return _write_like_orjson(value)
    except _NotJson:
        raise refused from None


def _big_ints_as_fragments(value: Any) -> Any:
    """``value`` with each integer beyond orjson's 64 bits as pre-written JSON."""
    import orjson

    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64_MIN <= value < _UINT64_END:
            return value
        return orjson.Fragment(int.__repr__(value).encode())
    if isinstance(value, dict):
        return {key: _big_ints_as_fragments(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_fragments(item) for item in value]
    return value


_INT64_MIN, _UINT64_END = -(2**63), 2**64
_MAX_WRITE_DEPTH = 512  # levels of objects and arrays a result may nest to be written


class _NotJson(Exception):
    """Internal: :func:`_write_like_orjson` met a value that is not JSON."""


def _key(key: Any) -> str:
    """A non-string key as the standard library's ``json`` writes it."""
    if isinstance(key, str):
        return key
    if key is True or key is False:
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)
    raise _NotJson


def _write_like_orjson(value: Any) -> bytes:
    """``value`` as orjson would lay it out, at any size of integer and up to
    :data:`_MAX_WRITE_DEPTH` levels: containers here (iteratively), every scalar by
    orjson itself, an integer beyond 64 bits by ``int.__repr__``.

    Raises:
        _NotJson: something orjson refuses that is not one of the above.
        ValueError: nested more than :data:`_MAX_WRITE_DEPTH` levels.
    """
    import orjson

    out: list[bytes] = []
    # A stack of pending work: values to write, or literal bytes (closing brackets,
    # commas, keys) to emit, and the depth they are at.
    stack: list[tuple[Any, int, bool]] = [(value, 0, False)]
    while stack:
        item, depth, literal = stack.pop()
        if literal:
            out.append(item)
            continue
        if isinstance(item, dict):
            if depth >= _MAX_WRITE_DEPTH:
                raise ValueError("nested too deeply to write as JSON")
            pending: list[tuple[Any, int, bool]] = [(b"}", depth, True)]
            for n, (key, child) in enumerate(reversed(item.items())):
                pending.append((child, depth + 1, False))
                sep = b"" if n == len(item) - 1 else b","
                pending.append((sep + orjson.dumps(_key(key)) + b":", depth, True))
            stack.extend(pending)
            out.append(b"{")
        elif isinstance(item, list | tuple):
            if depth >= _MAX_WRITE_DEPTH:
                raise ValueError("nested too deeply to write as JSON")
            pending = [(b"]", depth, True)]
            for n, child in enumerate(reversed(item)):
                pending.append((child, depth + 1, False))
                if n != len(item) - 1:
                    pending.append((b",", depth, True))
            stack.extend(pending)
            out.append(b"[")
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not _INT64_MIN <= item < _UINT64_END
        ):
            out.append(int.__repr__(item).encode())
        else:
            try:
                out.append(orjson.dumps(item))
            except TypeError:
                raise _NotJson from None
    return b"".join(out)


def encode_record(record: dict[str, Any], *, line: int | None = None) -> tuple[bytes, bool]:
    """A record (or a FlowResult's dict) as one JSON line without its newline, and
    whether it had to become an ``INVALID_OUTPUT`` failure.

    A result that JSON cannot hold (a set, an object, NaN or an infinity, nesting
    too deep) fails its own record, keeping its ``index``: it never stops a batch.
    ``run-batch``, the server's batches and ``POST /runs`` all write through here.

    Example:
        >>> encode_record({"index": 0, "outcome": "success", "result": 2**64})
        (b'{"index":0,"outcome":"success","result":18446744073709551616}', False)
        >>> line, failed = encode_record({"outcome": "success", "result": {1, 2}})
        >>> failed, line[:60]
        (True, b'{"outcome":"failed","error":{"code":"INVALID_OUTPUT","messag')
    """
    problem = None
    try:
        encoded = dumps_json(record)
    except TypeError as exc:
        problem = f"the result is not JSON: {exc}"
    except ValueError:  # dumps_json: deeper than any JSON writer goes
        problem = "the result nests too deeply to write as JSON"
    if problem is None and non_finite(record.get("result")):
        problem = "the result holds NaN or Infinity, which JSON cannot represent"
    if problem is None:
        return encoded, False
    import orjson

    failed: dict[str, Any] = {key: record[key] for key in ("index", "line") if key in record}
    if line is not None and "index" in record:
        failed["line"] = line
    failed |= {"outcome": "failed", "error": {"code": "INVALID_OUTPUT", "message": problem}}
    return orjson.dumps(failed), True


class JsonlWriter:
    """Writes records as JSON lines to a file (appending) or a stream.

    Each write goes straight to the operating system (not left in a Python
    buffer), so a killed process loses at most the line being written.

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> writer = JsonlWriter(out)
        >>> writer.write({"index": 0, "outcome": "success", "result": 1})
        >>> out.getvalue()
        b'{"index":0,"outcome":"success","result":1}\\n'
    """

    def __init__(self, target: str | Path | IO[bytes], *, append: bool = False) -> None:
        if isinstance(target, str | Path):
            self._stream: IO[bytes] = open(target, "ab" if append else "wb")  # noqa: SIM115
            self._owned = True
        else:
            self._stream = target
            self._owned = False
        self.written = 0
        self.failed_outputs = 0  # records turned into INVALID_OUTPUT failures

    def write(self, record: dict[str, Any], *, line: int | None = None) -> None:
        """Write one record as one line (see :func:`encode_record`; ``line``: the
        input's line number, for a record that turns into an ``INVALID_OUTPUT``)."""
        line_bytes, failed = encode_record(record, line=line)
        self.failed_outputs += failed
        self._stream.write(line_bytes + b"\n")
        self._stream.flush()
        self.written += 1

    def close(self) -> None:
        """Flush and close (a stream passed in is flushed, not closed)."""
        self._stream.flush()
        if self._owned:
            self._stream.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class Resumed:
    """What an existing output already holds: ``done`` records, ``failed`` of them
    failed, ending at byte ``end`` (anything after it is a torn last line)."""

    done: int
    failed: int
    end: int = 0


def resume_state(path: str | Path, *, inputs: int | None = None, repair: bool = True) -> Resumed:
    """Like :func:`resume_point`, also counting the failed records; with ``inputs``,
    refuse an output holding more records than there are inputs. With
    ``repair=False`` the file is only read: a torn last line is left for the caller
    to cut at :attr:`Resumed.end`.

    Raises:
        ResumeError: as :func:`resume_point`, or too many records.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> _ = f.write_bytes(b'{"index":0,"outcome":"failed"}\\n{"ind')
        >>> resume_state(f, repair=False), len(f.read_bytes())
        (Resumed(done=1, failed=1, end=31), 36)
    """
    done, failed, end = _scan(path, repair=repair)
    if inputs is not None and done > inputs:
        raise ResumeError(
            f"{path} holds {done} records but the inputs have only {inputs} lines; "
            "resume only continues an output written by run-batch for the same inputs"
        )
    return Resumed(done, failed, end)


def resume_point(path: str | Path) -> int:
    """How many records ``path`` already holds, after repairing a torn last line.

    Records must be this batch's: indexes 0, 1, 2... in order. A last line cut
    short by a crash (no newline, or not JSON) is removed. A missing file is 0.

    Raises:
        ResumeError: a complete line is not a record, or indexes are out of order.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> _ = f.write_bytes(b'{"index":0,"outcome":"success"}\\n{"index":1,"outc')
        >>> resume_point(f), f.read_bytes()
        (1, b'{"index":0,"outcome":"success"}\\n')
    """
    return _scan(path)[0]


def _scan(path: str | Path, *, repair: bool = True) -> tuple[int, int, int]:
    """(records, failed records, where they end) in an output file; with ``repair``,
    cut a torn last line."""
    import orjson

    file = Path(path)
    if not file.exists():
        return 0, 0, 0
    done = failed = 0
    good_end = 0
    with open(file, "rb") as stream:
        for raw in stream:
            if not raw.endswith(b"\n"):
                break  # torn: the writer died mid-line
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if stream.read(1):  # a broken line that is not the last one
                    raise ResumeError(
                        f"{path}: line {done + 1} is not JSON; this is not a batch output "
                        "file, or it was edited"
                    ) from None
                break
            if not isinstance(value, dict) or value.get("index") != done:
                raise ResumeError(
                    f"{path}: line {done + 1} should be the record of input {done}, got "
                    f"{raw[:80]!r}; resume only continues an output written by run-batch "
                    "for the same inputs"
                )
            done += 1
            failed += value.get("outcome") == "failed"
            good_end += len(raw)
    if repair and good_end != file.stat().st_size:
        with open(file, "r+b") as stream:
            stream.truncate(good_end)
    return done, failed, good_end
