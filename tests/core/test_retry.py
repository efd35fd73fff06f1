"""Retries of Node, AsyncNode, BatchNode and friends: delays, retry_on, timeouts, checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pocketbatch import (
    AsyncBatchNode,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Event,
    EventKind,
    ItemError,
    Node,
    NodeTimeoutError,
    PocketbatchError,
)

# ---------------------------------------------------------------- helpers


class AlwaysFails(Node):
    """Counts attempts and always raises ConnectionError."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def exec(self, prep_res: Any) -> Any:
        self.calls += 1
        raise ConnectionError(f"attempt {self.calls}")

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        return ("fallback", exc)

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


class AsyncAlwaysFails(AsyncNode):
    """Async twin of AlwaysFails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    async def exec_async(self, prep_res: Any) -> Any:
        self.calls += 1
        raise ConnectionError(f"attempt {self.calls}")

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        return ("fallback", exc)

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


class Raises(Node):
    """Raises the exception given in the constructor on every attempt."""

    def __init__(self, exc: Exception, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exc = exc
        self.calls = 0

    def exec(self, prep_res: Any) -> Any:
        self.calls += 1
        raise self.exc

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        return ("fallback", exc)

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


def retried(events: list[Event]) -> list[Event]:
    """Only the RETRIED events."""
    return [e for e in events if e.kind is EventKind.RETRIED]


# ---------------------------------------------------------------- delays


def test_backoff_doubles_delay_sync() -> None:
    """wait=0.001, backoff=2 gives RETRIED delays 0.001, 0.002, 0.004 on a sync Node."""
    node = AlwaysFails(max_retries=4, wait=0.001, backoff=2)
    events: list[Event] = []
    shared: dict[str, Any] = {}
    node.run(shared, observer=events.append)
    delays = [e.delay for e in retried(events)]
    assert delays == pytest.approx([0.001, 0.002, 0.004])
    assert node.calls == 4
    assert shared["out"][0] == "fallback"


def test_retried_event_fields() -> None:
    """RETRIED events carry the node name, the failed attempt (from 1) and the exception."""
    node = AlwaysFails(max_retries=3, wait=0.001, name="flaky")
    events: list[Event] = []
    node.run({}, observer=events.append)
    r = retried(events)
    assert [e.attempt for e in r] == [1, 2]
    assert [e.node for e in r] == ["flaky", "flaky"]
    assert [str(e.error) for e in r] == ["attempt 1", "attempt 2"]
    assert all(e.item is None for e in r)


def test_constant_wait_without_backoff() -> None:
    """With the default backoff of 1 every delay equals wait."""
    node = AlwaysFails(max_retries=3, wait=0.001)
    events: list[Event] = []
    node.run({}, observer=events.append)
    assert [e.delay for e in retried(events)] == pytest.approx([0.001, 0.001])


def test_zero_wait_gives_zero_delays() -> None:
    """wait=0 (the default) reports delay 0 for each retry."""
    node = AlwaysFails(max_retries=3)
    events: list[Event] = []
    node.run({}, observer=events.append)
    assert [e.delay for e in retried(events)] == [0.0, 0.0]


@pytest.mark.asyncio
async def test_backoff_doubles_delay_async() -> None:
    """AsyncNode reports the same backoff delays as Node."""
    node = AsyncAlwaysFails(max_retries=4, wait=0.001, backoff=2)
    events: list[Event] = []
    shared: dict[str, Any] = {}
    await node.run_async(shared, observer=events.append)
    assert [e.delay for e in retried(events)] == pytest.approx([0.001, 0.002, 0.004])
    assert node.calls == 4
    assert shared["out"][0] == "fallback"


def test_max_wait_caps_delay() -> None:
    """max_wait caps the grown delay."""
    node = AlwaysFails(max_retries=5, wait=0.001, backoff=3, max_wait=0.002)
    events: list[Event] = []
    node.run({}, observer=events.append)
    assert [e.delay for e in retried(events)] == pytest.approx([0.001, 0.002, 0.002, 0.002])


@pytest.mark.asyncio
async def test_max_wait_caps_delay_async() -> None:
    """max_wait caps the delay of an AsyncNode too."""
    node = AsyncAlwaysFails(max_retries=4, wait=0.001, backoff=10, max_wait=0.0015)
    events: list[Event] = []
    await node.run_async({}, observer=events.append)
    assert [e.delay for e in retried(events)] == pytest.approx([0.001, 0.0015, 0.0015])


def test_jitter_adds_within_range() -> None:
    """jitter adds a random amount in [0, jitter) to every delay."""
    node = AlwaysFails(max_retries=20, wait=0.0001, backoff=1, jitter=0.0002)
    events: list[Event] = []
    node.run({}, observer=events.append)
    delays = [e.delay for e in retried(events)]
    assert len(delays) == 19
    for d in delays:
        assert d is not None
        assert 0.0001 <= d < 0.0003


def test_jitter_applies_after_max_wait_cap() -> None:
    """jitter is added on top of the capped delay (delay in [max_wait, max_wait + jitter))."""
    node = AlwaysFails(max_retries=6, wait=0.001, backoff=10, max_wait=0.0005, jitter=0.0005)
    events: list[Event] = []
    node.run({}, observer=events.append)
    for d in [e.delay for e in retried(events)]:
        assert d is not None
        assert 0.0005 <= d < 0.001


def test_batch_node_retry_events_carry_item_index() -> None:
    """A BatchNode's RETRIED events name the item and restart the backoff per item."""

    class Batch(BatchNode):
        def prep(self, shared: Any) -> Any:
            return ["a", "b"]

        def exec(self, item: Any) -> Any:
            if self.cur_retry < 2:
                raise ConnectionError(item)
            return item.upper()

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res

    events: list[Event] = []
    shared: dict[str, Any] = {}
    Batch(max_retries=3, wait=0.001, backoff=2).run(shared, observer=events.append)
    assert shared["out"] == ["A", "B"]
    r = retried(events)
    assert [(e.item, e.attempt) for e in r] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert [e.delay for e in r] == pytest.approx([0.001, 0.002, 0.001, 0.002])


