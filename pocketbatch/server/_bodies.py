"""Reading the bodies clients submit: JSON or JSONL, the flow text, the input lines.

Read by hand rather than by FastAPI's models so that a JSONL body is split and
numbered exactly as ``run-batch`` reads a file, integers of any size stay exact,
and every problem answers with its own message (``HTTPException``: 400 not JSON,
413 too large, 422 wrong shape). The parsing functions are synchronous: the
routes run them in worker threads, off the event loop.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from pocketbatch.batch._jsonl import loads_json
from pocketbatch.batch._lines import BOM, encode_input, input_lines
from pocketbatch.server._settings import Limits

__all__ = (
    "JSONL_TYPES",
    "body_bytes",
    "body_json",
    "flow_text",
    "json_submission",
    "jsonl_submission",
    "lines_of",
    "max_concurrent_of",
)

JSONL_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})


async def body_bytes(request: Request, limits: Limits) -> bytes:
    """The request body; 413 beyond ``limits.max_request_bytes``."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limits.max_request_bytes:
        raise HTTPException(413, f"request larger than {limits.max_request_bytes} bytes")
    raw = await request.body()
    if len(raw) > limits.max_request_bytes:
        raise HTTPException(413, f"request larger than {limits.max_request_bytes} bytes")
    return raw


async def body_json(request: Request, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object, parsed in a worker thread (a big body must not
    stall the event loop, and every other request, while it is read)."""
    return await run_in_threadpool(json_submission, await body_bytes(request, limits))


def jsonl_submission(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """A JSONL body: the first line holds the settings ({flow, max_concurrent}),
    each following line is one input (numbered from 1, as in the inputs file).
    The settings, and the input lines as bytes (read as run-batch reads a file)."""
    head, _, rest = raw.removeprefix(BOM).partition(b"\n")  # (a BOM opening the body)
    try:
        data = loads_json(head)
    except ValueError as exc:
        raise HTTPException(
            400, f"line 1 of the JSONL body must be the batch settings as JSON: {exc}"
        ) from None
    if not isinstance(data, dict) or "inputs" in data or "inputs_jsonl" in data:
        raise HTTPException(
            422, "line 1 of the JSONL body must be {flow, max_concurrent}; inputs follow"
        )
    return data, rest


def json_submission(raw: bytes) -> dict[str, Any]:
    """A JSON body: it must hold an object."""
    try:
        data = loads_json(raw)  # integers beyond 64 bits stay exact
    except ValueError as exc:
        raise HTTPException(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "the request body must be a JSON object")
    return data


def flow_text(data: dict[str, Any], limits: Limits) -> str:
    """The submitted flow's text: required, and at most ``limits.max_flow_bytes``."""
    text = data.get("flow")
    if not isinstance(text, str) or not text.strip():
        raise HTTPException(422, "'flow' is required: the flow file's text (YAML or JSON)")
    if len(text.encode()) > limits.max_flow_bytes:
        raise HTTPException(413, f"the flow is larger than {limits.max_flow_bytes} bytes")
    return text


def lines_of(data: dict[str, Any], jsonl: bytes | None, limits: Limits) -> list[tuple[int, bytes]]:
    """The inputs as (line number, JSON bytes): ``jsonl`` (a JSONL body's lines),
    ``inputs_jsonl`` or ``inputs``. Lines are split and numbered as run-batch does."""
    if "inputs" in data and "inputs_jsonl" in data:
        raise HTTPException(422, "give 'inputs' (a list) or 'inputs_jsonl' (text), not both")
    lines: list[tuple[int, bytes]] = []
    if jsonl is not None:
        lines = list(input_lines(jsonl))
    elif "inputs_jsonl" in data:
        text = data["inputs_jsonl"]
        if not isinstance(text, str):
            raise HTTPException(422, "'inputs_jsonl' must be a string of JSON lines")
        lines = list(input_lines(text.encode()))
    else:
        inputs = data.get("inputs")
        if not isinstance(inputs, list):
            raise HTTPException(422, "'inputs' is required: a list of inputs (or inputs_jsonl)")
        # (an input too deep to store whole is cut so that it fails its own record)
        lines = [(i + 1, encode_input(item)) for i, item in enumerate(inputs)]
    if len(lines) > limits.max_batch_items:
        raise HTTPException(422, f"{len(lines)} inputs; a batch may hold {limits.max_batch_items}")
    return lines


def max_concurrent_of(data: dict[str, Any], limits: Limits) -> int:
    """The batch's ``max_concurrent`` (16 when not given): a whole number from 1 to
    ``limits.max_concurrent``."""
    limit = data.get("max_concurrent", 16)
    top = limits.max_concurrent
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= top:
        raise HTTPException(422, f"'max_concurrent' must be a whole number from 1 to {top}")
    return limit
