"""Offline stand-in for ``google.genai.types``: any config class accepts anything."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def __getattr__(name: str) -> Any:
    return type(name, (SimpleNamespace,), {})
