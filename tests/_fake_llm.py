"""The fake OpenAI-compatible providers of the tests, both from
``benchmarks/fake_provider.py`` (one HTTP/1.1 server on 127.0.0.1, in its own thread,
so sync tests (the CLI) and async tests can both use it):

* :func:`fake_llm` / :class:`FakeLLM`: scripted replies (:meth:`FakeLLM.fail`), then
  ``echo: <content>`` with a fixed :data:`USAGE` and the ``x-ratelimit-*`` headers of
  :attr:`FakeLLM.headers`; it counts every socket accepted and every one closed, so a
  test can tell one pooled client from a client per request;
* :data:`fake_provider`, the module itself, for the realistic provider (rate limits,
  latency, faults: ``fake_provider.running_provider(fake_provider.ProviderConfig(...))``).

``benchmarks/`` is not on the import path: :func:`benchmark_module` loads its modules
from their files, so its top-level names (``core``, ``batch``, ``server``...) cannot
shadow anything a test imports.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py``, imported from its file (once) as ``_benchmarks_<name>``."""
    qualified = f"_benchmarks_{name}"
    found = sys.modules.get(qualified)
    if found is not None:
        return found
    spec = importlib.util.spec_from_file_location(qualified, BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module  # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


fake_provider = benchmark_module("fake_provider")

USAGE: dict[str, int] = fake_provider.SCRIPTED_USAGE

# A one-step /builtin/openai flow asking the input's ``q`` (its base URL from the
# ``openai_base_url`` variable or the environment) ...
CHAT_FLOW = """
steps:
  - id: chat
    component: /builtin/openai
    input:
      messages: [{role: user, content: {$input: q}}]
output: {$step: chat, path: response}
"""
# ... and the same with the base URL in the input (``base_url``), as a server's
# submitters send it.
CHAT_FLOW_TO_INPUT_URL = """
steps:
  - id: chat
    component: /builtin/openai
    input:
      messages: [{role: user, content: {$input: q}}]
      base_url: {$input: base_url}
      api_key: sk-test
output: {$step: chat, path: response}
"""


class FakeLLM:
    """What a test sees of the scripted provider (a ``fake_provider.ScriptedProvider``)."""

    def __init__(self, running: Any) -> None:
        self._running = running
        self._provider = running.provider

    @property
    def port(self) -> int:
        port: int = self._provider.port
        return port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def connections(self) -> int:
        """Sockets accepted."""
        count: int = self._provider.counters.connections
        return count

    @property
    def closed(self) -> int:
        """Sockets ended (closed by the client, or at the end)."""
        count: int = self._provider.counters.closed
        return count

    @property
    def requests(self) -> list[Any]:
        """The chat request bodies, in order."""
        bodies: list[Any] = self._provider.bodies
        return bodies

    @property
    def headers(self) -> dict[str, str]:
        """Headers sent with every success (update it to add some)."""
        headers: dict[str, str] = self._provider.headers
        return headers

    @property
    def clock(self) -> Callable[[], float] | None:
        """A test's clock (e.g. a FakeTime's): each request's arrival is stamped with it
        in :attr:`stamps`."""
        clock: Callable[[], float] | None = self._provider.clock
        return clock

    @clock.setter
    def clock(self, clock: Callable[[], float] | None) -> None:
        self._provider.clock = clock

    @property
    def stamps(self) -> list[float]:
        stamps: list[float] = self._provider.stamps
        return stamps

    @property
    def hold(self) -> Callable[[int], Awaitable[None]] | None:
        """Awaited (on the fake's loop) before the n-th reply (1-based) is sent."""
        hold: Callable[[int], Awaitable[None]] | None = self._provider.hold
        return hold

    @hold.setter
    def hold(self, hold: Callable[[int], Awaitable[None]] | None) -> None:
        self._provider.hold = hold

    def fail(self, status: int, times: int = 1, **headers: str) -> None:
        """Answer the next ``times`` requests with ``status`` (and these headers;
        ``retry_after_ms="250"`` becomes ``retry-after-ms: 250``)."""
        self._provider.fail(status, times, **headers)


@contextmanager
def fake_llm() -> Iterator[FakeLLM]:
    """Run a scripted provider on a free port of 127.0.0.1 for the ``with`` block."""
    provider = fake_provider.ScriptedProvider()
    with fake_provider.running_provider(provider=provider) as running:
        yield FakeLLM(running)


def wait_until_closed(fake: FakeLLM, count: int) -> bool:
    """Whether the fake has seen ``count`` sockets closed (its thread may lag a moment
    behind the client's close; this waits on events, at most 5 s)."""
    for _ in range(500):
        if fake.closed >= count:
            return True
        threading.Event().wait(0.01)
    return fake.closed >= count
