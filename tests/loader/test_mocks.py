"""Mock components: behaviours, JSON equality, failures."""

from __future__ import annotations

from typing import Any

import pytest

from pocketbatch._errors import ComponentError
from pocketbatch.loader._component import CallContext, Component, PluginFailure
from pocketbatch.loader._mocks import MockComponent

CTX = CallContext(step_id="step", flow_dir=None, variables={})


async def call(component: Component, value: Any) -> Any:
    return await component(value, CTX)


# --------------------------------------------------------------------------- mocks

MOCK = MockComponent(
    "/mock/error",
    [
        ({"mode": "error"}, "failed", {"code": 8, "message": "error", "data": {"why": "asked"}}),
        ({"mode": "succeed"}, "success", {"output": "succeeded"}),
        ({"mode": "succeed"}, "success", {"output": "shadowed"}),
        ({"mode": "default"}, "failed", {}),
        ({"flag": True}, "success", "bool"),
        ({"flag": 1}, "success", "int"),
    ],
)


@pytest.mark.asyncio
async def test_mock_success_returns_a_copy_of_the_first_match() -> None:
    """The first behaviour with an equal input wins; its result is copied."""
    result = await call(MOCK, {"mode": "succeed"})
    assert result == {"output": "succeeded"}
    result["output"] = "changed"
    assert await call(MOCK, {"mode": "succeed"}) == {"output": "succeeded"}


@pytest.mark.asyncio
async def test_mock_failure_passes_the_code_through() -> None:
    """outcome failed raises ComponentError with the error's code, message and data."""
    with pytest.raises(ComponentError) as info:
        await call(MOCK, {"mode": "error"})
    assert (info.value.code, info.value.message, info.value.data) == (8, "error", {"why": "asked"})


@pytest.mark.asyncio
async def test_mock_failure_defaults() -> None:
    """An error with no code or message fails with COMPONENT_FAILED and an empty message."""
    with pytest.raises(ComponentError) as info:
        await call(MOCK, {"mode": "default"})
    assert (info.value.code, info.value.message, info.value.data) == ("COMPONENT_FAILED", "", None)


@pytest.mark.asyncio
async def test_mock_without_a_matching_behavior() -> None:
    """No match is the plugin's failure (as in Stepflow), naming the path and the input as
    compact sorted JSON, as Stepflow prints it."""
    with pytest.raises(PluginFailure) as info:
        await call(MOCK, {"mode": "other", "a": [1, None]})
    assert info.value.detail == (
        'No behavior defined for /mock/error on {"a":[1,null],"mode":"other"}'
    )
    assert (info.value.component, info.value.context) == (
        "/mock/error",
        "error executing user-defined function",
    )


@pytest.mark.asyncio
async def test_mock_matching_is_json_equality() -> None:
    """true and 1 are different JSON values; 1 and 1.0 are the same; key order is irrelevant."""
    assert await call(MOCK, {"flag": True}) == "bool"
    assert await call(MOCK, {"flag": 1}) == "int"
    assert await call(MOCK, {"flag": 1.0}) == "int"
    mock = MockComponent("/m", [({"a": 1, "b": [1, 2]}, "success", "yes")])
    assert await call(mock, {"b": [1, 2], "a": 1}) == "yes"
    with pytest.raises(PluginFailure):
        await call(mock, {"a": 1, "b": [2, 1]})
    with pytest.raises(PluginFailure):
        await call(mock, {"a": "1", "b": [1, 2]})


def test_mock_rejects_bad_behaviors() -> None:
    """Unknown outcomes, non-mapping errors and non-triples are refused when built."""
    with pytest.raises(ValueError, match="outcome 'skipped'"):
        MockComponent("/m", [({}, "skipped", None)])
    with pytest.raises(TypeError, match="must be a mapping"):
        MockComponent("/m", [({}, "failed", "boom")])
    with pytest.raises(TypeError, match=r"must be \(input, outcome"):
        MockComponent("/m", [({}, "success")])  # type: ignore[list-item]
    assert repr(MOCK) == "MockComponent('/mock/error', 6 behaviors)"
