"""Components for the batch tests, routed by ``pocketbatch.yaml`` as ``/batchtest/<name>``.

Environment variables (read when called, except the import log):

* ``PB_IMPORT_LOG``: a file this module appends its process id to when imported;
* ``PB_LOAD_LOG``: a file ``/batchtest/counted`` appends its process id to each time a
  flow resolves it, i.e. once per flow load;
* ``PB_GATE_FILE`` / ``PB_GATE_FROM``: ``/batchtest/gated`` holds every item whose
  ``i`` is at least ``PB_GATE_FROM`` until the file ``PB_GATE_FILE`` exists.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

# "counted" is served by the module __getattr__ below; a route reaches such a name
# only when the module exports it in __all__.
__all__ = ["check", "checksum", "counted", "cpu", "cpu_pid", "crash", "gated"]  # noqa: F822

if os.environ.get("PB_IMPORT_LOG"):
    with open(os.environ["PB_IMPORT_LOG"], "a", encoding="utf-8") as _log:
        _log.write(f"{os.getpid()}\n")


def _spin(n: int) -> int:
    """Pure-Python CPU work: a checksum that depends on every step."""
    acc = 0
    for k in range(n):
        acc = (acc * 31 + k) % 1_000_003
    return acc


def checksum(i: int, n: int) -> int:
    """What :func:`cpu` returns as ``value`` for ``{"i": i, "n": n}`` (for the tests)."""
    return (_spin(n) + i) % 1_000_003


def cpu(data: dict[str, Any]) -> dict[str, Any]:
    """CPU-bound: ``{"i": i, "value": checksum(i, n)}``."""
    return {"i": data["i"], "value": checksum(data["i"], data.get("n", 20_000))}


def cpu_pid(data: dict[str, Any]) -> dict[str, Any]:
    """Like :func:`cpu`, plus the process id it ran in."""
    return {**cpu(data), "pid": os.getpid()}


def _counted(data: dict[str, Any]) -> dict[str, Any]:
    return cpu_pid(data)


def __getattr__(name: str) -> Any:
    # Module-level __getattr__: called each time the loader resolves /batchtest/counted,
    # which happens once per load of a flow that uses it.
    if name == "counted":
        log = os.environ.get("PB_LOAD_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as out:
                out.write(f"{os.getpid()}\n")
        return _counted
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def crash(data: dict[str, Any]) -> dict[str, Any]:
    """Kill the worker process (no cleanup, no exception) when ``data["crash"]``."""
    if data.get("crash"):
        os._exit(17)
    return {"i": data["i"], "pid": os.getpid()}


def check(data: dict[str, Any]) -> dict[str, Any]:
    """Raise for ``{"fail": true}``; else ``{"n": n * 2}``."""
    if data.get("fail"):
        raise ValueError(f"item {data.get('n')} asked to fail")
    return {"n": data["n"] * 2}


async def gated(data: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``sleep_ms``; hold items at or past ``PB_GATE_FROM`` until the gate file exists."""
    await asyncio.sleep(data.get("sleep_ms", 0) / 1000)
    gate = os.environ.get("PB_GATE_FILE")
    start = int(os.environ.get("PB_GATE_FROM", "0"))
    if gate and data["i"] >= start:
        # The gate is a file another process creates: poll it (no event to wait on).
        while not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.005)
    return {"i": data["i"], "square": data["i"] * data["i"]}
