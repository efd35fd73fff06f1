"""``Progress`` (pocketbatch/batch/_progress.py), driven by a fake clock.

A tqdm bar on a terminal; plain ``pocketbatch: ...`` lines every ``interval`` seconds
when the stream is not a terminal; nothing while running when disabled; a one-line
summary (total, succeeded, failed, wall time, items/s) either way.
"""

from __future__ import annotations

import io

import pytest

from pocketbatch.batch._progress import Progress


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_plain_lines_every_interval_when_not_a_terminal() -> None:
    clock = Clock(100.0)
    stream = io.StringIO()
    progress = Progress(20, stream=stream, interval=5.0, clock=clock)
    for _ in range(12):  # one item per second, from t=101 to t=112
        clock.now += 1
        progress.update(ok=True)
    progress.close()
    lines = stream.getvalue().splitlines()
    # a line at t=105 (5 done) and the next one interval later, at t=110 (10 done)
    assert lines == [
        "pocketbatch: 5/20 done, 0 failed, 1.0 items/s, ETA 15s",
        "pocketbatch: 10/20 done, 0 failed, 1.0 items/s, ETA 10s",
    ]


def test_plain_lines_are_not_written_more_than_once_per_interval() -> None:
    clock = Clock(0.0)
    stream = io.StringIO()
    progress = Progress(None, stream=stream, interval=5.0, clock=clock)
    for step in range(1000):  # 1000 items over 10 s
        clock.now = step / 100
        progress.update(ok=True)
    assert len(stream.getvalue().splitlines()) == 1  # at t=5.0 only (next due at 10.0)


def test_plain_line_after_a_long_gap_resets_the_schedule() -> None:
    clock = Clock(0.0)
    stream = io.StringIO()
    progress = Progress(None, stream=stream, interval=5.0, clock=clock)
    clock.now = 60.0
    progress.update(ok=True)
    clock.now = 61.0
    progress.update(ok=True)  # next line due at 65, not every item from 10 to 60
    clock.now = 65.0
    progress.update(ok=False)
    assert stream.getvalue().splitlines() == [
        "pocketbatch: 1 done, 0 failed, 0.0 items/s",
        "pocketbatch: 3 done, 1 failed, 0.0 items/s",
    ]


def test_line_counts_failures_and_rate() -> None:
    clock = Clock(0.0)
    progress = Progress(100, enabled=False, clock=clock)
    for i in range(10):
        progress.update(ok=i % 4 != 0)  # 0, 4, 8 fail
    clock.now = 4.0
    assert progress.line() == "10/100 done, 3 failed, 2.5 items/s, ETA 36s"
    assert progress.line(now=10.0) == "10/100 done, 3 failed, 1.0 items/s, ETA 1m30s"


@pytest.mark.parametrize(
    ("total", "done", "elapsed", "eta"),
    [
        (10, 5, 5.0, "ETA 5s"),
        (100, 10, 10.0, "ETA 1m30s"),
        (100, 1, 1.0, "ETA 1m39s"),
        (10_000, 1, 1.0, "ETA 2h46m"),
        (3_600, 1, 1.0, "ETA 59m59s"),
        (10, 10, 1.0, "ETA 0s"),
    ],
)
def test_eta(total: int, done: int, elapsed: float, eta: str) -> None:
    clock = Clock(0.0)
    progress = Progress(total, enabled=False, clock=clock)
    for _ in range(done):
        progress.update(ok=True)
    clock.now = elapsed
    assert progress.line().endswith(f", {eta}"), progress.line()


def test_no_eta_without_a_total_or_a_rate() -> None:
    clock = Clock(0.0)
    progress = Progress(None, enabled=False, clock=clock)
    progress.update(ok=True)
    clock.now = 2.0
    assert progress.line() == "1 done, 0 failed, 0.5 items/s"
    fresh = Progress(5, enabled=False, clock=Clock(0.0))
    assert fresh.line() == "0/5 done, 0 failed, 0.0 items/s"  # no rate yet, no ETA


def test_summary() -> None:
    clock = Clock(50.0)
    progress = Progress(4, enabled=False, clock=clock)
    for ok in (True, False, True, False):
        progress.update(ok=ok)
    clock.now = 52.0
    assert progress.summary() == "total 4, succeeded 2, failed 2, wall 2.0 s, 2.0 items/s"
    assert (progress.done, progress.failed) == (4, 2)


def test_summary_with_no_time_elapsed_or_no_items() -> None:
    progress = Progress(0, enabled=False, clock=Clock(1.0))
    assert progress.summary() == "total 0, succeeded 0, failed 0, wall 0.0 s, 0.0 items/s"


def test_disabled_writes_nothing() -> None:
    clock = Clock(0.0)
    stream = io.StringIO()
    tty = Terminal()
    for target in (stream, tty):
        progress = Progress(100, enabled=False, stream=target, interval=1.0, clock=clock)
        for _ in range(100):
            clock.now += 1
            progress.update(ok=False)
        progress.close()
    assert stream.getvalue() == ""
    assert tty.getvalue() == ""


def test_tqdm_bar_on_a_terminal() -> None:
    clock = Clock(0.0)
    stream = Terminal()
    progress = Progress(10, stream=stream, interval=1.0, clock=clock)
    assert progress._bar is not None
    from tqdm import tqdm

    assert isinstance(progress._bar, tqdm)
    for i in range(10):
        clock.now += 1
        progress.update(ok=i != 3)
    progress.close()
    progress.close()  # closing twice is harmless
    text = stream.getvalue()
    assert "10/10" in text
    assert "item" in text  # the unit
    assert "failed=1" in text
    assert "pocketbatch:" not in text  # no plain lines on a terminal
    assert progress.summary() == "total 10, succeeded 9, failed 1, wall 10.0 s, 1.0 items/s"


def test_tqdm_bar_without_a_total() -> None:
    stream = Terminal()
    progress = Progress(None, stream=stream, clock=Clock(0.0))
    for _ in range(3):
        progress.update(ok=True)
    progress.close()
    assert "3" in stream.getvalue()
