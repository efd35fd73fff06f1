"""``/builtin/openai``'s chat-completions options and structured output, against the
fake provider (``benchmarks/fake_provider.py``) served on 127.0.0.1 from a thread.

The provider answers deterministically from the last user message (reversed), builds
JSON matching a ``json_schema``, calls a tool when the prompt says ``call <name>``,
and answers ``[bad-json]``/``[not-json]`` prompts with output that does not fit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from _builtin_support import fails, make_ctx
from _fake_llm import fake_provider

from pocketbatch.loader._builtin_http import OpenAIChat
from pocketbatch.loader._openai_shape import _validator

ProviderConfig = fake_provider.ProviderConfig
RunningProvider = fake_provider.RunningProvider
running_provider = fake_provider.running_provider


@pytest.fixture(scope="module")
def provider() -> Iterator[RunningProvider]:
    with running_provider(ProviderConfig(latency=0.0, record_bodies=True)) as running:
        yield running


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch, provider: RunningProvider) -> None:
    """No proxy, no OpenAI settings from the environment; the base URL is the provider's."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", provider.base_url)
    provider.bodies.clear()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


async def call(input: dict[str, Any]) -> Any:
    return await OpenAIChat()(input, make_ctx())


SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "score": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "score"],
    "additionalProperties": False,
}

ALL_OPTIONS: dict[str, Any] = {
    "max_tokens": 50,
    "max_completion_tokens": 60,
    "temperature": 0.5,
    "top_p": 0.9,
    "stop": ["\n\n", "END"],
    "seed": 7,
    "n": 1,
    "presence_penalty": 0.1,
    "frequency_penalty": -0.2,
    "logit_bias": {"50256": -100},
    "user": "user-42",
    "parallel_tool_calls": False,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "response_format": {"type": "json_object"},
}


@pytest.mark.asyncio
async def test_every_option_is_sent_as_given(provider: RunningProvider) -> None:
    await call({"messages": user("hi"), "model": "m", **ALL_OPTIONS})
    (body,) = provider.bodies
    assert body == {"model": "m", "messages": user("hi"), **ALL_OPTIONS}


@pytest.mark.asyncio
async def test_without_options_only_model_and_messages_are_sent_and_the_shape_is_unchanged(
    provider: RunningProvider,
) -> None:
    out = await call({"messages": user("hello"), "top_p": None, "tools": None})
    (body,) = provider.bodies
    assert body == {"model": "gpt-4o-mini", "messages": user("hello")}
    assert set(out) == {"response", "model", "usage"}
    assert out["response"] == "olleh"
    assert out["usage"]["total_tokens"] > 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"top_p": "1"}, "'top_p' must be a number, got str"),
        ({"seed": 1.5}, "'seed' must be an integer, got float"),
        ({"n": 0}, "'n' must be >= 1, got 0"),
        ({"n": True}, "'n' must be an integer, got bool"),
        ({"max_completion_tokens": "9"}, "'max_completion_tokens' must be an integer, got str"),
        ({"presence_penalty": [1]}, "'presence_penalty' must be a number, got list"),
        ({"frequency_penalty": "x"}, "'frequency_penalty' must be a number, got str"),
        ({"user": 5}, "'user' must be a string, got int"),
        ({"parallel_tool_calls": 1}, "'parallel_tool_calls' must be a boolean, got int"),
        ({"stop": ["a", 1]}, "'stop' must be a string or a list of strings, got list"),
        ({"stop": 3}, "'stop' must be a string or a list of strings, got int"),
        ({"logit_bias": []}, "'logit_bias' must be an object, got list"),
        ({"logit_bias": {"1": "x"}}, "'logit_bias['1']' must be a number, got str"),
        ({"tools": {}}, "'tools' must be a list, got dict"),
        ({"tools": ["f"]}, "'tools[0]' must be an object, got str"),
        ({"tool_choice": 1}, "'tool_choice' must be a string or an object, got int"),
        ({"response_format": "json"}, "'response_format' must be an object, got str"),
        (
            {"response_format": {"type": "yaml"}},
            "'response_format.type' must be one of text, json_object, json_schema, got 'yaml'",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "'response_format.json_schema' must be an object, got null",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "'response_format.json_schema.schema' must be an object, got null",
        ),
    ],
)
async def test_a_bad_option_fails_naming_the_field_and_sends_nothing(
    provider: RunningProvider, option: dict[str, Any], message: str
) -> None:
    err = await fails(OpenAIChat(), {"messages": user("hi"), **option})
    assert (err.code, err.message) == ("INVALID_INPUT", f"/builtin/openai: {message}")
    assert provider.bodies == []


