"""Input lines: what a JSONL input line is, numbering and parsing it, running it.

Used by ``run-batch`` (a file), the server (a request body, stored lines) and the
batch runner alike, so a line means one thing everywhere:

* lines end at ``b"\\n"`` only (a bare ``b"\\r"`` is part of its line); the ending
  and a ``b"\\r"`` before it are dropped;
* a line of only ASCII whitespace is blank: skipped, though counted in the line
  numbers (1-based);
* lines stay bytes until :func:`parse_line` reads them as strict UTF-8 JSON, so
  invalid UTF-8 fails that line's record alone (:func:`encode_input` writes a value
  as a line that reads back the same);
* a line that is not JSON, or not a JSON object, becomes an :class:`InputProblem`
  naming its line number: it fails its own record and the batch goes on;
* :func:`run_input` runs a parsed line: an :class:`InputProblem` fails without
  running, a :class:`Line`'s value runs and an ``INVALID_INPUT`` error names the line;
  every result of a line carries its number (:attr:`FlowResult.line`), so every
  failed record names its input line, whatever failed;
* a UTF-8 byte order mark at the very start of the inputs is dropped (editors on
  Windows write one); anywhere else it is part of the line.

Numbering: ``index`` counts the non-blank lines from 0, ``line`` counts every line
from 1; with no blank lines, ``line == index + 1``.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pocketbatch._result import FlowResult
from pocketbatch.batch._jsonl import dumps_json, loads_json
from pocketbatch.loader._source import MAX_DEPTH, nesting_depth

__all__ = (
    "BOM",
    "InputProblem",
    "Line",
    "count_inputs",
    "encode_input",
    "input_lines",
    "non_blank_lines",
    "parse_line",
    "read_inputs",
    "run_input",
    "with_line",
)


BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark: dropped at the start of the inputs


@dataclass(frozen=True)
class InputProblem:
    """Stands in for an input that could not be read (bad JSON, not an object...).

    The runner turns it into that item's failed result without running the flow,
    so the rest of the batch goes on.

    Example:
        >>> InputProblem("INVALID_JSON", "line 3: unexpected end of data", 3)
        InputProblem(code='INVALID_JSON', message='line 3: unexpected end of data', line=3)
    """

    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """An input with the line number it came from (1-based)."""

    number: int
    value: Any


def input_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` for each non-blank JSONL line of ``data``, lazily.

    The one definition of a JSONL input line (see the module's docstring): split
    on ``b"\\n"`` only, the ending (and a ``b"\\r"`` before it) removed, blank
    lines skipped but counted. The bytes are not decoded: :func:`parse_line` does.

    Example:
        >>> list(input_lines(b'{"a": 1}\\r\\n\\n \\n{"b": 2}\\r{"c": 3}\\n\\xff'))
        [(1, b'{"a": 1}'), (4, b'{"b": 2}\\r{"c": 3}'), (5, b'\\xff')]
    """
    return non_blank_lines(io.BytesIO(data))


def non_blank_lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """:func:`input_lines` of a binary stream (whose iteration splits on ``b"\\n"`` only).

    A UTF-8 byte order mark opening the first line is dropped.

    Example:
        >>> import io
        >>> list(non_blank_lines(io.BytesIO(b'\\t\\r\\n{"a": 1}\\r\\n')))
        [(2, b'{"a": 1}')]
        >>> list(non_blank_lines(io.BytesIO(b'\\xef\\xbb\\xbf{"a": 1}\\n')))
        [(1, b'{"a": 1}')]
    """
    for number, raw in enumerate(stream, start=1):
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            line = line.removeprefix(BOM)
        if line.strip():
            yield number, line


def read_inputs(path: str | Path, *, skip: int = 0) -> Iterator[Line | InputProblem]:
    """Yield each non-blank line of ``path`` as a :class:`Line`, lazily.

    A line that is not a JSON object yields an :class:`InputProblem`
    (``INVALID_JSON`` or ``INVALID_INPUT``) naming the line. The first ``skip``
    inputs (non-blank lines) are passed over without parsing, for resuming.
    Lines are as :func:`input_lines` defines them.

    Example:
        >>> import pathlib, tempfile
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "in.jsonl"
        >>> _ = f.write_text('{"a": 1}\\n\\nnot json\\n[1]\\n')
        >>> [type(x).__name__ for x in read_inputs(f)]
        ['Line', 'InputProblem', 'InputProblem']
    """

    seen = 0
    with open(path, "rb") as stream:
        for number, raw in non_blank_lines(stream):
            seen += 1
            if seen <= skip:
                continue
            yield parse_line(number, raw)


