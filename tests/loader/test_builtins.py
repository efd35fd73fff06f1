"""The builtin registry and the small builtins (create_messages, noop, sleep).

The network builtins are tested in test_builtin_http.py, load_file in
test_builtin_files.py.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from _builtin_support import MESSAGES, fails, make_ctx

from pocketbatch.loader._builtins import (
    CreateMessages,
    HttpRequest,
    Noop,
    OpenAIChat,
    Sleep,
    builtin_components,
)

# --------------------------------------------------------------------------- registry


def test_builtin_components_lists_every_path_with_fresh_instances() -> None:
    first, second = builtin_components(), builtin_components()
    assert set(first) == {
        "/builtin/create_messages",
        "/builtin/load_file",
        "/builtin/openai",
        "/http/request",
        "/builtin/noop",
        "/builtin/sleep",
        "/builtin/put_blob",
        "/builtin/get_blob",
    }
    assert all(first[path] is not second[path] for path in first)
    assert isinstance(first["/builtin/openai"], OpenAIChat)
    assert isinstance(first["/http/request"], HttpRequest)


def test_importing_pocketbatch_imports_neither_httpx_nor_yaml() -> None:
    code = (
        "import sys, pocketbatch, pocketbatch.loader._builtins; "
        "print(sorted(m for m in ('httpx', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- create_messages


@pytest.mark.asyncio
async def test_create_messages_with_system_instructions() -> None:
    out = await CreateMessages()(
        {"user_prompt": "hi", "system_instructions": "be brief"}, make_ctx()
    )
    assert out == {"messages": MESSAGES}


@pytest.mark.asyncio
async def test_create_messages_without_system_instructions() -> None:
    out = await CreateMessages()({"user_prompt": "hi", "system_instructions": None}, make_ctx())
    assert out == {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "/builtin/create_messages: 'user_prompt' is required"),
        ({"user_prompt": 3}, "/builtin/create_messages: 'user_prompt' must be a string, got int"),
        (
            {"user_prompt": "x", "system_instructions": ["a"]},
            "/builtin/create_messages: 'system_instructions' must be a string, got list",
        ),
        ("hi", "/builtin/create_messages: input must be an object, got str"),
        (None, "/builtin/create_messages: input must be an object, got null"),
    ],
)
async def test_create_messages_rejects_bad_input(input: Any, message: str) -> None:
    err = await fails(CreateMessages(), input)
    assert (err.code, err.message) == ("INVALID_INPUT", message)


# --------------------------------------------------------------------------- noop, sleep


@pytest.mark.asyncio
async def test_noop_returns_its_input_unchanged() -> None:
    value = {"a": [1, {"b": None}]}
    assert await Noop()(value, make_ctx()) is value
    assert await Noop()(None, make_ctx()) is None


@pytest.mark.asyncio
async def test_sleep_returns_duration_and_passthrough() -> None:
    assert await Sleep()({"duration_ms": 1, "passthrough": {"k": 1}}, make_ctx()) == {
        "duration_ms": 1,
        "passthrough": {"k": 1},
    }
    assert await Sleep()({"duration_ms": 0.5}, make_ctx()) == {"duration_ms": 0.5}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({}, "'duration_ms' is required"),
        ({"duration_ms": "10"}, "'duration_ms' must be a number, got str"),
        ({"duration_ms": True}, "'duration_ms' must be a number, got bool"),
        ({"duration_ms": -1}, "'duration_ms' must be a number >= 0, got -1"),
        ({"duration_ms": float("nan")}, "'duration_ms' must be a number >= 0, got nan"),
    ],
)
async def test_sleep_rejects_bad_input(input: Any, message: str) -> None:
    err = await fails(Sleep(), input)
    assert (err.code, err.message) == ("INVALID_INPUT", f"/builtin/sleep: {message}")
