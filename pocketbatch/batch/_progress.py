"""Progress of a batch on stderr: a bar on a terminal, plain lines elsewhere, a summary.

On a terminal: a tqdm bar with items done, failures, items/s and ETA. Otherwise
(a log file, CI): a plain line every ``interval`` seconds. Either way, a one-line
summary at the end: total, succeeded, failed, wall time, items/s. When the run's
HTTP builtins spent anything (a :class:`~pocketbatch.Usage`: requests, tokens in
and out, 429s, retries, cache hits), the bar, the lines and the summary show it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from pocketbatch.core import Usage

__all__ = ("Progress",)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts finished items and reports them.

    Args:
        total: how many items there are, when known (for the bar and ETA).
        enabled: report while running (the summary is always available).
        stream: where to write (stderr).
        interval: seconds between plain-text lines.
        clock: monotonic seconds (tests pass a fake one).
        usage: the run's live usage counters, shown when not all zero (also
            settable later, as the attribute ``usage``).

    Example:
        >>> import io
        >>> ticks = iter([0.0, 2.0])
        >>> progress = Progress(2, enabled=False, clock=lambda: next(ticks))
        >>> progress.update(ok=True)
        >>> progress.update(ok=False)
        >>> progress.summary()
        'total 2, succeeded 1, failed 1, wall 2.0 s, 1.0 items/s'
    """

    def __init__(
        self,
        total: int | None,
        *,
        enabled: bool = True,
        stream: IO[str] | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        usage: Usage | None = None,
    ) -> None:
        self.total = total
        self.usage = usage
        self.done = 0
        self.failed = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._interval = interval
        self._next_line = self._start + interval
        self._bar: Any = None
        self._plain = False
        if enabled:
            if getattr(self._stream, "isatty", lambda: False)():
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total, file=self._stream, unit="item", dynamic_ncols=True, smoothing=0.1
                )
            else:
                self._plain = True

    def update(self, *, ok: bool) -> None:
        """Count one finished item."""
        self.done += 1
        if not ok:
            self.failed += 1
        if self._bar is not None:
            self._bar.update(1)
            if self.usage:
                self._bar.set_postfix(
                    failed=self.failed,
                    tokens=f"{self.usage.tokens_in}/{self.usage.tokens_out}",
                    req=self.usage.requests,
                    r429=self.usage.rate_limited,
                    retries=self.usage.retries,
                    cached=self.usage.cache_hits,
                    refresh=False,
                )
            elif not ok:
                self._bar.set_postfix(failed=self.failed, refresh=False)
        elif self._plain:
            now = self._clock()
            if now >= self._next_line:
                self._next_line = now + self._interval
                print(f"pocketbatch: {self.line(now)}", file=self._stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """``1200/100000 done, 3 failed, 950.0 items/s, ETA 1m44s``."""
        elapsed = (self._clock() if now is None else now) - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        text = f"{self.done}{of} done, {self.failed} failed, {rate:.1f} items/s"
        if self.total is not None and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text + self._spent()

    def _spent(self) -> str:
        return f"; {self.usage.summary()}" if self.usage else ""

    def summary(self) -> str:
        """``total N, succeeded S, failed F, wall T s, R items/s``."""
        elapsed = self._clock() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return (
            f"total {self.done}, succeeded {self.done - self.failed}, failed {self.failed}, "
            f"wall {elapsed:.1f} s, {rate:.1f} items/s"
        ) + self._spent()

    def close(self) -> None:
        """Stop reporting (closes the bar)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
