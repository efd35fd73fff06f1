"""Components for the Ray executor tests, routed by ``pocketbatch.yaml`` as ``/raytest/<name>``.

Everything a component needs to know arrives in its input (no environment variables:
the Ray workers are started by the test's Ray instance, not by the test).

* ``check``: raises for ``{"fail": true}``; else ``{"n": n * 2}``;
* ``counted``: resolving it (once per flow load) bumps the module-level ``LOADS``;
  it returns ``{"i", "pid", "loads"}``, so a test sees how often each worker loaded;
* ``crash``: ``os._exit(1)`` for ``{"crash": true}``;
* ``inflight``: counts the items inside it across processes, in the file
  ``{dir}/count`` under an ``fcntl`` lock, and appends each count it reaches to
  ``{dir}/seen``;
* ``nap``: sleeps ``sleep_ms`` and returns ``{"i": i}``;
* ``victim``: writes its pid to ``{dir}/pid-{i}``, naps ``sleep_ms``, and returns
  ``{"i", "pid"}``: a test SIGKILLs that pid from outside;
* ``spin``: ``rounds`` turns of a pure-Python loop (CPU-bound: a chunk's items run
  one after the other); returns ``{"i": i}``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

# "counted" is served by the module __getattr__ below; a route reaches such a name
# only when the module exports it in __all__.
__all__ = ["check", "counted", "crash", "inflight", "nap", "spin", "victim"]  # noqa: F822

LOADS = 0


def check(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("fail"):
        raise ValueError(f"item {data.get('n')} asked to fail")
    return {"n": data["n"] * 2}


def _counted(data: dict[str, Any]) -> dict[str, Any]:
    return {"i": data["i"], "pid": os.getpid(), "loads": LOADS}


def __getattr__(name: str) -> Any:
    # Called each time the loader resolves /raytest/counted: once per flow load.
    global LOADS
    if name == "counted":
        LOADS += 1
        return _counted
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def crash(data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.01)  # the chunk's other items are in flight beside it
    if data.get("crash"):
        os._exit(1)
    return {"i": data["i"], "pid": os.getpid()}


def _bump(directory: Path, delta: int) -> None:
    with open(directory / "lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        count_file = directory / "count"
        count = int(count_file.read_text() or 0) if count_file.exists() else 0
        count += delta
        count_file.write_text(str(count))
        if delta > 0:
            with open(directory / "seen", "a", encoding="utf-8") as seen:
                seen.write(f"{count}\n")


async def inflight(data: dict[str, Any]) -> dict[str, Any]:
    directory = Path(data["dir"])
    _bump(directory, +1)
    try:
        await asyncio.sleep(data.get("sleep_ms", 30) / 1000)
    finally:
        _bump(directory, -1)
    return {"i": data["i"]}


async def nap(data: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(data.get("sleep_ms", 0) / 1000)
    return {"i": data["i"]}


def spin(data: dict[str, Any]) -> dict[str, Any]:
    acc = 0
    for turn in range(data.get("rounds", 0)):
        acc = (acc * 31 + turn) & 0xFFFF
    return {"i": data["i"]}


async def victim(data: dict[str, Any]) -> dict[str, Any]:
    """Note this process's pid in ``{dir}/pid-{i}``, then nap: for a test to SIGKILL."""
    (Path(data["dir"]) / f"pid-{data['i']}").write_text(str(os.getpid()))
    await asyncio.sleep(data.get("sleep_ms", 0) / 1000)
    return {"i": data["i"], "pid": os.getpid()}
