"""JSONL in and out for ``run-batch``: ``loads_json``, ``record``, ``JsonlWriter`` and
``resume_point`` (pocketbatch/batch/_jsonl.py; input lines are tests/batch/test_lines.py).

The contract (DESIGN.md §3, issue 4): output records are one JSON object per line; an
interrupted output is a prefix of the full one, maybe plus one torn line, which
``resume_point`` repairs.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pocketbatch.batch._jsonl import (
    JsonlWriter,
    ResumeError,
    dumps_json,
    encode_record,
    record,
    resume_point,
)
from pocketbatch.loader import FlowError, FlowResult


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def ok(i: int, result: Any = None) -> bytes:
    return json.dumps({"index": i, "outcome": "success", "result": result}).encode() + b"\n"


# -- loads_json ---------------------------------------------------------------------------


def test_loads_json_keeps_integers_beyond_64_bits_exact() -> None:
    from pocketbatch.batch._jsonl import loads_json

    big = 2**200 + 1
    text = f'{{"a": [{big}, {-big}, 18446744073709551615, 1.5, 1e300]}}'
    assert loads_json(text.encode()) == {"a": [big, -big, 2**64 - 1, 1.5, 1e300]}


# -- record and JsonlWriter -----------------------------------------------------------------


def test_record_success_and_failure() -> None:
    assert record(0, FlowResult("success", {"x": [1]})) == {
        "index": 0,
        "outcome": "success",
        "result": {"x": [1]},
    }
    failed = FlowResult("failed", error=FlowError("COMPONENT_FAILED", "boom"))
    assert record(7, failed) == {
        "index": 7,
        "outcome": "failed",
        "error": {"code": "COMPONENT_FAILED", "message": "boom"},
    }
    assert record(2, FlowResult("success", None)) == {
        "index": 2,
        "outcome": "success",
        "result": None,
    }


def test_writer_writes_one_line_per_record_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    records = [record(i, FlowResult("success", {"i": i, "s": "a\nb"})) for i in range(5)]
    with JsonlWriter(out) as writer:
        for r in records:
            writer.write(r)
        assert writer.written == 5
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    assert [json.loads(line) for line in lines[:-1]] == records


def test_writer_each_record_reaches_the_file_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = JsonlWriter(out)
    try:
        writer.write(record(0, FlowResult("success", 1)))
        # Not closed yet: the line must already be in the file (a kill loses nothing).
        assert out.read_bytes() == b'{"index":0,"outcome":"success","result":1}\n'
    finally:
        writer.close()


def test_writer_overwrites_unless_appending(tmp_path: Path) -> None:
    out = write(tmp_path / "out.jsonl", ok(0))
    with JsonlWriter(out, append=True) as writer:
        writer.write(record(1, FlowResult("success", None)))
    assert [json.loads(x)["index"] for x in out.read_text().splitlines()] == [0, 1]
    with JsonlWriter(out) as writer:
        writer.write(record(0, FlowResult("success", None)))
    assert [json.loads(x)["index"] for x in out.read_text().splitlines()] == [0]


def test_writer_to_a_stream_does_not_close_it() -> None:
    stream = io.BytesIO()
    writer = JsonlWriter(stream)
    writer.write({"index": 0, "outcome": "success", "result": "é"})
    writer.close()
    assert not stream.closed
    assert json.loads(stream.getvalue()) == {"index": 0, "outcome": "success", "result": "é"}


@pytest.mark.parametrize("bad", [object(), {1, 2}, b"raw bytes"])
def test_writer_non_json_result_becomes_invalid_output_keeping_the_index(bad: Any) -> None:
    stream = io.BytesIO()
    writer = JsonlWriter(stream)
    writer.write(record(3, FlowResult("success", {"value": bad})))
    writer.write(record(4, FlowResult("success", "fine")))
    first, second = (json.loads(x) for x in stream.getvalue().splitlines())
    assert first["index"] == 3
    assert first["outcome"] == "failed"
    assert first["error"]["code"] == "INVALID_OUTPUT"
    assert second == {"index": 4, "outcome": "success", "result": "fine"}
    assert writer.written == 2


def test_writer_keeps_integers_beyond_64_bits_exact() -> None:
    """An integer too big for orjson is written exactly (by the standard library)."""
    stream = io.BytesIO()
    JsonlWriter(stream).write(record(0, FlowResult("success", {"value": 2**70})))
    assert json.loads(stream.getvalue()) == {
        "index": 0,
        "outcome": "success",
        "result": {"value": 2**70},
    }


def test_writer_big_integer_record_has_the_layout_of_every_other_record() -> None:
    """One encoding: a record holding a big integer is laid out as orjson lays out the rest."""
    stream = io.BytesIO()
    result = {"value": 2**70, "list": [-(2**64), 1e16, "é", None], "small": 3}
    JsonlWriter(stream).write(record(0, FlowResult("success", result)))
    assert stream.getvalue() == (
        b'{"index":0,"outcome":"success","result":{"value":1180591620717411303424,'
        b'"list":[-18446744073709551616,1e+16,"\xc3\xa9",null],"small":3}}\n'
    )


@pytest.mark.parametrize("depth", [300, 1000, 5000])
def test_writer_result_nested_too_deep_fails_its_record_not_the_batch(depth: int) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    stream = io.BytesIO()
    writer = JsonlWriter(stream)
    writer.write(record(0, FlowResult("success", value)))
    writer.write(record(1, FlowResult("success", "fine")))
    first, second = (json.loads(x) for x in stream.getvalue().splitlines())
    if first["outcome"] == "failed":  # beyond what the standard library writes
        assert first["error"]["code"] == "INVALID_OUTPUT"
        assert "too deeply" in first["error"]["message"]
        assert writer.failed_outputs == 1
    else:
        assert depth < 1000
        assert stream.getvalue().startswith(b'{"index":0,"outcome":"success","result":[[[')
    assert first["index"] == 0
    assert second == {"index": 1, "outcome": "success", "result": "fine"}


def test_encode_record_of_a_flow_result_without_index() -> None:
    """POST /runs encodes a bare FlowResult the same way: no index appears."""
    from pocketbatch.batch._jsonl import encode_record

    line, failed = encode_record(FlowResult("success", {"s": {1, 2}}).to_dict())
    assert failed
    assert json.loads(line) == {
        "outcome": "failed",
        "error": {
            "code": "INVALID_OUTPUT",
            "message": "the result is not JSON: Type is not JSON serializable: set",
        },
    }
    assert encode_record({"outcome": "success", "result": 2**64}) == (
        b'{"outcome":"success","result":18446744073709551616}',
        False,
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_writer_nan_result_is_invalid_output(bad: float) -> None:
    stream = io.BytesIO()
    JsonlWriter(stream).write(record(0, FlowResult("success", {"x": bad})))
    written = json.loads(stream.getvalue())
    assert written["index"] == 0
    assert written["outcome"] == "failed"
    assert written["error"]["code"] == "INVALID_OUTPUT"


# -- resume_point ---------------------------------------------------------------------------


def test_resume_point_missing_file_is_zero(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert resume_point(out) == 0
    assert not out.exists()


def test_resume_point_empty_file_is_zero(tmp_path: Path) -> None:
    assert resume_point(write(tmp_path / "out.jsonl", b"")) == 0


def test_resume_point_complete_file_is_left_alone(tmp_path: Path) -> None:
    failed = (
        json.dumps({"index": 2, "outcome": "failed", "error": {"code": "X", "message": "m"}}) + "\n"
    ).encode()
    content = ok(0, {"a": 1}) + ok(1) + failed + ok(3, "x")
    out = write(tmp_path / "out.jsonl", content)
    assert resume_point(out) == 4
    assert out.read_bytes() == content


@pytest.mark.parametrize(
    "torn",
    [
        b'{"index":3,"outc',  # cut mid-record
        b"{",
        b'{"index": 3, "outcome": "success", "result": 1}',  # whole JSON, but no newline
        b"garbage\n",  # a broken *last* line, even with its newline
        b"\n",  # an empty last line
    ],
)
def test_resume_point_repairs_a_torn_last_line(tmp_path: Path, torn: bytes) -> None:
    good = ok(0) + ok(1) + ok(2)
    out = write(tmp_path / "out.jsonl", good + torn)
    assert resume_point(out) == 3
    assert out.read_bytes() == good  # truncated back to the last complete record
    assert resume_point(out) == 3  # and repairing is idempotent


def test_resume_point_only_a_torn_line(tmp_path: Path) -> None:
    out = write(tmp_path / "out.jsonl", b'{"index":0,"outcome":"suc')
    assert resume_point(out) == 0
    assert out.read_bytes() == b""


@pytest.mark.parametrize(
    "content",
    [
        ok(0) + ok(2) + ok(3),  # a gap
        ok(1) + ok(2),  # does not start at 0
        ok(0) + ok(1) + ok(1),  # a duplicate
        ok(0) + ok(2) + ok(1),  # out of order
        ok(0) + b"[1, 2]\n" + ok(2),  # JSON, but not a record
        ok(0) + b'{"outcome": "success"}\n',  # no index
    ],
)
def test_resume_point_refuses_a_file_out_of_order(tmp_path: Path, content: bytes) -> None:
    out = write(tmp_path / "out.jsonl", content)
    with pytest.raises(ResumeError):
        resume_point(out)
    assert out.read_bytes() == content  # left untouched


@pytest.mark.parametrize(
    "content",
    [
        ok(0) + b"garbage\n" + ok(2),
        ok(0) + b'{"index":1,"outc\n' + ok(2),
        b"not json at all\n" + ok(0),
    ],
)
def test_resume_point_refuses_garbage_in_the_middle(tmp_path: Path, content: bytes) -> None:
    out = write(tmp_path / "out.jsonl", content)
    with pytest.raises(ResumeError, match="line"):
        resume_point(out)
    assert out.read_bytes() == content


def test_resume_point_large_file(tmp_path: Path) -> None:
    out = write(tmp_path / "out.jsonl", b"".join(ok(i, {"i": i}) for i in range(5000)) + b'{"ind')
    assert resume_point(out) == 5000
    assert out.read_bytes().endswith(ok(4999, {"i": 4999}))


# -- issue 14: one layout for every record, whatever it holds --------------------------------

_SMALL = 1234567  # stands in for a big integer in the layout orjson gives


def _with(value: Any, number: int) -> Any:
    if isinstance(value, dict):
        return {k: _with(v, number) for k, v in value.items()}
    if isinstance(value, list):
        return [_with(v, number) for v in value]
    return number if value == "BIG" else value


@pytest.mark.parametrize(
    "shape",
    [
        {"n": "BIG"},
        {"n": "BIG", "f": [1e-7, 1e16, 2.5, -0.0, 1e300], "s": 'é\u2028\n"', "z": None},
        {"n": "BIG", "f": 1e-7, "nested": {"k": [True, False, {}, []]}},
        ["BIG", 1e-5, "x"],
    ],
)
@pytest.mark.parametrize("big", [2**64, 2**70, -(2**63) - 1, 10**40])
def test_a_big_integer_record_is_laid_out_byte_for_byte_like_every_other(
    shape: Any, big: int
) -> None:
    """Issue 14: a result holding an integer beyond 64 bits was written by the standard
    library when orjson gave up (``1e-07``, not orjson's ``1e-7``): now the record is
    exactly the one orjson writes for a small integer, with the big one in its place."""
    stream = io.BytesIO()
    JsonlWriter(stream).write(record(0, FlowResult("success", _with(shape, big))))
    import orjson

    expected = orjson.dumps(record(0, FlowResult("success", _with(shape, _SMALL))))
    assert stream.getvalue() == expected.replace(str(_SMALL).encode(), str(big).encode()) + b"\n"


def test_non_string_keys_and_big_integers_keep_orjsons_layout() -> None:
    """Keys that are not strings made the standard library write the whole record."""
    import orjson

    value = {1: 2**70, "f": 1e-7, "deep": {2.5: [1e-7]}, None: True}
    line, failed = encode_record(record(0, FlowResult("success", value)))
    assert not failed
    assert line == (
        b'{"index":0,"outcome":"success","result":'
        b'{"1":1180591620717411303424,"f":1e-7,"deep":{"2.5":[1e-7]},"null":true}}'
    )
    small = {1: 5, "f": 1e-7, "deep": {2.5: [1e-7]}, None: True}
    assert orjson.dumps(small, option=orjson.OPT_NON_STR_KEYS) == (
        b'{"1":5,"f":1e-7,"deep":{"2.5":[1e-7]},"null":true}'
    )


def test_a_big_integer_deeper_than_orjson_goes_is_still_orjsons_layout() -> None:
    value: Any = [2**70, 1e-7]
    for _ in range(300):
        value = [value]
    line = dumps_json(value)
    assert line == b"[" * 300 + b"[1180591620717411303424,1e-7]" + b"]" * 300
