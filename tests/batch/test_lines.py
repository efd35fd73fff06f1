"""Input lines (pocketbatch/batch/_lines.py): ``read_inputs``, ``input_lines``,
``parse_line`` and ``count_inputs`` (moved from tests/batch/test_jsonl.py).

The contract (DESIGN.md §3, issue 4): every non-blank input line is one input, and a
line that is not a JSON object becomes that input's failed record naming its line
number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pocketbatch.batch import InputProblem
from pocketbatch.batch._lines import Line, count_inputs, read_inputs


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


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
    from pocketbatch.batch._lines import input_lines

    assert list(input_lines(RAW_LINES)) == [
        (1, b'{"a": 1}'),
        (2, b'{"b": 2}\r{"c": 3}'),
        (4, b'{"d": "\xff"}'),
        (6, b'{"e": 5}'),
    ]


def test_a_file_and_the_same_bytes_give_the_same_inputs(tmp_path: Path) -> None:
    """run-batch reads a file, the server a request body: the same lines, the same items."""
    from pocketbatch.batch._lines import input_lines, parse_line

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


def test_count_inputs_counts_non_blank_lines(tmp_path: Path) -> None:
    assert count_inputs(write(tmp_path / "in.jsonl", MIXED)) == 7
    assert count_inputs(write(tmp_path / "e.jsonl", "")) == 0
    assert count_inputs(write(tmp_path / "b.jsonl", "\n \n")) == 0
    assert count_inputs(write(tmp_path / "n.jsonl", "{}\n{}")) == 2


# -- issue 14: every failed record names its line; a BOM is accepted ------------------------


def test_a_bom_opening_the_inputs_is_dropped_only_there() -> None:
    from pocketbatch.batch._lines import input_lines

    bom = b"\xef\xbb\xbf"
    assert list(input_lines(bom + b'{"a": 1}\n' + bom + b'{"b": 2}\n')) == [
        (1, b'{"a": 1}'),
        (2, bom + b'{"b": 2}'),  # not at the start: part of the line (and bad JSON)
    ]
    assert list(input_lines(bom + b"\n{}\n")) == [(2, b"{}")]  # a BOM alone is blank


def test_a_bom_opening_an_inputs_file_is_accepted(tmp_path: Path) -> None:
    from pocketbatch.batch._lines import Line, count_inputs, read_inputs

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n{"a": 2}\r\n')
    assert list(read_inputs(path)) == [Line(1, {"a": 1}), Line(2, {"a": 2})]
    assert count_inputs(path) == 2


@pytest.mark.asyncio
async def test_run_input_puts_the_line_on_every_result() -> None:
    from pocketbatch import FlowResult
    from pocketbatch.batch._lines import InputProblem, Line, run_input

    async def run(index: int, value: Any) -> FlowResult:
        if value.get("boom"):
            return FlowResult.failed("COMPONENT_FAILED", "boom")
        return FlowResult("success", value)

    failed = await run_input(run, 3, Line(7, {"boom": True}))
    assert (failed.line, failed.error and failed.error.message) == (7, "boom")
    ok = await run_input(run, 4, Line(9, {}))
    assert ok.ok
    assert ok.line == 9
    problem = await run_input(run, 5, InputProblem("INVALID_JSON", "line 11: bad", 11))
    assert problem.line == 11
