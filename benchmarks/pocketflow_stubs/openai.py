"""Offline stand-in for the ``openai`` client (chat, streaming, embeddings)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fake_llm import answer, embedding


class OpenAIError(Exception):
    pass


APIError = RateLimitError = APIConnectionError = OpenAIError


def _prompt(messages: Any) -> str:
    if isinstance(messages, list) and messages:
        last = messages[-1]
        content = last.get("content") if isinstance(last, dict) else last
        return content if isinstance(content, str) else repr(content)
    return repr(messages)


def _completion(text: str) -> Any:
    message = SimpleNamespace(content=text, role="assistant", tool_calls=None, parsed=None)
    choice = SimpleNamespace(message=message, finish_reason="stop", index=0)
    return SimpleNamespace(choices=[choice], usage=None)


def _chunks(text: str) -> Any:
    for word in text.split(" "):
        delta = SimpleNamespace(content=word + " ", role="assistant")
        yield SimpleNamespace(choices=[SimpleNamespace(delta=delta, finish_reason=None)])


class _Completions:
    def create(self, *, messages: Any = None, stream: bool = False, **_: Any) -> Any:
        text = answer(_prompt(messages))
        return _chunks(text) if stream else _completion(text)


class _AsyncCompletions:
    async def create(self, *, messages: Any = None, stream: bool = False, **_: Any) -> Any:
        text = answer(_prompt(messages))
        if not stream:
            return _completion(text)

        async def agen() -> Any:
            for chunk in _chunks(text):
                yield chunk

        return agen()


class _Embeddings:
    def create(self, *, input: Any = None, **_: Any) -> Any:
        items = input if isinstance(input, list) else [input]
        return SimpleNamespace(data=[SimpleNamespace(embedding=embedding(t)) for t in items])


class _Speech:
    def create(self, *, input: Any = None, **_: Any) -> Any:
        return SimpleNamespace(content=f"fake audio of {input!r}".encode())


class OpenAI:
    def __init__(self, *_: Any, **__: Any) -> None:
        self.chat = SimpleNamespace(completions=_Completions())
        self.embeddings = _Embeddings()
        self.audio = SimpleNamespace(speech=_Speech())


class AsyncOpenAI:
    def __init__(self, *_: Any, **__: Any) -> None:
        self.chat = SimpleNamespace(completions=_AsyncCompletions())
