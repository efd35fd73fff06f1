"""JSONL in and out for ``run-batch``: ``read_inputs``, ``count_inputs``, ``record``,
``JsonlWriter`` and ``resume_point`` (pocketbatch/batch/_jsonl.py).

The contract (DESIGN.md §3, issue 4): every non-blank input line is one input, and a
line that is not a JSON object becomes that input's failed record naming its line
number; output records are one JSON object per line; an interrupted output is a
prefix of the full one, maybe plus one torn line, which ``resume_point`` repairs.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pocketbatch.batch import InputProblem
from pocketbatch.batch._jsonl import (
    JsonlWriter,
    Line,
    ResumeError,
    count_inputs,
    read_inputs,
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


# -- read_inputs ---------------------------------------------------------------------------


MIXED = (
    '{"a": 1}\n'  # 1
    "\n"  # 2 blank
    "   \t \n"  # 3 blank (whitespace)
    "not json\n"  # 4
    "[1, 2]\n"  # 5
    '"text"\n'  # 6
    "null\n"  # 7
    '{"b": 2}\r\n'  # 8 (CRLF)
    '{"c": {"d": [1, "x", null]}}'  # 9, no final newline
)


def test_read_inputs_yields_one_item_per_non_blank_line_with_file_line_numbers(
    tmp_path: Path,
) -> None:
    items = list(read_inputs(write(tmp_path / "in.jsonl", MIXED)))
    assert len(items) == 7  # 9 lines, 2 blank
    assert items[0] == Line(1, {"a": 1})
    assert items[5] == Line(8, {"b": 2})
    assert items[6] == Line(9, {"c": {"d": [1, "x", None]}})
    problems = items[1:5]
    assert all(isinstance(p, InputProblem) for p in problems)


def test_read_inputs_not_json_is_invalid_json_naming_the_line(tmp_path: Path) -> None:
    items = list(read_inputs(write(tmp_path / "in.jsonl", MIXED)))
    problem = items[1]
    assert isinstance(problem, InputProblem)
    assert problem.code == "INVALID_JSON"
    assert problem.message.startswith("line 4:"), problem.message


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""], ids=["lf", "crlf", "last-line"])
def test_invalid_json_position_is_within_the_line_whatever_its_ending(
    tmp_path: Path, ending: bytes
) -> None:
    # The same message as the server gives for the same line of a request body.
    path = write(tmp_path / "in.jsonl", b'{"a": 1}\n{"n": 1,' + ending)
    problem = list(read_inputs(path))[1]
    assert isinstance(problem, InputProblem)
    assert problem.message == (
        "line 2: not valid JSON: unexpected end of data: line 1 column 9 (char 8)"
    )


@pytest.mark.parametrize(
    ("position", "line", "kind"),
    [(2, 5, "array"), (3, 6, "string"), (4, 7, "null")],
)
def test_read_inputs_non_object_is_invalid_input_naming_type_and_line(
    tmp_path: Path, position: int, line: int, kind: str
) -> None:
    items = list(read_inputs(write(tmp_path / "in.jsonl", MIXED)))
    problem = items[position]
    assert isinstance(problem, InputProblem)
    assert problem.code == "INVALID_INPUT"
    assert problem.message.startswith(f"line {line}:"), problem.message
    assert f"got {kind}" in problem.message


@pytest.mark.parametrize(
    ("text", "kinds"),
    [("3", ("number", "integer")), ("1.5", ("number",)), ("true", ("boolean",))],
)
def test_read_inputs_names_json_types_for_scalars(
    tmp_path: Path, text: str, kinds: tuple[str, ...]
) -> None:
    (problem,) = read_inputs(write(tmp_path / "in.jsonl", text + "\n"))
    assert isinstance(problem, InputProblem)
    assert problem.code == "INVALID_INPUT"
    assert any(f"got {kind}" in problem.message for kind in kinds), problem.message


def test_read_inputs_does_not_round_big_integers(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    (item,) = read_inputs(write(tmp_path / "in.jsonl", f'{{"n": {big}}}\n'))
    # Either the exact value, or a failed input: never a silently different number.
    assert isinstance(item, InputProblem) or item.value == {"n": big}
    if isinstance(item, Line):
        assert isinstance(item.value["n"], int)


def test_read_inputs_skip_passes_over_the_first_inputs_keeping_line_numbers(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "in.jsonl", MIXED)
    everything = list(read_inputs(path))
    for k in range(len(everything) + 2):
        assert list(read_inputs(path, skip=k)) == everything[k:]


def test_read_inputs_skip_does_not_parse_skipped_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", 'not json\n[1]\n{"ok": true}\n')
    assert list(read_inputs(path, skip=2)) == [Line(3, {"ok": True})]


def test_read_inputs_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"i": 0}\n{"i": 1}\n')
    reader = read_inputs(path)
    assert next(reader) == Line(1, {"i": 0})
    # The rest of the file can change under a lazy reader (it reads as it goes).
    with open(path, "ab") as f:
        f.write(b'{"i": 2}\n')
    assert [x.value for x in reader] == [{"i": 1}, {"i": 2}]  # type: ignore[union-attr]


def test_read_inputs_empty_file(tmp_path: Path) -> None:
    assert list(read_inputs(write(tmp_path / "in.jsonl", ""))) == []
    assert list(read_inputs(write(tmp_path / "blank.jsonl", "\n\n  \n"))) == []


def test_read_inputs_utf8(tmp_path: Path) -> None:
    (item,) = read_inputs(write(tmp_path / "in.jsonl", '{"name": "Zoë ✓ 日本"}\n'))
    assert item == Line(1, {"name": "Zoë ✓ 日本"})


# -- one definition of a JSONL line (issue 10) -----------------------------------------------

RAW_LINES = (
    b'{"a": 1}\r\n'  # 1: CRLF, its \r dropped
    b'{"b": 2}\r{"c": 3}\n'  # 2: a bare \r is inside the line (so: not one object)
    b"\r\n"  # 3: blank
    b'{"d": "\xff"}\n'  # 4: invalid UTF-8
    b" \t\n"  # 5: blank
    b'{"e": 5}'  # 6: no final newline
)


def test_input_lines_split_on_newline_only_keeping_the_bytes() -> None:
    from pocketbatch.batch._jsonl import input_lines

    assert list(input_lines(RAW_LINES)) == [
        (1, b'{"a": 1}'),
        (2, b'{"b": 2}\r{"c": 3}'),
        (4, b'{"d": "\xff"}'),
        (6, b'{"e": 5}'),
    ]


def test_a_file_and_the_same_bytes_give_the_same_inputs(tmp_path: Path) -> None:
    """run-batch reads a file, the server a request body: the same lines, the same items."""
    from pocketbatch.batch._jsonl import input_lines, parse_line

    from_file = list(read_inputs(write(tmp_path / "in.jsonl", RAW_LINES)))
    from_bytes = [parse_line(number, raw) for number, raw in input_lines(RAW_LINES)]
    assert from_file == from_bytes
    assert count_inputs(tmp_path / "in.jsonl") == 4
    assert [type(x).__name__ for x in from_file] == ["Line", "InputProblem", "InputProblem", "Line"]
    bad_utf8 = from_file[2]
    assert isinstance(bad_utf8, InputProblem)
    assert bad_utf8.code == "INVALID_JSON"
    assert bad_utf8.message.startswith("line 4: not valid JSON: str is not valid UTF-8")


def test_a_huge_number_deep_inside_a_line_fails_that_line_only(tmp_path: Path) -> None:
    """Keeping big integers exact must not crash on nesting orjson accepts (RecursionError)."""
    deep = b'{"d": ' + b"[" * 1000 + b"1e30" + b"]" * 1000 + b"}"
    items = list(read_inputs(write(tmp_path / "in.jsonl", deep + b'\n{"n": 1}\n')))
    assert isinstance(items[0], InputProblem)
    assert items[0].code == "INVALID_JSON"
    assert items[0].message.startswith("line 1: not valid JSON: nested too deeply")
    assert items[1] == Line(2, {"n": 1})


def test_loads_json_keeps_integers_beyond_64_bits_exact() -> None:
    from pocketbatch.batch._jsonl import loads_json

    big = 2**200 + 1
    text = f'{{"a": [{big}, {-big}, 18446744073709551615, 1.5, 1e300]}}'
    assert loads_json(text.encode()) == {"a": [big, -big, 2**64 - 1, 1.5, 1e300]}


def test_count_inputs_counts_non_blank_lines(tmp_path: Path) -> None:
    assert count_inputs(write(tmp_path / "in.jsonl", MIXED)) == 7
    assert count_inputs(write(tmp_path / "e.jsonl", "")) == 0
    assert count_inputs(write(tmp_path / "b.jsonl", "\n \n")) == 0
    assert count_inputs(write(tmp_path / "n.jsonl", "{}\n{}")) == 2


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
