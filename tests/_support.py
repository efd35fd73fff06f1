"""Helpers several test modules share (``tests`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_lines(path: Path, items: Iterable[Any]) -> Path:
    """A JSONL file: each item as JSON, or as it is when it is a string (a bad line)."""
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(item if isinstance(item, str) else json.dumps(item))
            f.write("\n")
    return path


def records(path: Path) -> list[dict[str, Any]]:
    """The records of a run-batch output, which must not end with a torn line."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "the output ends with a torn line"
    return [json.loads(line) for line in text.splitlines()]