def count_inputs(path: str | Path) -> int:
    """How many inputs (non-blank lines) ``path`` holds: for progress and ETA."""
    with open(path, "rb") as stream:
        return sum(1 for _ in non_blank_lines(stream))


def parse_line(number: int, raw: bytes) -> Line | InputProblem:
    """One input line as a :class:`Line`, or the :class:`InputProblem` that names it.

    The bytes are read as strict UTF-8 JSON (:func:`~pocketbatch.batch._jsonl.loads_json`:
    integers beyond 64 bits stay exact).

    Example:
        >>> parse_line(4, b"[1]").message
        'line 4: expected a JSON object, got array'
        >>> parse_line(2, b'{"n": 123456789012345678901234567890}').value
        {'n': 123456789012345678901234567890}
    """
    # Without its line ending, so an error's position is within the line (and the
    # same whether the line came from a file or from a request body).
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    try:
        value = loads_json(raw)
    except ValueError as exc:  # orjson.JSONDecodeError is one
        return InputProblem("INVALID_JSON", f"line {number}: not valid JSON: {exc}", number)
    if not isinstance(value, dict):
        return InputProblem(
            "INVALID_INPUT",
            f"line {number}: expected a JSON object, got {_json_kind(value)}",
            number,
        )
    if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        return InputProblem(
            "INVALID_INPUT",
            f"line {number}: the input nests more than {MAX_DEPTH} levels of objects and "
            f"arrays (the limit is {MAX_DEPTH})",
            number,
        )
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


def encode_input(value: Any) -> bytes:
    """An input value as one line of JSON (no newline), to be read back by :func:`parse_line`.

    A value nested more than :data:`~pocketbatch.loader._source.MAX_DEPTH` levels is
    cut off one level below the limit: it still reads back as too deep, so it fails
    its own record instead of failing the whole submission. Integers beyond 64 bits
    stay exact (:func:`~pocketbatch.batch._jsonl.dumps_json`).

    Example:
        >>> encode_input({"a": [1, 2]})
        b'{"a":[1,2]}'
        >>> deep = {}
        >>> for _ in range(500):
        ...     deep = {"a": deep}
        >>> parse_line(1, encode_input(deep)).code
        'INVALID_INPUT'
    """
    if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        value = _clipped(value, MAX_DEPTH + 1)
    return dumps_json(value)


def _clipped(value: Any, levels: int) -> Any:
    """``value`` with the objects and arrays below ``levels`` levels emptied."""
    if isinstance(value, dict):
        return {k: _clipped(v, levels - 1) for k, v in value.items()} if levels > 1 else {}
    if isinstance(value, list):
        return [_clipped(v, levels - 1) for v in value] if levels > 1 else []
    return value


def with_line(result: FlowResult, number: int) -> FlowResult:
    """``result`` knowing the input's line number (:attr:`FlowResult.line`), so its
    record names it when it failed, whatever failed; an ``INVALID_INPUT`` message is
    also prefixed with it.

    Example:
        >>> with_line(FlowResult.failed("INVALID_INPUT", "'x' is required"), 7).error.message
        "line 7: 'x' is required"
        >>> with_line(FlowResult.failed("COMPONENT_FAILED", "boom"), 9).line
        9
    """
    if result.error is None or result.error.code != "INVALID_INPUT":
        return replace(result, line=number)
    error = replace(result.error, message=f"line {number}: {result.error.message}")
    return replace(result, error=error, line=number)


async def run_input(
    run: Callable[[int, Any], Awaitable[FlowResult]], index: int, item: Any
) -> FlowResult:
    """``run(index, item)`` for one batch input, knowing input lines.

    An :class:`InputProblem` fails with its code and message without running; a
    :class:`Line` runs its value, and an ``INVALID_INPUT`` failure names its line
    (:func:`with_line`); anything else runs as it is.

    Example:
        >>> import asyncio
        >>> async def run(index, value):
        ...     return FlowResult("success", value["a"])
        >>> asyncio.run(run_input(run, 0, Line(3, {"a": 1}))).result
        1
        >>> asyncio.run(run_input(run, 1, InputProblem("INVALID_JSON", "line 4: ..."))).outcome
        'failed'
    """
    if isinstance(item, Line):
        return with_line(await run(index, item.value), item.number)
    if isinstance(item, InputProblem):
        return FlowResult.failed(item.code, item.message, line=item.line)
    return await run(index, item)
