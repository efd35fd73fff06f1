"""Deeply nested inputs and results fail their own record; the batch goes on.

orjson refuses JSON nested beyond 1024 levels (``INVALID_JSON``); an input nested
beyond the reader's ``MAX_DEPTH`` is ``INVALID_INPUT``; a result too deep to write
is ``INVALID_OUTPUT``. None of them may stop ``run-batch`` with a RecursionError.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from _support import records, run_cli

from pocketbatch.batch._jsonl import JsonlWriter, encode_record
from pocketbatch.batch._lines import InputProblem, Line, encode_input, parse_line
from pocketbatch.loader._source import MAX_DEPTH, nesting_depth


def deep_json(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def deep_list(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_run_batch_gives_every_deep_line_its_own_record(tmp_path: Path) -> None:
    """Lines 100..1100 levels deep, between good ones, with a flow that echoes its
    input and one whose recursive input schema would otherwise recurse without end."""
    levels = [1, MAX_DEPTH - 1, MAX_DEPTH, 300, 900, 1023, 1100, 2]
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join('{"x":' + deep_json(n) + "}\n" for n in levels))
    echo = tmp_path / "echo.yaml"
    echo.write_text('output: {$input: "$"}\n')
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "input_schema:\n"
        '  $defs: {n: {anyOf: [{type: integer}, {additionalProperties: {$ref: "#/$defs/n"}}]}}\n'
        '  $ref: "#/$defs/n"\n'
        "output: 1\n"
    )
    for flow in (echo, schema):
        out = tmp_path / f"{flow.stem}.jsonl"
        ran = run_cli(
            "run-batch", "--flow", flow, "--inputs", inputs, "--output", out, "--no-progress"
        )
        assert ran.returncode == 1, ran.stderr
        assert "Traceback" not in ran.stderr
        got = records(out)
        assert [r["index"] for r in got] == list(range(len(levels)))
        outcomes = [r["outcome"] for r in got]
        # {"x": <n levels>} nests n + 1 levels
        assert outcomes == ["success", "success"] + ["failed"] * 5 + ["success"]
        codes = [r["error"]["code"] for r in got if r["outcome"] == "failed"]
        assert codes == ["INVALID_INPUT"] * 4 + ["INVALID_JSON"]
        assert got[2]["error"]["message"] == (
            f"line 3: the input nests more than {MAX_DEPTH} levels of objects and arrays "
            f"(the limit is {MAX_DEPTH})"
        )
        assert "depth limit exceeded" in got[6]["error"]["message"]


def test_parse_line_checks_depth_before_looking_inside() -> None:
    assert isinstance(parse_line(1, b'{"x":' + deep_json(MAX_DEPTH - 1).encode() + b"}"), Line)
    problem = parse_line(7, b'{"x":' + deep_json(1000).encode() + b"}")
    assert isinstance(problem, InputProblem)
    assert problem.code == "INVALID_INPUT"
    assert problem.message.startswith("line 7: the input nests more than")


def test_a_result_too_deep_to_write_fails_its_record() -> None:
    """orjson stops at 255 levels, the standard library near the recursion limit:
    past both, the record becomes INVALID_OUTPUT and the line is still written."""
    out = io.BytesIO()
    writer = JsonlWriter(out)
    writer.write({"index": 0, "outcome": "success", "result": deep_list(300)})
    writer.write({"index": 1, "outcome": "success", "result": deep_list(50_000)})
    writer.write({"index": 2, "outcome": "success", "result": 2})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert nesting_depth(lines[0]["result"], 1000) == 300
    assert lines[1] == {
        "index": 1,
        "outcome": "failed",
        "error": {
            "code": "INVALID_OUTPUT",
            "message": "the result nests too deeply to write as JSON",
        },
    }
    assert lines[2]["result"] == 2
    assert writer.failed_outputs == 1


def test_encode_record_says_when_it_replaced_the_record() -> None:
    assert encode_record({"index": 0, "outcome": "success", "result": 1})[1] is False
    line, replaced = encode_record({"index": 0, "outcome": "success", "result": deep_list(5000)})
    assert replaced
    assert json.loads(line)["error"]["code"] == "INVALID_OUTPUT"


def test_encode_input_keeps_a_too_deep_value_too_deep() -> None:
    """A value orjson cannot write (1000 levels) is cut one level below the limit, so
    it reads back as an input that fails its own record."""
    raw = encode_input({"x": deep_list(1000)})
    assert nesting_depth(json.loads(raw), 10_000) == MAX_DEPTH + 1
    problem = parse_line(3, raw)
    assert isinstance(problem, InputProblem)
    assert problem.code == "INVALID_INPUT"
    assert encode_input({"x": deep_list(5)}) == b'{"x":[[[[[1]]]]]}'
