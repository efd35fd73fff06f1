"""Retry delays, argument checks and the rate limiter shared by all nodes."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable

__all__ = ("RateLimiter", "check_retry_on", "retry_delay")

ExceptionTypes = tuple[type[BaseException], ...]


def retry_delay(
    wait: float, backoff: float, max_wait: float | None, jitter: float, failed: int
) -> float:
    """Seconds to sleep after the ``failed``-th failed attempt (counting from 1).

    ``wait * backoff ** (failed - 1)``, capped at ``max_wait``, plus a uniform
    random ``[0, jitter)`` seconds.
    """
    delay = wait * backoff ** (failed - 1) if backoff != 1 else wait
    if max_wait is not None and delay > max_wait:
        delay = max_wait
    if jitter:
        delay += random.uniform(0, jitter)
    return float(delay)


def check_non_negative(name: str, value: float | None, *, allow_none: bool) -> None:
    """Raise a ``ValueError``/``TypeError`` naming ``name`` unless ``value`` is a number >= 0."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_retry_on(
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
) -> ExceptionTypes:
    """Normalise ``retry_on`` to a tuple of exception types, or explain what is wrong."""
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(
                "retry_on must be an exception type or a tuple of them, "
                f"got {type(t).__name__}: {t!r}"
            )
    return types


class RateLimiter:
    """Spaces out starts so that no more than ``per_second`` begin in any second.

    A start is granted every ``1 / per_second`` seconds; callers that arrive early
    wait their turn in arrival order. One limiter is made per batch run.

    Example:
        >>> import asyncio
        >>> limiter = RateLimiter(1000)
        >>> asyncio.run(limiter.acquire())
    """

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        check_non_negative("max_per_second", per_second, allow_none=False)
        if per_second == 0:
            raise ValueError("max_per_second must be > 0, got 0")
        self.per_second = per_second
        self._interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf

    async def acquire(self) -> None:
        """Wait until this caller may start."""
        now = self._clock()
        slot = self._next if self._next > now else now
        self._next = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)

    def __repr__(self) -> str:
        return f"RateLimiter(per_second={self.per_second})"
