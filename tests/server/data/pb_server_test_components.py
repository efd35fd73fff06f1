"""Components for the server tests, routed by ``pocketbatch.yaml`` as ``/srvtest/<name>``."""

from __future__ import annotations

import asyncio
import os
from typing import Any


def square(data: dict[str, Any]) -> dict[str, Any]:
    """``{"i": i, "square": i * i, "parity": i % 2}``; ``{"fail": true}`` raises."""
    if data.get("fail"):
        raise ValueError(f"item {data['i']} asked to fail")
    i = data["i"]
    return {"i": i, "square": i * i, "parity": i % 2}


async def nap(data: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``ms`` milliseconds, then append ``i`` to ``$PB_RUN_LOG`` (if set): ``{"i": i}``."""
    await asyncio.sleep(data["ms"] / 1000)
    log = os.environ.get("PB_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:  # noqa: ASYNC230
            f.write(f"{data['i']}\n")
    return {"i": data["i"]}


async def gate(data: dict[str, Any]) -> dict[str, Any]:
    """Wait until the file ``gate`` exists (when given), then append ``i`` to the file
    ``log`` (when given): ``{"i": i, "pad": "x" * pad}``."""
    path = data.get("gate")
    while path and not os.path.exists(path):  # noqa: ASYNC110, ASYNC240 (a test gate)
        await asyncio.sleep(0.01)
    if data.get("log"):
        with open(data["log"], "a", encoding="utf-8") as f:  # noqa: ASYNC230
            f.write(f"{data['i']}\n")
    return {"i": data["i"], "pad": "x" * data.get("pad", 0)}