@pytest.mark.asyncio
async def test_an_invalid_schema_fails_before_sending(provider: RunningProvider) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
    err = await fails(OpenAIChat(), {"messages": user("hi"), "response_format": bad})
    assert err.code == "INVALID_INPUT"
    assert err.message.startswith(
        "/builtin/openai: 'response_format.json_schema.schema' is not a valid JSON Schema: "
    )
    assert provider.bodies == []


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


@pytest.mark.asyncio
async def test_json_schema_output_is_parsed_and_checked() -> None:
    out = await call({"messages": user("abcd"), "response_format": json_schema(SCHEMA)})
    assert out["parsed"] == {"title": "dcba", "score": 4, "tags": ["dcba"]}
    assert json.loads(out["response"]) == out["parsed"]
    assert set(out) == {"response", "model", "usage", "parsed"}


@pytest.mark.asyncio
async def test_output_not_matching_the_schema_fails_with_its_json_path() -> None:
    schema = {
        "type": "object",
        "properties": {"unexpected": {"type": "array", "items": {"maximum": 1}}},
    }
    err = await fails(
        OpenAIChat(), {"messages": user("[bad-json]"), "response_format": json_schema(schema)}
    )
    assert err.code == "INVALID_OUTPUT"
    assert err.message == (
        "/builtin/openai: choices[0].message does not match response_format's schema "
        "at $.unexpected[1]: 2 is greater than the maximum of 1"
    )
    assert err.data == {"content": '{"unexpected": [1, 2]}'}


@pytest.mark.asyncio
async def test_output_missing_a_required_property_fails() -> None:
    err = await fails(
        OpenAIChat(), {"messages": user("[bad-json]"), "response_format": json_schema(SCHEMA)}
    )
    assert err.code == "INVALID_OUTPUT"
    assert "does not match response_format's schema at $: " in err.message


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
async def test_output_that_is_not_json_fails(kind: str) -> None:
    fmt = {"type": kind} if kind == "json_object" else json_schema(SCHEMA)
    err = await fails(OpenAIChat(), {"messages": user("[not-json] x"), "response_format": fmt})
    assert err.code == "INVALID_OUTPUT"
    assert err.message.startswith(
        f"/builtin/openai: choices[0].message is not JSON ({kind} output was asked for): "
    )


@pytest.mark.asyncio
async def test_json_object_output_is_parsed() -> None:
    out = await call({"messages": user("abc"), "response_format": {"type": "json_object"}})
    assert out["parsed"] == {"answer": "cba"}


@pytest.mark.asyncio
async def test_text_format_adds_nothing() -> None:
    out = await call({"messages": user("abc"), "response_format": {"type": "text"}})
    assert out == {"response": "cba", "model": "gpt-4o-mini", "usage": out["usage"]}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.asyncio
async def test_a_tool_call_is_returned_with_parsed_arguments() -> None:
    out = await call({"messages": user("call get_weather"), "tools": [WEATHER]})
    assert out["response"] is None
    assert out["tool_calls"] == [
        {
            "id": out["tool_calls"][0]["id"],
            "name": "get_weather",
            "arguments": {"city": "rehtaew_teg llac"},
        }
    ]


@pytest.mark.asyncio
async def test_with_tools_but_no_call_tool_calls_is_empty() -> None:
    out = await call({"messages": user("just talk"), "tools": [WEATHER]})
    assert (out["response"], out["tool_calls"]) == ("klat tsuj", [])


@pytest.mark.asyncio
async def test_n_choices_are_all_returned() -> None:
    out = await call({"messages": user("abc"), "n": 3, "response_format": {"type": "json_object"}})
    assert out["response"] == '{"answer": "cba"}'
    assert [c["parsed"] for c in out["choices"]] == [
        {"answer": "cba"},
        {"answer": "cba #1"},
        {"answer": "cba #2"},
    ]
    assert [c["finish_reason"] for c in out["choices"]] == ["stop"] * 3


@pytest.mark.asyncio
async def test_the_schema_validator_is_built_once_per_schema() -> None:
    _validator.cache_clear()
    for _ in range(3):  # equal schemas, distinct objects: one validator
        schema = json.loads(json.dumps(SCHEMA))
        await call({"messages": user("abc"), "response_format": json_schema(schema)})
    info = _validator.cache_info()
    assert (info.misses, info.currsize) == (1, 1)