def test_cur_retry_counts_attempts_from_zero() -> None:
    """self.cur_retry is 0, 1, 2 on successive attempts."""
    seen: list[int] = []

    class Flaky(Node):
        def exec(self, prep_res: Any) -> Any:
            seen.append(self.cur_retry)
            if self.cur_retry < 2:
                raise ValueError("again")
            return "ok"

    Flaky(max_retries=5).run({})
    assert seen == [0, 1, 2]


def test_no_fallback_reraises_last_exception() -> None:
    """Without an exec_fallback override the last exception propagates."""

    class Boom(Node):
        def exec(self, prep_res: Any) -> Any:
            raise KeyError(self.cur_retry)

    with pytest.raises(KeyError) as info:
        Boom(max_retries=3).run({})
    assert info.value.args == (2,)


# ---------------------------------------------------------------- retry_on


def test_retry_on_non_matching_goes_straight_to_fallback() -> None:
    """retry_on=(ConnectionError,): a ValueError reaches exec_fallback after 1 attempt."""
    err = ValueError("bad input")
    node = Raises(err, max_retries=5, retry_on=(ConnectionError,))
    events: list[Event] = []
    shared: dict[str, Any] = {}
    node.run(shared, observer=events.append)
    assert node.calls == 1
    assert shared["out"] == ("fallback", err)
    assert retried(events) == []


def test_retry_on_matching_is_retried() -> None:
    """retry_on=(ConnectionError,): a ConnectionError is retried max_retries times."""
    err = ConnectionError("down")
    node = Raises(err, max_retries=3, retry_on=(ConnectionError,))
    shared: dict[str, Any] = {}
    node.run(shared)
    assert node.calls == 3
    assert shared["out"] == ("fallback", err)


