"""Offline stand-in for the ``ddgs`` web search: fixed, deterministic results."""

from __future__ import annotations

from typing import Any


class DDGS:
    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def __enter__(self) -> DDGS:
        return self

    def __exit__(self, *_: Any) -> None:
        pass

    def text(self, query: str, max_results: int = 5, **_: Any) -> list[dict[str, str]]:
        return [
            {
                "title": f"Result {i} for {query}",
                "href": f"https://example.invalid/{i}",
                "body": f"Snippet {i} about {query}.",
            }
            for i in range(1, min(max_results or 3, 3) + 1)
        ]
