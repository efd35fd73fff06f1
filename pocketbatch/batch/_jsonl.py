"""JSONL in and out: a lazy reader that never loses a line, an ordered writer, resume.

Reading yields one item per non-blank input line, in order. A line that is not
JSON, or not a JSON object, becomes an :class:`~pocketbatch.batch.InputProblem`
naming its line number, so it fails its own record and the batch goes on.

Output records are one JSON object per line, in input order::

    {"index": 0, "outcome": "success", "result": ...}
    {"index": 1, "outcome": "failed", "error": {"code": ..., "message": ...}}

Because records are written in order, an interrupted output file is always a
prefix of the full one (plus, after a hard kill, maybe one torn last line).
:func:`resume_point` repairs the tear and says how many inputs are done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pocketbatch._errors import PocketbatchError
from pocketbatch.batch._runner import InputProblem
from pocketbatch.loader._source import MAX_DEPTH, nesting_depth

if TYPE_CHECKING:
    from pocketbatch.loader import FlowResult

__all__ = (
    "JsonlWriter",
    "Line",
    "ResumeError",
    "Resumed",
    "count_inputs",
    "encode_input",
    "encode_record",
    "non_finite",
    "parse_line",
    "read_inputs",
    "record",
    "resume_point",
    "resume_state",
    "with_line",
)


class ResumeError(PocketbatchError):
    """An existing output file cannot be resumed (it is not this batch's output)."""


@dataclass(frozen=True, slots=True)
class Line:
    """An input with the line number it came from (1-based)."""

    number: int
    value: Any


def read_inputs(path: str | Path, *, skip: int = 0) -> Iterator[Line | InputProblem]:
    """Yield each non-blank line of ``path`` as a :class:`Line`, lazily.

    A line that is not a JSON object yields an :class:`InputProblem`
    (``INVALID_JSON`` or ``INVALID_INPUT``) naming the line. The first ``skip``
    inputs (non-blank lines) are passed over without parsing, for resuming.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "in.jsonl"
        >>> _ = f.write_text('{"a": 1}\\n\\nnot json\\n[1]\\n')
        >>> [type(x).__name__ for x in read_inputs(f)]
        ['Line', 'InputProblem', 'InputProblem']
    """

    seen = 0
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            seen += 1
            if seen <= skip:
                continue
            yield parse_line(number, raw)


def parse_line(number: int, raw: bytes) -> Line | InputProblem:
    """One input line as a :class:`Line`, or the :class:`InputProblem` that names it.

    Example:
        >>> parse_line(4, b"[1]")
        InputProblem(code='INVALID_INPUT', message='line 4: expected a JSON object, got array')
    """
    import orjson

    # Without its line ending, so an error's position is within the line (and the
    # same whether the line came from a file or from a request body).
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InputProblem("INVALID_JSON", f"line {number}: not valid JSON: {exc}")
    if not isinstance(value, dict):
        return InputProblem(
            "INVALID_INPUT", f"line {number}: expected a JSON object, got {_json_kind(value)}"
        )
    if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        return InputProblem(
            "INVALID_INPUT",
            f"line {number}: the input nests more than {MAX_DEPTH} levels of objects and "
            f"arrays (the limit is {MAX_DEPTH})",
        )
    if _has_huge_number(value):
        # orjson reads integers beyond 64 bits as floats: keep them exact.
        import json

        value = json.loads(raw)
    return Line(number, value)


def _json_kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


_HUGE = float(2**63)


def _any_float(value: Any, test: Callable[[float], bool]) -> bool:
    """Whether some float inside the JSON ``value`` passes ``test`` (iterative: a value
    nested however deep is looked through without recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if test(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
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


def with_line(result: FlowResult, number: int) -> FlowResult:
    """``result``, its ``INVALID_INPUT`` message prefixed with the input's line number."""
    from dataclasses import replace

    if result.error is None or result.error.code != "INVALID_INPUT":
        return result
    error = replace(result.error, message=f"line {number}: {result.error.message}")
    return replace(result, error=error)


def count_inputs(path: str | Path) -> int:
    """How many inputs (non-blank lines) ``path`` holds: for progress and ETA."""
    with open(path, "rb") as stream:
        return sum(1 for raw in stream if raw.strip())


def record(index: int, result: FlowResult) -> dict[str, Any]:
    """The output record for one input.

    Example:
        >>> from pocketbatch import FlowResult
        >>> record(3, FlowResult("success", {"n": 1}))
        {'index': 3, 'outcome': 'success', 'result': {'n': 1}}
    """
    return {"index": index, **result.to_dict()}


def encode_record(record: dict[str, Any]) -> tuple[bytes, bool]:
    """One record as a JSON line, and whether it had to become an ``INVALID_OUTPUT`` failure.

    A result that JSON cannot hold (NaN, infinities, objects that are not JSON, or
    nesting too deep to write) fails its own record; the line is always written.

    Example:
        >>> encode_record({"index": 0, "outcome": "success", "result": 1})
        (b'{"index":0,"outcome":"success","result":1}\\n', False)
        >>> nan = {"index": 1, "outcome": "success", "result": [float("nan")]}
        >>> line, replaced = encode_record(nan)
        >>> replaced, b"INVALID_OUTPUT" in line
        (True, True)
    """
    import orjson

    problem = None
    try:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError as exc:
        try:  # integers beyond 64 bits, nesting beyond orjson's 255 levels
            import json

            line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()
        except (TypeError, ValueError):
            problem = f"the result is not JSON: {exc}"
        except RecursionError:
            problem = "the result nests too deeply to write as JSON"
    if problem is None and non_finite(record.get("result")):
        problem = "the result holds NaN or Infinity, which JSON cannot represent"
    if problem is None:
        return line, False
    failed = {
        **({"index": record["index"]} if "index" in record else {}),
        "outcome": "failed",
        "error": {"code": "INVALID_OUTPUT", "message": problem},
    }
    return orjson.dumps(failed, option=orjson.OPT_APPEND_NEWLINE), True


def encode_input(value: Any) -> bytes:
    """An input value as one line of JSON (no newline), to be read back by :func:`parse_line`.

    A value nested more than :data:`~pocketbatch.loader._source.MAX_DEPTH` levels is
    cut off one level below the limit: it still reads back as too deep, so it fails
    its own record instead of failing the whole submission.

    Example:
        >>> encode_input({"a": [1, 2]})
        b'{"a":[1,2]}'
        >>> deep = {}
        >>> for _ in range(500):
        ...     deep = {"a": deep}
        >>> parse_line(1, encode_input(deep)).code
        'INVALID_INPUT'
    """
    import orjson

    if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        value = _clipped(value, MAX_DEPTH + 1)
    return orjson.dumps(value)


def _clipped(value: Any, levels: int) -> Any:
    """``value`` with the objects and arrays below ``levels`` levels emptied."""
    if isinstance(value, dict):
        return {k: _clipped(v, levels - 1) for k, v in value.items()} if levels > 1 else {}
    if isinstance(value, list):
        return [_clipped(v, levels - 1) for v in value] if levels > 1 else []
    return value


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

    def write(self, record: dict[str, Any]) -> None:
        """Write one record as one line."""
        line, replaced = encode_record(record)
        self.failed_outputs += replaced
        self._stream.write(line)
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
    """What an existing output already holds: ``done`` records, ``failed`` of them failed."""

    done: int
    failed: int


def resume_state(path: str | Path, *, inputs: int | None = None) -> Resumed:
    """Like :func:`resume_point`, also counting the failed records; with ``inputs``,
    refuse an output holding more records than there are inputs.

    Raises:
        ResumeError: as :func:`resume_point`, or too many records.
    """
    done, failed = _scan(path)
    if inputs is not None and done > inputs:
        raise ResumeError(
            f"{path} holds {done} records but the inputs have only {inputs} lines; "
            "resume only continues an output written by run-batch for the same inputs"
        )
    return Resumed(done, failed)


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


def _scan(path: str | Path) -> tuple[int, int]:
    """(records, failed records) in an output file, repairing a torn last line."""
    import orjson

    file = Path(path)
    if not file.exists():
        return 0, 0
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
    if good_end != file.stat().st_size:
        with open(file, "r+b") as stream:
            stream.truncate(good_end)
    return done, failed
