"""A provider's rate limits, shared by every caller: :class:`ProviderLimiter`; and
:class:`Usage`, what a run spent.

One :class:`ProviderLimiter` stands for one rate-limited service (an LLM provider's
base URL with one API key). It holds two budgets per minute, requests and tokens,
each a bucket that refills continuously at ``limit / 60`` per second; a caller takes
one request and its estimated tokens before sending. The limits can be given by
hand, and are learned from the provider's ``x-ratelimit-*`` headers
(:meth:`ProviderLimiter.update_from_headers`); a 429, or a 503 with ``retry-after``,
pauses every caller (:meth:`ProviderLimiter.pause`). Stdlib only, like the rest of the core.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields

from pocketbatch.core._retry import check_non_negative

__all__ = (
    "ProviderLimiter",
    "ProviderLimiterStatistics",
    "Usage",
    "estimate_tokens",
    "parse_duration",
    "retry_after",
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset value: ``"20ms"``, ``"1s"``, ``"6m0s"``,
    ``"1h2m3.5s"`` or a plain number of seconds; ``None`` when unreadable.

    Example:
        >>> parse_duration("6m0s"), parse_duration("20ms"), parse_duration("2.5")
        (360.0, 0.02, 2.5)
    """
    text = text.strip()
    try:
        return max(float(text), 0.0)
    except ValueError:
        pass
    total, pos = 0.0, 0
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * scale[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos else None


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a response asks us to wait: ``retry-after-ms``, else ``retry-after``
    (seconds or an HTTP date; ``now`` is the epoch time, default the current one);
    ``None`` when neither is there or readable.

    Example:
        >>> retry_after({"retry-after-ms": "250"}), retry_after({"retry-after": "3"})
        (0.25, 3.0)
    """
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def estimate_tokens(messages: object, max_tokens: int | None = None) -> int:
    """A cheap token estimate for a chat request: the characters of the messages'
    ``str()`` text divided by 4 (rounded up; no tokenizer is loaded), plus
    ``max_tokens`` (what the provider reserves for the reply; OpenAI counts it
    against the tokens-per-minute budget).

    Example:
        >>> estimate_tokens([{"role": "user", "content": "x" * 40}], max_tokens=10)
        29
    """
    return math.ceil(len(str(messages)) / 4) + (max_tokens or 0)


@dataclass
class Usage:
    """What a run spent, summed over its items: requests sent, tokens in and out
    (from the replies' ``usage``), 429 replies, retries, and step-cache hits.

    Example:
        >>> total = Usage(requests=2, tokens_in=30)
        >>> total.add(Usage(requests=1, tokens_out=5, rate_limited=1))
        >>> total.summary()
        'requests 3, tokens in 30 / out 5, 429s 1, retries 0, cache hits 0'
    """

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    rate_limited: int = 0
    retries: int = 0
    cache_hits: int = 0

    def add(self, other: Usage | Mapping[str, int]) -> None:
        """Add another usage (or its :meth:`to_dict`) into this one."""
        values = other.to_dict() if isinstance(other, Usage) else other
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(values.get(f.name, 0)))

    def minus(self, earlier: Usage) -> Usage:
        """What was spent since ``earlier`` (a copy taken with :meth:`copy`)."""
        return Usage(
            **{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)}
        )

    def copy(self) -> Usage:
        """A snapshot of these counters."""
        return Usage(**self.to_dict())

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain dict (JSON-ready)."""
        return asdict(self)

    def __bool__(self) -> bool:
        return any(self.to_dict().values())

    def summary(self) -> str:
        """One line for a progress display."""
        return (
            f"requests {self.requests}, tokens in {self.tokens_in} / out {self.tokens_out}, "
            f"429s {self.rate_limited}, retries {self.retries}, cache hits {self.cache_hits}"
        )


@dataclass(frozen=True)
class ProviderLimiterStatistics:
    """A snapshot of a :class:`ProviderLimiter` (see :meth:`ProviderLimiter.statistics`).

    Attributes:
        requests_per_minute, tokens_per_minute: the limits in force (``None``: none).
        requests_available, tokens_available: what the budgets hold now.
        in_flight: requests granted and not yet finished.
        waiting: callers waiting for a grant.
        paused_for: seconds left of a pause (0 when not paused).
        pauses: how many times the limiter was paused.
    """

    requests_per_minute: float | None
    tokens_per_minute: float | None
    requests_available: float
    tokens_available: float
    in_flight: int
    waiting: int
    paused_for: float
    pauses: int


class _Bucket:
    """A budget that refills at ``limit / 60`` per second up to ``limit``."""

    def __init__(self, limit: float | None, now: float) -> None:
        self.limit = limit
        self.level = limit if limit is not None else math.inf
        self.stamp = now

    def refill(self, now: float) -> None:
        if self.limit is None:
            self.level = math.inf
        else:
            gained = (now - self.stamp) * self.limit / 60.0
            self.level = min(self.limit, self.level + gained)
        self.stamp = now

    def set_limit(self, limit: float | None, now: float) -> None:
        self.refill(now)
        self.limit = limit
        self.level = math.inf if limit is None else min(self.level, limit)

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (capped at a full bucket)."""
        if self.limit is None:
            return 0.0
        need = min(amount, self.limit) - self.level
        return max(need, 0.0) * 60.0 / self.limit if self.limit > 0 else math.inf


class ProviderLimiter:
    """Requests and tokens per minute for one provider, shared by every caller.

    Think of two sacks of tokens that refill at a steady pace: one holds requests,
    one holds LLM tokens. ``async with limiter.request(tokens=n)`` waits until both
    hold enough (one request, ``n`` tokens; a request bigger than the whole token
    budget waits for a full sack), takes them, and runs the body; callers are
    served in arrival order. Give the limits by hand, let
    :meth:`update_from_headers` learn them (and what is left) from the provider's
    ``x-ratelimit-limit-requests``, ``-remaining-requests``, ``-reset-requests``
    and the ``-tokens`` twins, or both: the lower limit wins. :meth:`pause` stops
    everyone (on a 429 or 503 with ``retry-after``). While no limit is known,
    :meth:`request` lets one request go first and holds the others until it ends
    (its answer's headers learned by then), so a run does not open with a burst
    of blind requests that the provider answers with 429s.

    Share one limiter between all the nodes that call the same provider with the
    same key; the builtin ``/builtin/openai`` gets one per base URL and key from
    its run. Estimate tokens with :func:`estimate_tokens` (characters / 4 plus
    ``max_tokens``) when you have nothing better.

    Args:
        requests_per_minute: the request budget (``None``: unlimited until learned).
        tokens_per_minute: the token budget (``None``: unlimited until learned).
        name: shown in ``repr`` (e.g. the base URL).
        clock: monotonic seconds; ``sleep``: how to wait (tests pass fakes).

    Example:
        >>> import asyncio
        >>> limiter = ProviderLimiter(requests_per_minute=600, tokens_per_minute=90_000)
        >>> async def call():
        ...     async with limiter.request(tokens=120):
        ...         return "sent"
        >>> asyncio.run(call())
        'sent'
        >>> limiter
        <ProviderLimiter 599/600 requests, 89880/90000 tokens per minute, 0 in flight>
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        _check_limit("requests_per_minute", requests_per_minute)
        _check_limit("tokens_per_minute", tokens_per_minute)
        self.name = name
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._manual: dict[str, float | None] = {
            "requests": requests_per_minute,
            "tokens": tokens_per_minute,
        }
        self._learned: dict[str, float | None] = {"requests": None, "tokens": None}
        self._buckets = {
            "requests": _Bucket(requests_per_minute, now),
            "tokens": _Bucket(tokens_per_minute, now),
        }
        self._paused_until = -math.inf
        self._pauses = 0
        self._in_flight = 0
        self._waiting = 0
        self._lock = asyncio.Lock()
        # Before any limit is known, one request goes first and the rest wait for its
        # answer's headers: a burst of blind requests is what draws the 429s.
        self._probe_out = False
        self._heard = asyncio.Event()

    # -- limits -------------------------------------------------------------------------

    def set_limits(
        self, *, requests_per_minute: float | None = None, tokens_per_minute: float | None = None
    ) -> None:
        """Set limits by hand (those given; ``None`` leaves one as it is)."""
        for kind, value in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
            if value is not None:
                _check_limit(f"{kind}_per_minute", value)
                self._manual[kind] = value
                self._apply(kind)

    def _apply(self, kind: str) -> None:
        known = [v for v in (self._manual[kind], self._learned[kind]) if v is not None]
        self._buckets[kind].set_limit(min(known) if known else None, self._clock())

    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Learn limits and what is left from ``x-ratelimit-*`` response headers.

        ``x-ratelimit-limit-requests`` / ``-tokens`` set the limit (the lower of it
        and a hand-set one is used); ``x-ratelimit-remaining-*`` lowers what the
        budget holds now; ``x-ratelimit-reset-*`` (``"6m0s"``, ``"20ms"``), when
        the remaining budget is 0, pauses until then or until one more unit has
        refilled at the limit's pace, whichever is sooner. Unreadable values are ignored.
        """
        self._hear()
        lower = {k.lower(): v for k, v in headers.items()}
        now = self._clock()
        for kind in ("requests", "tokens"):
            limit = _number(lower.get(f"x-ratelimit-limit-{kind}"))
            if limit is not None and limit > 0 and limit != self._learned[kind]:
                self._learned[kind] = limit
                self._apply(kind)
            remaining = _number(lower.get(f"x-ratelimit-remaining-{kind}"))
            bucket = self._buckets[kind]
            if remaining is not None and bucket.limit is not None:
                bucket.refill(now)
                bucket.level = min(bucket.level, remaining)
                reset = parse_duration(lower.get(f"x-ratelimit-reset-{kind}", ""))
                if remaining <= 0 and reset:
                    # OpenAI's reset is when the budget is full again; the next one
                    # request is due when one unit has refilled, if that is sooner.
                    wait = min(reset, 60.0 / bucket.limit) if bucket.limit > 0 else reset
                    self._paused_until = max(self._paused_until, now + wait)

    def pause(self, seconds: float) -> None:
        """Let no one start a request for ``seconds`` (the longest pause wins)."""
        check_non_negative("seconds", seconds, allow_none=False)
        until = self._clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
        self._pauses += 1

    # -- granting ---------------------------------------------------------------------------

    async def acquire(self, tokens: int = 0) -> None:
        """Wait for one request and ``tokens`` tokens, and take them (no probe: a
        caller of :meth:`acquire` may never report an answer)."""
        if await self._acquire(tokens):
            self._hear()

    def _blind(self) -> bool:
        """No limit is known and no answer has been heard from the provider yet."""
        return not self._heard.is_set() and all(
            bucket.limit is None for bucket in self._buckets.values()
        )

    def _hear(self) -> None:
        """An answer came back (or the first request ended without one): stop probing."""
        self._heard.set()

    async def _acquire(self, tokens: int) -> bool:
        """:meth:`acquire`; whether this request is the probe sent before any limit
        is known (whose end, answered or not, lets the others go)."""
        check_non_negative("tokens", tokens, allow_none=False)
        self._waiting += 1
        try:
            async with self._lock:  # first come, first served
                if self._blind():
                    if not self._probe_out:
                        self._probe_out = True
                        return True
                    await self._heard.wait()
                while True:
                    now = self._clock()
                    delay = self._paused_until - now
                    if delay <= 0:
                        for bucket in self._buckets.values():
                            bucket.refill(now)
                        requests, budget = self._buckets["requests"], self._buckets["tokens"]
                        delay = max(requests.wait_for(1), budget.wait_for(tokens))
                        if delay <= 0:
                            requests.level -= 1
                            budget.level -= min(tokens, budget.limit or math.inf)
                            return False
                    await self._sleep(delay)
        finally:
            self._waiting -= 1

    @asynccontextmanager
    async def request(self, tokens: int = 0) -> AsyncIterator[None]:
        """``async with limiter.request(tokens=n):`` wait for the budget, then run
        the body (counted as in flight)."""
        probe = await self._acquire(tokens)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if probe:
                self._hear()

    def statistics(self) -> ProviderLimiterStatistics:
        """A snapshot: limits, budgets left, in flight, waiting, pause."""
        now = self._clock()
        for bucket in self._buckets.values():
            bucket.refill(now)
        requests, budget = self._buckets["requests"], self._buckets["tokens"]
        return ProviderLimiterStatistics(
            requests_per_minute=requests.limit,
            tokens_per_minute=budget.limit,
            requests_available=requests.level,
            tokens_available=budget.level,
            in_flight=self._in_flight,
            waiting=self._waiting,
            paused_for=max(self._paused_until - now, 0.0),
            pauses=self._pauses,
        )

    def __repr__(self) -> str:
        stats = self.statistics()
        name = f" {self.name}" if self.name else ""

        def budget(level: float, limit: float | None, unit: str) -> str:
            return f"unlimited {unit}" if limit is None else f"{level:.0f}/{limit:g} {unit}"

        paused = f", paused {stats.paused_for:.1f} s" if stats.paused_for > 0 else ""
        return (
            f"<ProviderLimiter{name} "
            f"{budget(stats.requests_available, stats.requests_per_minute, 'requests')}, "
            f"{budget(stats.tokens_available, stats.tokens_per_minute, 'tokens')} per minute, "
            f"{stats.in_flight} in flight{paused}>"
        )


def _check_limit(name: str, value: float | None) -> None:
    check_non_negative(name, value, allow_none=True)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got 0")


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