def test_retry_on_matches_subclasses() -> None:
    """retry_on=OSError (a bare type) also retries its subclass ConnectionError."""
    node = Raises(ConnectionError("down"), max_retries=3, retry_on=OSError)
    node.run({})
    assert node.calls == 3
    assert node._pb_retry_on == (OSError,)


@pytest.mark.asyncio
async def test_retry_on_async() -> None:
    """AsyncNode honours retry_on: a non-matching exception is not retried."""

    class A(AsyncNode):
        calls = 0

        async def exec_async(self, prep_res: Any) -> Any:
            self.calls += 1
            raise ValueError("no")

        async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
            return exc

    node = A(max_retries=4, retry_on=(ConnectionError,))
    await node.run_async({})
    assert node.calls == 1


@pytest.mark.parametrize(
    "bad",
    [int, "ConnectionError", ValueError("instance"), (ValueError, 3), (ConnectionError, object)],
)
def test_retry_on_non_exception_is_type_error(bad: Any) -> None:
    """retry_on that is not an exception type (or tuple of them) raises TypeError."""
    with pytest.raises(TypeError, match="retry_on"):
        Node(retry_on=bad)


# ---------------------------------------------------------------- timeout


class Hangs(AsyncNode):
    """exec_async awaits an Event that never fires."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.fallback_exc: Exception | None = None

    async def exec_async(self, prep_res: Any) -> Any:
        self.calls += 1
        await asyncio.Event().wait()

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        self.fallback_exc = exc
        return "fell back"

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


@pytest.mark.asyncio
async def test_timeout_is_retried_then_fallback() -> None:
    """A hung exec_async times out per attempt, is retried max_retries times, then falls back."""
    node = Hangs(max_retries=3, timeout=0.01, name="hang")
    events: list[Event] = []
    shared: dict[str, Any] = {}
    await node.run_async(shared, observer=events.append)
    assert node.calls == 3
    assert shared["out"] == "fell back"
    exc = node.fallback_exc
    assert isinstance(exc, NodeTimeoutError)
    assert (exc.node, exc.attempt, exc.timeout) == ("hang", 3, 0.01)
    r = retried(events)
    assert [e.attempt for e in r] == [1, 2]
    assert all(isinstance(e.error, NodeTimeoutError) for e in r)
    assert [e.error.attempt for e in r] == [1, 2]  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_timeout_error_is_timeout_and_pocketbatch_error() -> None:
    """Without a fallback NodeTimeoutError propagates; it is a TimeoutError and PocketbatchError."""

    class Plain(AsyncNode):
        async def exec_async(self, prep_res: Any) -> Any:
            await asyncio.Event().wait()

    with pytest.raises(NodeTimeoutError) as info:
        await Plain(timeout=0.01).run_async({})
    exc = info.value
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, PocketbatchError)
    assert exc.node == "Plain"
    assert exc.attempt == 1
    assert exc.timeout == 0.01


@pytest.mark.asyncio
async def test_timeout_not_retried_when_not_in_retry_on() -> None:
    """A NodeTimeoutError is not retried when retry_on does not cover TimeoutError."""
    node = Hangs(max_retries=3, timeout=0.01, retry_on=(ConnectionError,))
    await node.run_async({})
    assert node.calls == 1
    assert isinstance(node.fallback_exc, NodeTimeoutError)


@pytest.mark.asyncio
async def test_timeout_retried_when_retry_on_timeout_error() -> None:
    """retry_on=(TimeoutError,) covers NodeTimeoutError."""
    node = Hangs(max_retries=2, timeout=0.01, retry_on=(TimeoutError,))
    await node.run_async({})
    assert node.calls == 2


@pytest.mark.asyncio
async def test_user_timeout_error_passes_through_unchanged() -> None:
    """A TimeoutError raised by exec_async itself is not turned into NodeTimeoutError."""
    mine = TimeoutError("my own")

    class Own(AsyncNode):
        calls = 0

        async def exec_async(self, prep_res: Any) -> Any:
            self.calls += 1
            raise mine

    node = Own(max_retries=2, timeout=5)
    with pytest.raises(TimeoutError) as info:
        await node.run_async({})
    assert info.value is mine
    assert type(info.value) is TimeoutError
    assert node.calls == 2


@pytest.mark.asyncio
async def test_fast_exec_within_timeout_succeeds() -> None:
    """An exec_async that finishes in time returns normally under a timeout."""

    class Quick(AsyncNode):
        async def exec_async(self, prep_res: Any) -> Any:
            await asyncio.sleep(0)
            return 42

        async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res

    shared: dict[str, Any] = {}
    await Quick(timeout=5).run_async(shared)
    assert shared["out"] == 42


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "exc_type", "arg"),
    [
        ({"max_retries": 0}, ValueError, "max_retries"),
        ({"max_retries": -3}, ValueError, "max_retries"),
        ({"max_retries": 1.5}, TypeError, "max_retries"),
        ({"max_retries": True}, TypeError, "max_retries"),
        ({"wait": -1}, ValueError, "wait"),
        ({"wait": float("nan")}, ValueError, "wait"),
        ({"wait": "1"}, TypeError, "wait"),
        ({"backoff": "x"}, TypeError, "backoff"),
        ({"backoff": -2}, ValueError, "backoff"),
        ({"max_wait": -1}, ValueError, "max_wait"),
        ({"jitter": -0.1}, ValueError, "jitter"),
    ],
)
def test_invalid_options_name_the_argument(
    kwargs: dict[str, Any], exc_type: type[Exception], arg: str
) -> None:
    """An out-of-range or mistyped option raises an error whose message names it."""
    with pytest.raises(exc_type, match=arg):
        Node(**kwargs)
    with pytest.raises(exc_type, match=arg):
        BatchNode(**kwargs)
    with pytest.raises(exc_type, match=arg):
        AsyncNode(**kwargs)


@pytest.mark.parametrize(
    ("timeout", "exc_type"), [(0, ValueError), (-1, ValueError), ("5", TypeError)]
)
def test_invalid_timeout_names_the_argument(timeout: Any, exc_type: type[Exception]) -> None:
    """timeout=0 (or negative, or not a number) is rejected with a message naming timeout."""
    for cls in (AsyncNode, AsyncBatchNode, AsyncParallelBatchNode):
        with pytest.raises(exc_type, match="timeout"):
            cls(timeout=timeout)


@pytest.mark.parametrize(
    "cls", [Node, BatchNode, AsyncNode, AsyncBatchNode, AsyncParallelBatchNode]
)
def test_unknown_keyword_is_type_error_naming_it(cls: type[Node]) -> None:
    """An unknown keyword argument raises TypeError naming it."""
    with pytest.raises(TypeError, match="retries_max"):
        cls(retries_max=3)  # type: ignore[call-arg]


def test_valid_options_are_stored() -> None:
    """Accepted options land on the node."""
    node = Node(max_retries=3, wait=0.5, backoff=2.0, max_wait=10, jitter=0.1, name="n")
    assert (node.max_retries, node.wait, node._pb_backoff, node._pb_max_wait, node._pb_jitter) == (
        3,
        0.5,
        2.0,
        10,
        0.1,
    )
    assert node.name == "n"
    assert Node()._pb_retry_on == (Exception,)


# ---------------------------------------------------------------- ItemError.attempts


class FlakyBatch(BatchNode):
    """Item 'ok' succeeds, 'once' fails on its first attempt, 'never' always fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tries: dict[str, int] = {}

    def prep(self, shared: Any) -> Any:
        return shared["items"]

    def exec(self, item: str) -> Any:
        n = self.tries[item] = self.tries.get(item, 0) + 1
        if item == "never" or (item == "once" and n == 1):
            raise ConnectionError(item)
        if item == "value":
            raise ValueError(item)
        return item

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


