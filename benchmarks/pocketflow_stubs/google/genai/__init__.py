"""Offline stand-in for ``google.genai`` (``Client().models.generate_content``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fake_llm import answer, embedding

from . import types


class _Models:
    def generate_content(self, *, contents: Any = None, **_: Any) -> Any:
        return SimpleNamespace(text=answer(contents))

    def embed_content(self, *, contents: Any = None, **_: Any) -> Any:
        return SimpleNamespace(embeddings=[SimpleNamespace(values=embedding(contents))])


class Client:
    def __init__(self, *_: Any, **__: Any) -> None:
        self.models = _Models()


__all__ = ("Client", "types")
