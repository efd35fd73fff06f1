"""Deterministic stand-in for the LLM answers PocketFlow's cookbook asks for.

An answer depends only on the prompt and on how many prompts with the same
template came before it in this process: a prompt that shows a ```yaml (or
```json) template gets that template back with its ``<placeholders>`` filled and
its ``a OR b`` choices resolved (the first option on the first call, the next
one on the next: agent loops search once, then answer; from the second call on,
``true``/``false`` values are swapped, so ``next_thought_needed: true`` ends a
loop); any other prompt gets a short fixed sentence. No network, no randomness.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_seen: dict[str, int] = {}
_FENCE = re.compile(r"```(yaml|json)\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_PLACEHOLDER = re.compile(r"<([^<>\n]*)>")
_NUMERIC = re.compile(r"number|score|count|integer|rating|1-10|1 to 10|0-10|\bint\b", re.I)
_BOOL = re.compile(r"(:\s*)(true|false|True|False)\b")
_CHOICE = re.compile(r"^(\s*-?\s*[\w\"' -]+:\s*)([\w.-]+(?:\s+(?:OR|or|\|)\s+[\w.-]+)+)\s*(#.*)?$")


_SWAP = {"true": "false", "false": "true", "True": "False", "False": "True"}


def _pick(options: list[str], n: int) -> str:
    return options[min(n, len(options) - 1)]


def _fill_placeholder(match: re.Match[str], n: int) -> str:
    text = match.group(1).strip()
    options = [o.strip(" \"'") for o in re.split(r"\s*\|\s*|\s+OR\s+|\s+or\s+", text)]
    if len(options) > 1 and all(re.fullmatch(r"[\w.-]+", o) for o in options):
        return _pick(options, n)
    if _NUMERIC.search(text):
        return "7"
    if re.search(r"true|false|yes|no", text, re.I) and len(text) < 20:
        return "true"
    words = re.findall(r"[A-Za-z]+", text)[:3]
    return "fake " + " ".join(words).lower() if words else "fake"


def _fill(template: str, n: int) -> str:
    lines = []
    for line in template.splitlines():
        choice = _CHOICE.match(line)
        if choice and "<" not in line:
            options = re.split(r"\s+(?:OR|or|\|)\s+", choice.group(2))
            line = choice.group(1) + _pick(options, n)
        if n >= 1:
            line = _BOOL.sub(lambda m: m.group(1) + _SWAP[m.group(2)], line)
        lines.append(_PLACEHOLDER.sub(lambda m: _fill_placeholder(m, n), line))
    return "\n".join(lines)


def answer(prompt: Any) -> str:
    """The fake model's reply to ``prompt`` (a string, or chat messages)."""
    if not isinstance(prompt, str):
        prompt = repr(prompt)
    fences = _FENCE.findall(prompt)
    if fences:
        kind, template = fences[-1]
        key = hashlib.sha256(template.encode()).hexdigest()
        n = _seen.get(key, 0)
        _seen[key] = n + 1
        return f"```{kind.lower()}\n{_fill(template, n).strip()}\n```"
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return f"Fake answer {digest}: the short, plain reply of a stub model."


def embedding(text: Any) -> list[float]:
    """A deterministic 16-dimensional vector for ``text``."""
    digest = hashlib.sha256(str(text).encode()).digest()
    return [b / 255.0 for b in digest[:16]]
