"""Offline stand-in for the ``anthropic`` client (``messages.create``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fake_llm import answer


class _Messages:
    def create(self, *, messages: Any = None, thinking: Any = None, **_: Any) -> Any:
        last = messages[-1]["content"] if messages else ""
        text = SimpleNamespace(type="text", text=answer(last))
        blocks = (
            [SimpleNamespace(type="thinking", thinking="fake thinking", text="")]
            if thinking
            else []
        )
        return SimpleNamespace(content=[*blocks, text])


class Anthropic:
    def __init__(self, *_: Any, **__: Any) -> None:
        self.messages = _Messages()


class _AsyncMessages:
    async def create(self, **kwargs: Any) -> Any:
        return _Messages().create(**kwargs)


class AsyncAnthropic:
    def __init__(self, *_: Any, **__: Any) -> None:
        self.messages = _AsyncMessages()


AnthropicVertex = Anthropic