class AsyncFlakyBatch(AsyncBatchNode):
    """Async twin of FlakyBatch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tries: dict[str, int] = {}

    async def prep_async(self, shared: Any) -> Any:
        return shared["items"]

    async def exec_async(self, item: str) -> Any:
        n = self.tries[item] = self.tries.get(item, 0) + 1
        if item == "never" or (item == "once" and n == 1):
            raise ConnectionError(item)
        if item == "value":
            raise ValueError(item)
        return item

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res


ITEMS = ["ok", "never", "once", "value"]


def check_collected(out: list[Any], max_retries: int) -> None:
    assert out[0] == "ok"
    assert isinstance(out[1], ItemError)
    assert out[1].index == 1
    assert out[1].attempts == max_retries
    assert isinstance(out[1].exception, ConnectionError)
    assert out[2] == "once"
    assert isinstance(out[3], ItemError)
    assert out[3].index == 3
    assert out[3].attempts == 1  # not in retry_on
    assert isinstance(out[3].exception, ValueError)


@pytest.mark.parametrize("max_retries", [1, 2, 4])
def test_item_error_attempts_batch_node(max_retries: int) -> None:
    """BatchNode collect: ItemError.attempts is the number of attempts made."""
    shared: dict[str, Any] = {"items": ITEMS if max_retries > 1 else ["ok", "never"]}
    node = FlakyBatch(max_retries, on_item_error="collect", retry_on=ConnectionError)
    node.run(shared)
    if max_retries == 1:
        assert shared["out"][0] == "ok"
        assert shared["out"][1] == ItemError(1, shared["out"][1].exception, 1)
    else:
        check_collected(shared["out"], max_retries)
        assert node.tries == {"ok": 1, "never": max_retries, "once": 2, "value": 1}


@pytest.mark.asyncio
@pytest.mark.parametrize("max_retries", [2, 3])
async def test_item_error_attempts_async_batch_node(max_retries: int) -> None:
    """AsyncBatchNode collect: ItemError.attempts is the number of attempts made."""
    shared: dict[str, Any] = {"items": ITEMS}
    node = AsyncFlakyBatch(max_retries, on_item_error="collect", retry_on=ConnectionError)
    await node.run_async(shared)
    check_collected(shared["out"], max_retries)
    assert node.tries == {"ok": 1, "never": max_retries, "once": 2, "value": 1}


@pytest.mark.asyncio
async def test_item_failed_event_attempt_matches_item_error() -> None:
    """The ITEM_FAILED event's attempt equals ItemError.attempts."""
    shared: dict[str, Any] = {"items": ITEMS}
    events: list[Event] = []
    node = AsyncFlakyBatch(3, on_item_error="collect", retry_on=ConnectionError)
    await node.run_async(shared, observer=events.append)
    failed = [(e.item, e.attempt) for e in events if e.kind is EventKind.ITEM_FAILED]
    assert failed == [(1, 3), (3, 1)]


