"""pocketbatch.server._bodies: reading submitted bodies, each problem with its status
and message (the routes' behaviour over HTTP is in test_asgi.py and test_api.py)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi import HTTPException

from pocketbatch.server._bodies import (
    flow_text,
    json_submission,
    jsonl_submission,
    lines_of,
    max_concurrent_of,
)
from pocketbatch.server._settings import Limits

LIMITS = Limits(max_flow_bytes=10, max_batch_items=2, max_concurrent=8)


def _refused(call: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(HTTPException) as caught:
        call(*args)
    return caught.value.status_code, str(caught.value.detail)


def test_a_jsonl_body_is_settings_then_input_lines() -> None:
    data, rest = jsonl_submission(b'{"flow": "f"}\n{"a": 1}\n{"a": 2}\n')
    assert data == {"flow": "f"}
    assert lines_of(data, rest, LIMITS) == [(1, b'{"a": 1}'), (2, b'{"a": 2}')]


def test_a_jsonl_body_may_not_carry_inputs_on_its_first_line() -> None:
    status, message = _refused(jsonl_submission, b'{"flow": "f", "inputs": []}\n')
    assert status == 422
    assert "inputs follow" in message
    assert _refused(jsonl_submission, b"nope\n")[0] == 400


def test_a_json_body_must_be_an_object() -> None:
    assert json_submission(b'{"n": 18446744073709551617}') == {"n": 18446744073709551617}
    assert _refused(json_submission, b"[1]") == (422, "the request body must be a JSON object")
    assert _refused(json_submission, b"{")[0] == 400


def test_the_flow_is_required_and_limited() -> None:
    assert flow_text({"flow": "output: 1"}, LIMITS) == "output: 1"
    assert _refused(flow_text, {}, LIMITS)[0] == 422
    assert _refused(flow_text, {"flow": "x" * 11}, LIMITS) == (
        413,
        "the flow is larger than 10 bytes",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inputs": [], "inputs_jsonl": ""}, "not both"),
        ({"inputs_jsonl": 3}, "must be a string"),
        ({}, "'inputs' is required"),
        ({"inputs": [1, 2, 3]}, "3 inputs; a batch may hold 2"),
    ],
)
def test_bad_inputs_are_a_422(data: dict[str, Any], message: str) -> None:
    status, detail = _refused(lines_of, data, None, LIMITS)
    assert status == 422
    assert message in detail


@pytest.mark.parametrize("value", [0, 9, True, 1.5, "2"])
def test_max_concurrent_is_a_whole_number_in_range(value: Any) -> None:
    assert max_concurrent_of({}, Limits()) == 16
    assert max_concurrent_of({"max_concurrent": 8}, LIMITS) == 8
    assert _refused(max_concurrent_of, {"max_concurrent": value}, LIMITS)[0] == 422
