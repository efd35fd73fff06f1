"""Offline stand-in for ``python-dotenv``: loads nothing."""

from typing import Any


def load_dotenv(*_: Any, **__: Any) -> bool:
    return False
