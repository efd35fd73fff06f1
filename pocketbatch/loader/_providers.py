"""Where a run's provider limiters come from: :class:`ProviderLimiters`, one
:class:`~pocketbatch.ProviderLimiter` per provider (base URL and key), shared by
whoever holds it; and the two protocols a run's builtins see of it.

A :class:`~pocketbatch.loader._services.RunServices` asks its
:class:`LimiterSource` for a provider's limiter. The source is a
:class:`ProviderLimiters` the run made for itself, or one it was given and shares
with other runs: the server's batches and ``/runs`` calls share the server's; the
workers of a process executor share their parent's, through
:class:`~pocketbatch.batch._limit_host.LimiterClient` (whose limiters are
:class:`Limiter` stand-ins that ask the parent). So a budget set by hand holds for
all of them together, and a provider's ``retry-after`` pauses all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from pocketbatch.core._limits import ProviderLimiter

__all__ = ("Limiter", "LimiterSource", "ProviderLimiters", "credential_digest")


class Limiter(Protocol):
    """What an HTTP builtin uses of a provider's limiter (a
    :class:`~pocketbatch.ProviderLimiter`, or a worker's stand-in for its parent's)."""

    def set_limits(
        self, *, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None: ...

    def update_from_headers(self, headers: Mapping[str, str]) -> None: ...

    def pause(self, seconds: float) -> None: ...

    def request(self, tokens: int = 0) -> AbstractAsyncContextManager[None]: ...


class LimiterSource(Protocol):
    """Gives the limiter of a provider: by base URL (no trailing ``/``) and the
    digest of its key (:func:`credential_digest`)."""

    def limiter(self, base: str, digest: str) -> Limiter: ...


def credential_digest(credential: str | None) -> str:
    """The key as it is kept: a short hash (never the key itself).

    Example:
        >>> credential_digest("sk-1") == credential_digest("sk-1") != credential_digest(None)
        True
    """
    return hashlib.sha256((credential or "").encode()).hexdigest()[:16]


class ProviderLimiters:
    """One :class:`~pocketbatch.ProviderLimiter` per provider (base URL and key),
    made on first use with the limits set by hand here; share one between the runs
    that must spend one budget together.

    Args:
        requests_per_minute, tokens_per_minute: limits for every provider (``None``:
            learned from the provider's headers only).
        clock, sleep: for the limiters (tests pass fakes).

    Example:
        >>> shared = ProviderLimiters(requests_per_minute=60)
        >>> a = shared.limiter("http://llm.local/v1", credential_digest("key"))
        >>> a is shared.limiter("http://llm.local/v1", credential_digest("key"))
        True
        >>> a.statistics().requests_per_minute, len(shared)
        (60, 1)
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.clock = clock
        self.sleep = sleep
        self._limiters: dict[tuple[str, str], ProviderLimiter] = {}

    def limiter(self, base: str, digest: str) -> ProviderLimiter:
        """The limiter of the provider at ``base`` with the key of ``digest``."""
        found = self._limiters.get((base, digest))
        if found is None:
            found = ProviderLimiter(
                self.requests_per_minute,
                self.tokens_per_minute,
                name=base,
                clock=self.clock,
                sleep=self.sleep,
            )
            self._limiters[(base, digest)] = found
        return found

    def all(self) -> dict[tuple[str, str], ProviderLimiter]:
        """Every limiter made so far, by (base URL, key digest)."""
        return dict(self._limiters)

    def __len__(self) -> int:
        return len(self._limiters)

    def __repr__(self) -> str:
        return f"<ProviderLimiters {len(self._limiters)} providers>"
