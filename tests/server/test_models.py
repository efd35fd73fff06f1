"""pocketbatch.server._models: the API bodies as models, and the schema made from them."""

from __future__ import annotations

import pytest

pytest.importorskip("pydantic")

from pocketbatch.server._models import (
    BatchSubmission,
    BatchView,
    StorageProblemView,
    inline_schema,
    request_body,
)


def test_a_batch_view_serializes_in_the_api_order() -> None:
    view = BatchView(
        batch_id="b",
        name=None,
        status="running",
        total=2,
        done=1,
        succeeded=1,
        failed=0,
        pending=1,
        max_concurrent=4,
        created=1.5,
        finished=None,
        running=1,
        storage_error=StorageProblemView(message="full", retries=2, since=3.0),
    )
    dumped = view.model_dump()
    assert list(dumped)[-2:] == ["running", "storage_error"]
    assert dumped["storage_error"] == {"message": "full", "retries": 2, "since": 3.0}


def test_inline_schemas_hold_no_refs() -> None:
    assert "$ref" not in repr(inline_schema(BatchView))
    body = request_body(BatchSubmission)
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["flow"]
    assert schema["properties"]["max_concurrent"]["minimum"] == 1
