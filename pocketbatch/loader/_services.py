"""What a run lends its HTTP builtins: :class:`RunServices` (one pooled HTTP client
per network policy, a :class:`~pocketbatch.ProviderLimiter` per provider, the
run's :class:`~pocketbatch.Usage`) and the retry policy of LLM steps.

Whoever runs items owns one: an executor for its batch (one per worker process or
Ray actor), or :meth:`~pocketbatch.LoadedFlow.run_async` for a single run. Builtins
reach it through :attr:`~pocketbatch.loader._component.CallContext.services` and
never build clients of their own. Nothing here is process-wide: two runs side by
side have two of everything. httpx is imported when the first client is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pocketbatch.core._limits import ProviderLimiter, Usage
from pocketbatch.loader._blobs import BlobStore, MemoryBlobStore
from pocketbatch.loader._network import NetworkPolicy
from pocketbatch.loader._providers import (
    Limiter,
    LimiterSource,
    ProviderLimiters,
    credential_digest,
)

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

__all__ = ("DEFAULT_RETRY", "RetryPolicy", "RunServices", "ServiceSettings")

_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """How LLM steps retry transient failures (429, 5xx, timeouts, connection
    errors) by themselves: up to ``attempts`` tries in all, sleeping a uniformly
    random ``[0, min(cap, base * 2 ** (n - 1))]`` seconds after the n-th failure
    ("full jitter"), or the ``retry-after-ms``/``retry-after`` the reply asked for
    when that is longer. Other 4xx are not retried.

    Example:
        >>> RetryPolicy().attempts, RetryPolicy().base, RetryPolicy().cap
        (5, 0.5, 30.0)
        >>> RetryPolicy(attempts=3, base=1.0, cap=2.0).delay(5, rng=lambda a, b: b)
        2.0
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry attempts must be >= 1, got {self.attempts}")

    def delay(
        self,
        failed: int,
        retry_after: float | None = None,
        *,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to sleep after the ``failed``-th failed attempt."""
        backoff = rng(0.0, min(self.cap, self.base * 2 ** (failed - 1)))
        return max(backoff, retry_after or 0.0)


DEFAULT_RETRY: Final = RetryPolicy()
"""5 attempts, base 0.5 s, cap 30 s, full jitter."""


@dataclass(frozen=True)
class ServiceSettings:
    """How a run's :class:`RunServices` are set up; plain data, so it travels to
    worker processes.

    Attributes:
        max_connections: the HTTP pool's size per client (follows the batch's
            ``max_concurrency``); as many kept alive.
        requests_per_minute, tokens_per_minute: limits set by hand for every
            provider of the run (``None``: learned from headers only).
        retry: the retry policy of ``/builtin/openai``.
        blobs: where the run's blobs live (``None``: in memory, per
            :class:`RunServices`); the server gives its SQLite store, which travels to
            worker processes by its file name.
        budget_share: the part of each limit set by hand (here, in the step, in
            ``providers:``) this process may spend: ``1/N`` on each of N Ray actors.

    Example:
        >>> ServiceSettings(max_connections=32, requests_per_minute=500).tokens_per_minute is None
        True
    """

    max_connections: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    blobs: BlobStore | None = None
    budget_share: float = 1.0


class RunServices:
    """A run's shared HTTP clients, provider limiters and usage counters.

    Args:
        settings: pool size, limits by hand, retry policy.
        limiters: limiters you made, by base URL (e.g. ``{"https://api.openai.com/v1":
            limiter}``), used for every key at that URL; the others are made on
            first use, one per base URL and key.
        usage: where to count (default: a new :class:`~pocketbatch.Usage`).
        blobs: where the run's blobs live (default: ``settings.blobs``, else a new
            :class:`~pocketbatch.loader._blobs.MemoryBlobStore`; the server passes its
            SQLite-backed store).
        clock, sleep: for the limiters and the retry waits (tests pass fakes).
        providers: where the other limiters come from, shared with other runs (a
            server's :class:`~pocketbatch.loader._providers.ProviderLimiters`, a
            process worker's stand-in for its parent's); default: this run's own,
            set up from ``settings``, ``clock`` and ``sleep``.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     async with RunServices(ServiceSettings(requests_per_minute=60)) as services:
        ...         a = services.limiter("http://llm.local/v1", "key")
        ...         return a is services.limiter("http://llm.local/v1/", "key"), a.statistics()
        >>> same, stats = asyncio.run(main())
        >>> same, stats.requests_per_minute
        (True, 60)
    """

    def __init__(
        self,
        settings: ServiceSettings | None = None,
        *,
        limiters: Mapping[str, ProviderLimiter] | None = None,
        usage: Usage | None = None,
        blobs: BlobStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        providers: LimiterSource | None = None,
    ) -> None:
        self.settings = settings or ServiceSettings()
        self.usage = usage if usage is not None else Usage()
        self.blobs: BlobStore = (
            blobs if blobs is not None else self.settings.blobs or MemoryBlobStore()
        )
        self.clock = clock
        self.sleep = sleep
        self._given = {_base(url): limiter for url, limiter in (limiters or {}).items()}
        self.providers: LimiterSource = (
            providers
            if providers is not None
            else ProviderLimiters(
                self.settings.requests_per_minute,
                self.settings.tokens_per_minute,
                clock=clock,
                sleep=sleep,
            )
        )
        self._clients: dict[NetworkPolicy | None, httpx.AsyncClient] = {}
        self._owned: dict[object, Any] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    def owned(self, key: object, make: Callable[[], _T]) -> _T:
        """A run-scoped object (the Stepflow worker hub) made by ``make`` on first use
        and closed, by its ``aclose()``, when these services close."""
        if self._closed:
            raise RuntimeError("the run's services are closed; a run cannot send after it ended")
        if key not in self._owned:
            self._owned[key] = make()
        found: _T = self._owned[key]
        return found

    def threads(self) -> ThreadPoolExecutor:
        """The run's thread pool for sync components (made on first use), as many
        threads as items in flight (``max_connections``, which follows the batch's
        ``max_concurrency``), so blocking calls overlap as async ones do; threads are
        started only as calls need them."""
        if self._threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self._threads = ThreadPoolExecutor(
                max_workers=self.settings.max_connections, thread_name_prefix="pocketbatch-sync"
            )
        return self._threads

    def client(self, network: NetworkPolicy | None) -> httpx.AsyncClient:
        """The pooled client for a network policy (made on first use): the server's
        policy keeps its :class:`~pocketbatch.loader._transport.GuardedTransport`."""
        if self._closed:
            raise RuntimeError("the run's services are closed; a run cannot send after it ended")
        found = self._clients.get(network)
        if found is not None:
            return found
        import httpx

        from pocketbatch.loader._transport import GuardedTransport, ShardedTransport

        size = self.settings.max_connections
        # As many connections kept alive as items in flight, in small pools (see
        # ShardedTransport: one big httpcore pool costs CPU quadratic in its size).
        if network is not None:
            transport = GuardedTransport(network, inner=ShardedTransport(size))
            client = httpx.AsyncClient(transport=transport, trust_env=False)
        elif _proxied():  # a transport of our own would bypass the environment's proxy
            limits = httpx.Limits(max_connections=2 * size, max_keepalive_connections=size)
            client = httpx.AsyncClient(limits=limits)
        else:
            client = httpx.AsyncClient(transport=ShardedTransport(size))
        self._clients[network] = client
        return client

    def limiter(self, base_url: str, credential: str | None = None) -> Limiter:
        """The limiter of a provider: one per base URL and credential (the key is
        kept only as a hash), from :attr:`providers`."""
        base = _base(base_url)
        given = self._given.get(base)
        if given is not None:
            return given
        return self.providers.limiter(base, credential_digest(credential))

    async def aclose(self) -> None:
        """Close the clients (and their connections), the thread pool and what the
        run owns, last made first; each even when another fails. Idempotent."""
        self._closed = True
        owned, self._owned = list(self._owned.values()), {}
        threads, self._threads = self._threads, None
        clients, self._clients = list(self._clients.values()), {}
        async with contextlib.AsyncExitStack() as closing:  # unwinds last pushed first
            for client in clients:
                closing.push_async_callback(client.aclose)
            if threads is not None:  # calls still running (a cancelled run) are not waited for
                closing.callback(threads.shutdown, wait=False, cancel_futures=True)
            for resource in owned:
                closing.push_async_callback(resource.aclose)

    async def __aenter__(self) -> RunServices:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<RunServices {len(self._clients)} clients, {self.providers!r}, "
            f"{self.usage.summary()}>"
        )


def _base(url: str) -> str:
    return url.rstrip("/")


def _proxied() -> bool:
    """Whether the environment names a proxy (``HTTPS_PROXY``, ``http_proxy``,
    ``ALL_PROXY``...), which httpx honours only for a client without a transport of
    its own."""
    return any(
        value and name.lower() in ("http_proxy", "https_proxy", "all_proxy")
        for name, value in os.environ.items()
    )