def test_batch_node_raise_mode_raises_after_retries() -> None:
    """BatchNode raise mode: the failing item's last exception propagates after its retries."""
    node = FlakyBatch(3, retry_on=ConnectionError)
    with pytest.raises(ConnectionError, match="never"):
        node.run({"items": ["ok", "never", "once"]})
    assert node.tries == {"ok": 1, "never": 3}


# ---------------------------------------------------------------- cur_retry under concurrency


@pytest.mark.asyncio
async def test_cur_retry_is_per_item_in_async_parallel_batch() -> None:
    """During exec_async, self.cur_retry is this item's own attempt number, despite concurrency."""
    second_attempt_started = asyncio.Event()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    class Par(AsyncParallelBatchNode):
        async def prep_async(self, shared: Any) -> Any:
            return ["a", "b"]

        async def exec_async(self, item: str) -> Any:
            if item == "a":
                seen["a"].append(self.cur_retry)
                await second_attempt_started.wait()
                seen["a"].append(self.cur_retry)  # still attempt 0 of item "a"
                return item
            seen["b"].append(self.cur_retry)
            if self.cur_retry == 0:
                raise ConnectionError("retry b")
            second_attempt_started.set()
            return item

    await Par(max_retries=2).run_async({})
    assert seen["b"] == [0, 1]
    assert seen["a"] == [0, 0]
