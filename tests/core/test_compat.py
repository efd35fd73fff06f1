"""PocketFlow behaviours pocketbatch must keep, one test (or small group) per behaviour.

Everything here is written against PocketFlow's public API only, imported from
``pocketbatch``: code written for PocketFlow must run unchanged after switching the
import. PocketFlow's reference source is 100 lines; each docstring names what it pins.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pocketbatch import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BaseNode,
    BatchFlow,
    BatchNode,
    Flow,
    Node,
)

GUARD = 5  # seconds; only so that a concurrency bug fails instead of hanging


@contextmanager
def recorded_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning raised in the block (overriding filterwarnings=error)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def messages(caught: list[warnings.WarningMessage]) -> list[tuple[type[Warning], str]]:
    return [(w.category, str(w.message)) for w in caught]


class Say(Node):
    """Appends its word to shared["trail"] and returns it as the action."""

    def __init__(self, word: str, action: str | None = None) -> None:
        super().__init__()
        self.word, self.action_out = word, action

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("trail", []).append(self.word)
        return self.action_out


class ASay(AsyncNode):
    """Async twin of Say."""

    def __init__(self, word: str, action: str | None = None) -> None:
        super().__init__()
        self.word, self.action_out = word, action

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        await asyncio.sleep(0)
        shared.setdefault("trail", []).append(self.word)
        return self.action_out


# -- hooks are called positionally ---------------------------------------------------


def test_sync_hooks_are_called_positionally() -> None:
    """prep/exec/post/exec_fallback overridden with unusual parameter names still work."""

    class Odd(Node):
        def prep(self, s):
            return s["x"]

        def exec(self, x):
            raise ValueError(f"bad {x}")

        def exec_fallback(self, p, e):
            return ("fallback", p, str(e))

        def post(self, s, a, b):
            s["out"] = (a, b)
            return "done"

    shared = {"x": 7}
    assert Odd().run(shared) == "done"
    assert shared["out"] == (7, ("fallback", 7, "bad 7"))
    shared = {"x": 8}
    assert Flow(start=Odd()).run(shared) == "done"
    assert shared["out"] == (8, ("fallback", 8, "bad 8"))


@pytest.mark.asyncio
async def test_async_hooks_are_called_positionally() -> None:
    """prep_async/exec_async/post_async/exec_fallback_async with unusual names still work."""

    class Odd(AsyncNode):
        async def prep_async(self, s):
            return s["x"]

        async def exec_async(self, x):
            raise ValueError(f"bad {x}")

        async def exec_fallback_async(self, p, e):
            return ("fallback", p, str(e))

        async def post_async(self, s, a, b):
            s["out"] = (a, b)
            return "done"

    shared = {"x": 7}
    assert await Odd().run_async(shared) == "done"
    assert shared["out"] == (7, ("fallback", 7, "bad 7"))
    shared = {"x": 8}
    assert await AsyncFlow(start=Odd()).run_async(shared) == "done"
    assert shared["out"] == (8, ("fallback", 8, "bad 8"))


def test_batch_and_flow_hooks_are_called_positionally() -> None:
    """BatchNode and BatchFlow hooks with unusual parameter names still work."""

    class Items(BatchNode):
        def prep(self, s):
            return s["xs"]

        def exec(self, one):
            return one * 10

        def post(self, s, a, b):
            s["batch"] = (a, b)

    class Runs(BatchFlow):
        def prep(self, s):
            return [{"k": 1}]

        def post(self, s, a, b):
            s["flow"] = (a, b)
            return "flow-done"

    shared = {"xs": [1, 2]}
    assert Runs(start=Items()).run(shared) == "flow-done"
    assert shared["batch"] == ([1, 2], [10, 20])
    assert shared["flow"] == ([{"k": 1}], None)


# -- wiring: params, successors, next, >>, - "action" >> ---------------------------------


def test_params_and_set_params() -> None:
    """A node starts with params == {} and set_params replaces them."""
    node = Node()
    assert node.params == {}
    node.set_params({"lang": "fr"})
    assert node.params == {"lang": "fr"}
    node.set_params({"other": 1})
    assert node.params == {"other": 1}


def test_next_returns_the_node_and_records_the_successor() -> None:
    """next(node, action="default") stores successors[action] and returns node."""
    a, b, c = Node(), Node(), Node()
    assert a.successors == {}
    assert a.next(b) is b
    assert a.next(c, "other") is c
    assert a.successors == {"default": b, "other": c}


def test_rshift_returns_right_hand_node_so_it_chains() -> None:
    """a >> b >> c wires a->b->c on "default" and evaluates to c."""
    a, b, c = Node(), Node(), Node()
    assert (a >> b >> c) is c
    assert a.successors == {"default": b}
    assert b.successors == {"default": c}
    assert c.successors == {}


def test_minus_action_rshift_wires_a_labelled_successor() -> None:
    """a - "approve" >> b wires b on "approve" and evaluates to b."""
    a, b, c = Node(), Node(), Node()
    assert (a - "approve" >> b) is b
    assert (a - "reject" >> c) is c
    assert a.successors == {"approve": b, "reject": c}


def test_action_wired_to_none_ends_the_flow_with_pocketflow_warning() -> None:
    """node - "error" >> None is accepted (evaluates to None) and the flow ends there,
    with PocketFlow's "Flow ends: ..." warning."""
    check, done = Say("check", action="error"), Say("done")
    assert (check - "error" >> None) is None
    check >> done
    assert check.successors == {"error": None, "default": done}
    shared: dict[str, Any] = {}
    with recorded_warnings() as caught:
        assert Flow(start=check).run(shared) == "error"
    assert shared["trail"] == ["check"]
    assert messages(caught) == [
        (UserWarning, "Flow ends: 'error' not found in ['error', 'default']")
    ]


@pytest.mark.asyncio
async def test_default_wired_to_none_ends_an_async_flow() -> None:
    """node >> None is accepted too; an async flow ends there with the same warning."""
    last = ASay("last")
    assert (last >> None) is None
    assert last.next(None, "other") is None
    assert last.successors == {"default": None, "other": None}
    shared: dict[str, Any] = {}
    with recorded_warnings() as caught:
        assert await AsyncFlow(start=last).run_async(shared) is None
    assert shared["trail"] == ["last"]
    assert messages(caught) == [
        (UserWarning, "Flow ends: 'None' not found in ['default', 'other']")
    ]


def test_action_wired_to_none_in_strict_flow_and_diagram() -> None:
    """strict=True treats an action wired to None as a deliberate end (no error, no
    warning); to_mermaid draws no edge for it; validation walks past it."""
    check, done = Say("check", action="error"), Say("done")
    check - "error" >> None
    check >> done
    with recorded_warnings() as caught:
        assert Flow(start=check, strict=True).run({}) == "error"
    assert caught == []
    Flow(start=check).validate()
    assert Flow(start=check).to_mermaid().count("-->") == 1


@pytest.mark.parametrize("action", [3, None, 1.5, b"bytes"])
def test_minus_non_string_action_raises_type_error(action: object) -> None:
    """node - <non-str> raises TypeError whose message starts with "Action must be a string"."""
    with pytest.raises(TypeError) as info:
        Node() - action  # type: ignore[operator]
    assert str(info.value).startswith("Action must be a string")


# -- retries ----------------------------------------------------------------------------


def test_default_max_retries_is_a_single_attempt_then_fallback() -> None:
    """Default max_retries=1: exec is called exactly once, then exec_fallback."""
    calls: list[str] = []

    class Failing(Node):
        def exec(self, p):
            calls.append("exec")
            raise ValueError("nope")

        def exec_fallback(self, p, e):
            calls.append("fallback")
            return "recovered"

        def post(self, s, p, e):
            s["res"] = e

    shared: dict[str, Any] = {}
    Failing().run(shared)
    assert calls == ["exec", "fallback"]
    assert shared["res"] == "recovered"


@pytest.mark.parametrize("max_retries", [1, 2, 3, 5])
def test_max_retries_counts_total_attempts(max_retries: int) -> None:
    """max_retries counts total exec attempts before exec_fallback; cur_retry runs 0..n-1."""
    seen: list[int] = []

    class Failing(Node):
        def exec(self, p):
            seen.append(self.cur_retry)
            raise ValueError("nope")

        def exec_fallback(self, p, e):
            seen.append(-1)

    Failing(max_retries=max_retries, wait=0.001).run({})
    assert seen == [*range(max_retries), -1]


def test_cur_retry_counts_up_until_exec_succeeds() -> None:
    """self.cur_retry is 0, 1, 2 on successive attempts; success stops retrying (sync)."""
    seen: list[int] = []

    class Flaky(Node):
        def exec(self, p):
            seen.append(self.cur_retry)
            if self.cur_retry < 2:
                raise ConnectionError("again")
            return f"ok on {self.cur_retry}"

        def exec_fallback(self, p, e):
            raise AssertionError("fallback must not run")

        def post(self, s, p, e):
            s["res"] = e

    shared: dict[str, Any] = {}
    Flaky(max_retries=5, wait=0.001).run(shared)
    assert seen == [0, 1, 2]
    assert shared["res"] == "ok on 2"


@pytest.mark.asyncio
async def test_async_cur_retry_and_max_retries() -> None:
    """Async: max_retries counts total attempts, self.cur_retry is 0, 1, 2, then fallback.

    (PocketFlow's own AsyncNode never sets cur_retry; pocketbatch's does, like Node's.)
    """
    seen: list[Any] = []

    class Failing(AsyncNode):
        async def exec_async(self, p):
            seen.append(self.cur_retry)
            await asyncio.sleep(0)
            raise ValueError("nope")

        async def exec_fallback_async(self, p, e):
            seen.append("fallback")
            return "recovered"

        async def post_async(self, s, p, e):
            s["res"] = e

    shared: dict[str, Any] = {}
    await Failing(max_retries=3, wait=0.001).run_async(shared)
    assert seen == [0, 1, 2, "fallback"]
    assert shared["res"] == "recovered"


@pytest.mark.asyncio
async def test_async_default_max_retries_is_a_single_attempt() -> None:
    """Async default max_retries=1: exec_async once, then exec_fallback_async."""
    calls: list[str] = []

    class Failing(AsyncNode):
        async def exec_async(self, p):
            calls.append("exec")
            raise ValueError("nope")

        async def exec_fallback_async(self, p, e):
            calls.append("fallback")

    await Failing().run_async({})
    assert calls == ["exec", "fallback"]


@pytest.mark.asyncio
async def test_async_cur_retry_counts_up_until_exec_succeeds() -> None:
    """Async: success on the third attempt stops retrying; cur_retry was 0, 1, 2."""
    seen: list[int] = []

    class Flaky(AsyncNode):
        async def exec_async(self, p):
            seen.append(self.cur_retry)
            if self.cur_retry < 2:
                raise ConnectionError("again")
            return "ok"

        async def post_async(self, s, p, e):
            s["res"] = e

    shared: dict[str, Any] = {}
    await Flaky(max_retries=4, wait=0.001).run_async(shared)
    assert seen == [0, 1, 2]
    assert shared["res"] == "ok"


def test_wait_sleeps_between_attempts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """wait: time.sleep(wait) between attempts (not after the last); wait=0 never sleeps."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)

    class Failing(Node):
        def exec(self, p):
            raise ValueError("nope")

        def exec_fallback(self, p, e):
            return None

    Failing(max_retries=3, wait=0.001).run({})
    assert sleeps == [pytest.approx(0.001)] * 2
    sleeps.clear()
    Failing(max_retries=3).run({})
    assert sleeps == []


@pytest.mark.asyncio
async def test_async_wait_sleeps_between_attempts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Async wait: asyncio.sleep(wait) between attempts (not after the last); wait=0 never."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> None:
        sleeps.append(delay)
        await real_sleep(0)

    class Failing(AsyncNode):
        async def exec_async(self, p):
            raise ValueError("nope")

        async def exec_fallback_async(self, p, e):
            return None

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    await Failing(max_retries=3, wait=0.001).run_async({})
    assert sleeps == [pytest.approx(0.001)] * 2
    sleeps.clear()
    await Failing(max_retries=3).run_async({})
    assert sleeps == []


# -- exec_fallback ----------------------------------------------------------------------


def test_exec_fallback_gets_prep_res_and_exception_and_returns_exec_res() -> None:
    """exec_fallback(prep_res, exc) gets the last exception; its return value is exec_res."""
    errors = [ValueError("first"), ValueError("second")]
    got: list[Any] = []

    class Failing(Node):
        def prep(self, s):
            return "the prep result"

        def exec(self, p):
            raise errors[self.cur_retry]

        def exec_fallback(self, p, e):
            got.append((p, e))
            return "from fallback"

        def post(self, s, p, e):
            s["res"] = e

    shared: dict[str, Any] = {}
    Failing(max_retries=2).run(shared)
    assert len(got) == 1
    assert got[0][0] == "the prep result"
    assert got[0][1] is errors[1]
    assert shared["res"] == "from fallback"


@pytest.mark.asyncio
async def test_async_exec_fallback_gets_prep_res_and_exception_and_returns_exec_res() -> None:
    """exec_fallback_async(prep_res, exc) gets the last exception; its return is exec_res."""
    err = ValueError("boom")
    got: list[Any] = []

    class Failing(AsyncNode):
        async def prep_async(self, s):
            return "the prep result"

        async def exec_async(self, p):
            raise err

        async def exec_fallback_async(self, p, e):
            got.append((p, e))
            return "from fallback"

        async def post_async(self, s, p, e):
            s["res"] = e

    shared: dict[str, Any] = {}
    await Failing().run_async(shared)
    assert got == [("the prep result", err)]
    assert got[0][1] is err
    assert shared["res"] == "from fallback"


def test_default_exec_fallback_reraises_the_original_exception() -> None:
    """Node's default exec_fallback re-raises the very exception object exec raised."""
    err = KeyError("original")

    class Failing(Node):
        def exec(self, p):
            raise err

    with pytest.raises(KeyError) as info:
        Failing(max_retries=2).run({})
    assert info.value is err
    with pytest.raises(KeyError) as info:
        Flow(start=Failing()).run({})
    assert info.value is err


@pytest.mark.asyncio
async def test_async_default_exec_fallback_reraises_the_original_exception() -> None:
    """AsyncNode's default exec_fallback_async re-raises the very exception object."""
    err = KeyError("original")

    class Failing(AsyncNode):
        async def exec_async(self, p):
            raise err

    with pytest.raises(KeyError) as info:
        await Failing(max_retries=2).run_async({})
    assert info.value is err
    with pytest.raises(KeyError) as info:
        await AsyncFlow(start=Failing()).run_async({})
    assert info.value is err


# -- nodes are copied per run ---------------------------------------------------------


def test_node_state_does_not_leak_out_of_flow_runs() -> None:
    """Flows run a copy of each node: state set on self stays out of the original and later runs."""

    class Counter(Node):
        def prep(self, shared):
            self.visits = getattr(self, "visits", 0) + 1
            shared.setdefault("visits", []).append(self.visits)

        def post(self, shared, p, e):
            shared["n"] = shared.get("n", 0) + 1
            return "again" if shared["n"] < 3 else "stop"

    node = Counter()
    node - "again" >> node  # a loop: every visit gets a fresh copy, too
    node - "stop" >> Say("end", action="stopped")
    flow = Flow(start=node)
    flow.set_params({"run": 1})
    shared: dict[str, Any] = {}
    assert flow.run(shared) == "stopped"
    shared["n"] = 0
    flow.run(shared)
    assert shared["visits"] == [1, 1, 1, 1, 1, 1]
    assert not hasattr(node, "visits")
    assert node.params == {}  # params were set on the copies


@pytest.mark.asyncio
async def test_async_node_state_does_not_leak_out_of_flow_runs() -> None:
    """AsyncFlow runs a copy of each node too: state on self never reaches the original."""

    class Counter(AsyncNode):
        async def prep_async(self, shared):
            self.visits = getattr(self, "visits", 0) + 1
            shared.setdefault("visits", []).append(self.visits)

    node = Counter()
    flow = AsyncFlow(start=node)
    shared: dict[str, Any] = {}
    await flow.run_async(shared)
    await flow.run_async(shared)
    assert shared["visits"] == [1, 1]
    assert not hasattr(node, "visits")


@pytest.mark.asyncio
async def test_parallel_batch_flow_runs_each_see_their_own_params() -> None:
    """AsyncParallelBatchFlow: concurrent sub-flow runs each see their own self.params."""

    class Record(AsyncNode):
        async def prep_async(self, shared):
            first = self.params["i"]
            await asyncio.sleep(0)
            return first

        async def exec_async(self, first):
            await asyncio.sleep(0)
            return (first, self.params["i"])

        async def post_async(self, shared, first, pair):
            await asyncio.sleep(0)
            shared.setdefault("seen", []).append((*pair, self.params["i"]))

    class Fan(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": i} for i in range(6)]

    shared: dict[str, Any] = {}
    await asyncio.wait_for(Fan(start=Record()).run_async(shared), GUARD)
    assert sorted(shared["seen"]) == [(i, i, i) for i in range(6)]


# -- parallel batches: errors and concurrency --------------------------------------------


@pytest.mark.asyncio
async def test_parallel_batch_node_raises_the_original_exception() -> None:
    """AsyncParallelBatchNode propagates the item's own exception, not an ExceptionGroup."""
    err = KeyError("item 2")

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2, 3]

        async def exec_async(self, i):
            await asyncio.sleep(0)
            if i == 2:
                raise err
            return i

    with pytest.raises(KeyError) as info:
        await asyncio.wait_for(Items().run_async({}), GUARD)
    assert info.value is err
    assert not isinstance(info.value, BaseExceptionGroup)


@pytest.mark.asyncio
async def test_parallel_batch_flow_raises_the_original_exception() -> None:
    """AsyncParallelBatchFlow propagates a sub-flow's own exception, not an ExceptionGroup."""
    err = KeyError("run 2")

    class Step(AsyncNode):
        async def exec_async(self, _):
            await asyncio.sleep(0)
            if self.params["i"] == 2:
                raise err

    class Fan(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": i} for i in range(4)]

    with pytest.raises(KeyError) as info:
        await asyncio.wait_for(Fan(start=Step()).run_async({}), GUARD)
    assert info.value is err
    assert not isinstance(info.value, BaseExceptionGroup)


N_CONCURRENT = 25


class Barrier:
    """Each caller waits until all N callers have arrived: deadlocks unless N run at once."""

    def __init__(self, n: int) -> None:
        self.n, self.arrived, self.all_in = n, 0, asyncio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived == self.n:
            self.all_in.set()
        await self.all_in.wait()


@pytest.mark.asyncio
@pytest.mark.parametrize("as_generator", [False, True], ids=["list", "generator"])
async def test_parallel_batch_node_is_unbounded_by_default(as_generator: bool) -> None:
    """AsyncParallelBatchNode starts every item at once by default (no concurrency cap)."""
    barrier = Barrier(N_CONCURRENT)

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            items = range(N_CONCURRENT)
            return (i for i in items) if as_generator else list(items)

        async def exec_async(self, i):
            await barrier.arrive()
            return i * 2

        async def post_async(self, shared, items, results):
            shared["results"] = results

    shared: dict[str, Any] = {}
    await asyncio.wait_for(Items().run_async(shared), GUARD)
    assert shared["results"] == [i * 2 for i in range(N_CONCURRENT)]


@pytest.mark.asyncio
async def test_parallel_batch_flow_is_unbounded_by_default() -> None:
    """AsyncParallelBatchFlow starts every sub-flow run at once by default."""
    barrier = Barrier(N_CONCURRENT)

    class Step(AsyncNode):
        async def exec_async(self, _):
            await barrier.arrive()

        async def post_async(self, shared, p, e):
            shared.setdefault("done", []).append(self.params["i"])

    class Fan(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": i} for i in range(N_CONCURRENT)]

    shared: dict[str, Any] = {}
    await asyncio.wait_for(Fan(start=Step()).run_async(shared), GUARD)
    assert sorted(shared["done"]) == list(range(N_CONCURRENT))


@pytest.mark.asyncio
async def test_parallel_batch_node_results_keep_input_order() -> None:
    """AsyncParallelBatchNode hands post_async the results in item order, like gather."""

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [3, 0, 2, 1]

        async def exec_async(self, i):
            for _ in range(i):  # later items finish first
                await asyncio.sleep(0)
            return f"r{i}"

        async def post_async(self, shared, items, results):
            shared["results"] = results

    shared: dict[str, Any] = {}
    await asyncio.wait_for(Items().run_async(shared), GUARD)
    assert shared["results"] == ["r3", "r0", "r2", "r1"]


# -- warnings ----------------------------------------------------------------------------


def test_overwriting_a_successor_warns() -> None:
    """Re-wiring an action warns "Overwriting successor for action '<action>'" and replaces it."""
    a, b, c = Node(), Node(), Node()
    a - "x" >> b
    with recorded_warnings() as caught:
        a - "x" >> c
    assert messages(caught) == [(UserWarning, "Overwriting successor for action 'x'")]
    assert a.successors == {"x": c}
    a >> b
    with pytest.warns(UserWarning, match=r"^Overwriting successor for action 'default'$"):
        a >> c


def test_node_run_with_successors_warns_use_flow() -> None:
    """node.run() on a node with successors warns "Node won't run successors. Use Flow."."""
    first = Say("first")
    first >> Say("second")
    shared: dict[str, Any] = {}
    with recorded_warnings() as caught:
        first.run(shared)
    assert messages(caught) == [(UserWarning, "Node won't run successors. Use Flow.")]
    assert shared["trail"] == ["first"]


@pytest.mark.asyncio
async def test_async_node_run_async_with_successors_warns_use_async_flow() -> None:
    """run_async() on a node with successors warns "Node won't run successors. Use AsyncFlow."."""
    first = ASay("first")
    first >> ASay("second")
    shared: dict[str, Any] = {}
    with recorded_warnings() as caught:
        await first.run_async(shared)
    assert messages(caught) == [(UserWarning, "Node won't run successors. Use AsyncFlow.")]
    assert shared["trail"] == ["first"]


FLOW_ENDS = "Flow ends: 'nope' not found in ['a', 'b']"


def test_unknown_action_ends_flow_with_exactly_one_warning() -> None:
    """An action with no successor ends a Flow with exactly one "Flow ends: ..." warning."""
    start = Say("start", action="nope")
    start - "a" >> Say("a")
    start - "b" >> Say("b")
    shared: dict[str, Any] = {}
    with recorded_warnings() as caught:
        assert Flow(start=start).run(shared) == "nope"
    assert messages(caught) == [(UserWarning, FLOW_ENDS)]
    assert shared["trail"] == ["start"]


@pytest.mark.asyncio
async def test_unknown_action_ends_async_flow_with_exactly_one_warning() -> None:
    """An action with no successor ends an AsyncFlow with exactly one "Flow ends: ..." warning."""
    start = ASay("start", action="nope")
    start - "a" >> ASay("a")
    start - "b" >> ASay("b")
    shared: dict[str, Any] = {}
    with recorded_warnings() as caught:
        assert await AsyncFlow(start=start).run_async(shared) == "nope"
    assert messages(caught) == [(UserWarning, FLOW_ENDS)]
    assert shared["trail"] == ["start"]


def test_flow_ending_at_a_node_without_successors_is_silent() -> None:
    """A flow whose last node has no successors ends without any warning."""
    with recorded_warnings() as caught:
        Flow(start=Say("only", action="anything")).run({})
    assert caught == []


# -- flows return their last action, and nested flows branch -------------------------------


def test_flow_post_returns_last_action_and_nested_flow_branches_parent() -> None:
    """A flow's post returns the last action, so inner_flow - "done" >> x branches the parent."""
    inner = Flow(start=Say("inner-1"))
    inner.start_node >> Say("inner-2", action="done")
    inner - "done" >> Say("after-done", action="end")
    inner - "retry" >> Say("after-retry")
    shared: dict[str, Any] = {}
    assert Flow(start=inner).run(shared) == "end"
    assert shared["trail"] == ["inner-1", "inner-2", "after-done"]


@pytest.mark.filterwarnings("ignore:Node won't run successors")
def test_flow_run_returns_last_action() -> None:
    """Flow.run returns the action of the last node that ran (Flow.post's default)."""
    inner = Flow(start=Say("x", action="done"))
    inner - "done" >> Say("unused")
    assert inner.run({}) == "done"
    assert Flow(start=Say("y", action="finished")).run({}) == "finished"


@pytest.mark.asyncio
async def test_async_nested_flow_action_branches_parent() -> None:
    """An AsyncFlow's last action branches its parent AsyncFlow."""
    inner = AsyncFlow(start=ASay("inner", action="done"))
    inner - "done" >> ASay("after-done", action="end")
    inner - "retry" >> ASay("after-retry")
    shared: dict[str, Any] = {}
    assert await AsyncFlow(start=inner).run_async(shared) == "end"
    assert shared["trail"] == ["inner", "after-done"]


# -- batch flows merge their param dicts over the flow's params ------------------------------


class Seen(Node):
    """Records a copy of its params in shared["seen"]."""

    def prep(self, shared: Any) -> None:
        shared.setdefault("seen", []).append(dict(self.params))


class ASeen(AsyncNode):
    async def prep_async(self, shared: Any) -> None:
        await asyncio.sleep(0)
        shared.setdefault("seen", []).append(dict(self.params))


PARAM_SETS = [{"b": 2}, {"b": 3, "a": 10}]
MERGED = [{"a": 1, "b": 2}, {"a": 10, "b": 3}]


def test_batch_flow_merges_param_dicts_over_flow_params() -> None:
    """BatchFlow runs its sub-flow once per prep dict, merged over the flow's params."""
    got: list[Any] = []

    class PerParam(BatchFlow):
        def prep(self, shared):
            return PARAM_SETS

        def post(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))

    flow = PerParam(start=Seen())
    flow.set_params({"a": 1})
    shared: dict[str, Any] = {}
    flow.run(shared)
    assert shared["seen"] == MERGED
    assert got == [(PARAM_SETS, None)]
    assert flow.params == {"a": 1}


@pytest.mark.asyncio
async def test_async_batch_flow_merges_param_dicts_over_flow_params() -> None:
    """AsyncBatchFlow runs its sub-flow per prep dict, in order, merged over the flow's params."""
    got: list[Any] = []

    class PerParam(AsyncBatchFlow):
        async def prep_async(self, shared):
            return PARAM_SETS

        async def post_async(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))

    flow = PerParam(start=ASeen())
    flow.set_params({"a": 1})
    shared: dict[str, Any] = {}
    await flow.run_async(shared)
    assert shared["seen"] == MERGED
    assert got == [(PARAM_SETS, None)]


@pytest.mark.asyncio
async def test_async_parallel_batch_flow_merges_param_dicts_over_flow_params() -> None:
    """AsyncParallelBatchFlow merges each prep dict over the flow's params."""
    got: list[Any] = []

    class PerParam(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return PARAM_SETS

        async def post_async(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))

    flow = PerParam(start=ASeen())
    flow.set_params({"a": 1})
    shared: dict[str, Any] = {}
    await asyncio.wait_for(flow.run_async(shared), GUARD)
    assert sorted(shared["seen"], key=lambda d: d["b"]) == MERGED
    assert got == [(PARAM_SETS, None)]


# -- sync and async nodes in flows -------------------------------------------------------


@pytest.mark.asyncio
async def test_async_flow_runs_sync_nodes_too() -> None:
    """AsyncFlow runs a mixed chain of sync Nodes, AsyncNodes and nested sync Flows."""
    start = Say("sync-1")
    start >> ASay("async-1") >> Flow(start=Say("nested-sync")) >> Say("sync-2") >> ASay("async-2")
    shared: dict[str, Any] = {}
    await AsyncFlow(start=start).run_async(shared)
    assert shared["trail"] == ["sync-1", "async-1", "nested-sync", "sync-2", "async-2"]


@pytest.mark.parametrize(
    "make_async_step",
    [AsyncNode, lambda: AsyncFlow(start=AsyncNode())],
    ids=["AsyncNode", "AsyncFlow"],
)
def test_sync_flow_with_async_step_raises_runtime_error(make_async_step: Any) -> None:
    """A sync Flow reaching an async node (or async flow) raises RuntimeError about run_async."""
    start = Say("sync")
    start >> make_async_step()
    shared: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="run_async"):
        Flow(start=start).run(shared)
    assert shared["trail"] == ["sync"]


@pytest.mark.parametrize(
    "make_node",
    [
        AsyncNode,
        AsyncBatchNode,
        AsyncParallelBatchNode,
        lambda: AsyncFlow(start=AsyncNode()),
    ],
    ids=["AsyncNode", "AsyncBatchNode", "AsyncParallelBatchNode", "AsyncFlow"],
)
def test_sync_run_of_async_node_raises_use_run_async(make_node: Any) -> None:
    """Calling the sync run() of an async node (or flow) raises RuntimeError "Use run_async"."""
    with pytest.raises(RuntimeError, match=r"^Use run_async"):
        make_node().run({})


# -- prep returning None is an empty batch ----------------------------------------------------


def test_batch_node_prep_none_is_an_empty_batch() -> None:
    """BatchNode: prep returning None runs no items; post gets (None, [])."""
    got: list[Any] = []

    class Empty(BatchNode):
        def exec(self, item):
            raise AssertionError("no items")

        def post(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))
            return "posted"

    assert Empty().run({}) == "posted"
    assert got == [(None, [])]


@pytest.mark.asyncio
@pytest.mark.parametrize("base", [AsyncBatchNode, AsyncParallelBatchNode])
async def test_async_batch_node_prep_none_is_an_empty_batch(base: type[AsyncNode]) -> None:
    """AsyncBatchNode / AsyncParallelBatchNode: prep_async None runs no items; post gets [].

    (PocketFlow 0.0.3 only does this for the sync BatchNode; its async batch nodes raise
    TypeError on None. pocketbatch makes all batch classes agree.)
    """
    got: list[Any] = []

    class Empty(base):  # type: ignore[valid-type,misc]
        async def exec_async(self, item):
            raise AssertionError("no items")

        async def post_async(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))
            return "posted"

    assert await Empty().run_async({}) == "posted"
    assert got == [(None, [])]


def test_batch_flow_prep_none_is_an_empty_batch() -> None:
    """BatchFlow: prep returning None runs the sub-flow zero times; post still runs."""
    got: list[Any] = []

    class Empty(BatchFlow):
        def post(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))
            return "posted"

    shared: dict[str, Any] = {}
    assert Empty(start=Say("never")).run(shared) == "posted"
    assert shared == {}
    assert got == [([], None)]


@pytest.mark.asyncio
@pytest.mark.parametrize("base", [AsyncBatchFlow, AsyncParallelBatchFlow])
async def test_async_batch_flow_prep_none_is_an_empty_batch(base: type[AsyncFlow]) -> None:
    """AsyncBatchFlow / AsyncParallelBatchFlow: prep_async None runs nothing; post still runs."""
    got: list[Any] = []

    class Empty(base):  # type: ignore[valid-type,misc]
        async def post_async(self, shared, prep_res, exec_res):
            got.append((prep_res, exec_res))
            return "posted"

    shared: dict[str, Any] = {}
    assert await asyncio.wait_for(Empty(start=ASay("never")).run_async(shared), GUARD) == "posted"
    assert shared == {}
    assert got == [([], None)]


# -- starting and running --------------------------------------------------------------------


def test_flow_start_argument_and_start_method() -> None:
    """Flow(start=x) and flow.start(x) (which returns x, for chaining) both set the start node."""
    first = Say("first")
    assert Flow(start=first).start_node is first
    flow = Flow()
    assert flow.start(first) is first
    assert flow.start_node is first

    chained = Flow()
    chained.start(Say("a")) >> Say("b")
    shared: dict[str, Any] = {}
    chained.run(shared)
    assert shared["trail"] == ["a", "b"]
    shared = {}
    Flow(Say("positional")).run(shared)
    assert shared["trail"] == ["positional"]


def test_run_returns_post_return_value() -> None:
    """node.run() returns whatever post returns; a Flow subclass's post overrides the action."""

    class Answer(BaseNode):
        def post(self, shared, p, e):
            return {"answer": 42}

    assert Answer().run({}) == {"answer": 42}

    class Summing(Flow):
        def prep(self, shared):
            return "prep-of-flow"

        def post(self, shared, prep_res, exec_res):
            return (prep_res, exec_res)

    assert Summing(start=Say("x", action="last")).run({}) == ("prep-of-flow", "last")


@pytest.mark.asyncio
async def test_run_async_returns_post_async_return_value() -> None:
    """run_async() returns whatever post_async returns (AsyncFlow: the last action)."""

    class Answer(AsyncNode):
        async def post_async(self, shared, p, e):
            return 42

    assert await Answer().run_async({}) == 42
    assert await AsyncFlow(start=ASay("x", action="last")).run_async({}) == "last"


# -- drop-in edge cases found while writing these tests (known bugs) --------------------------
#
# Each test below passes against pocketflow 0.0.3 and fails against pocketbatch.


class Halt(BaseException):
    """A BaseException that is not an Exception (like pytest's Failed, or GeneratorExit)."""


BASE_EXCEPTION_BUG = (
    "bug: a BaseException (not Exception) raised by a parallel item surfaces as a "
    "BaseExceptionGroup from bounded_map's TaskGroup instead of itself"
)


@pytest.mark.asyncio
async def test_parallel_batch_node_raises_original_base_exception() -> None:
    """AsyncParallelBatchNode propagates an item's BaseException itself, as gather does."""
    err = Halt("stop everything")

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, i):
            await asyncio.sleep(0)
            if i == 1:
                raise err

    with pytest.raises(BaseException) as info:  # noqa: PT011
        await asyncio.wait_for(Items().run_async({}), GUARD)
    assert info.value is err, f"got {info.value!r}"


@pytest.mark.asyncio
async def test_parallel_batch_flow_raises_original_base_exception() -> None:
    """AsyncParallelBatchFlow propagates a sub-flow's BaseException itself, as gather does."""
    err = Halt("stop everything")

    class Step(AsyncNode):
        async def exec_async(self, _):
            await asyncio.sleep(0)
            if self.params["i"] == 1:
                raise err

    class Fan(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": 0}, {"i": 1}]

    with pytest.raises(BaseException) as info:  # noqa: PT011
        await asyncio.wait_for(Fan(start=Step()).run_async({}), GUARD)
    assert info.value is err, f"got {info.value!r}"


class ClientTimeout:
    """Stands in for aiohttp.ClientTimeout / httpx.Timeout: a timeout config object."""

    total = 30.0


@pytest.mark.asyncio
async def test_user_timeout_attribute_on_async_node_is_left_alone() -> None:
    """An AsyncNode subclass may keep its own self.timeout (e.g. an HTTP client's config)."""

    class Fetch(AsyncNode):
        def __init__(self) -> None:
            super().__init__()
            self.timeout = ClientTimeout()

        async def exec_async(self, _):
            return f"fetched within {self.timeout.total}s"

        async def post_async(self, shared, p, page):
            return page

    assert await Fetch().run_async({}) == "fetched within 30.0s"


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("backoff", "exponential"),
        ("retry_on", [429, 503]),
        ("max_wait", "1 minute"),
        ("jitter", "full"),
    ],
)
def test_user_retry_named_attributes_on_node_are_left_alone(attribute: str, value: Any) -> None:
    """A Node subclass may keep its own self.backoff / retry_on / max_wait / jitter."""

    class Call(Node):
        def __init__(self) -> None:
            super().__init__(max_retries=2)
            setattr(self, attribute, value)

        def exec(self, _):
            if self.cur_retry == 0:
                raise ConnectionError("first attempt fails")
            return "ok"

        def post(self, shared, p, e):
            return e

    assert Call().run({}) == "ok"


@pytest.mark.asyncio
async def test_user_offload_attribute_keeps_sync_node_on_the_loop_thread() -> None:
    """A sync Node with its own self.offload still runs on the event loop's thread in AsyncFlow."""
    import threading

    class Upload(Node):
        def __init__(self) -> None:
            super().__init__()
            self.offload = "s3://bucket"  # where this node offloads its output to

        def exec(self, _):
            return threading.current_thread() is threading.main_thread()

        def post(self, shared, p, on_main_thread):
            shared["on_main_thread"] = on_main_thread

    shared: dict[str, Any] = {}
    await AsyncFlow(start=Upload()).run_async(shared)
    assert shared["on_main_thread"] is True


def test_user_strict_attribute_on_flow_keeps_flow_ends_warning() -> None:
    """A Flow subclass may keep its own self.strict; an unknown action still only warns."""

    class Review(Flow):
        def __init__(self, start: BaseNode) -> None:
            super().__init__(start=start)
            self.strict = True  # e.g. "review strictly"

    start = Say("start", action="nope")
    start - "a" >> Say("a")
    start - "b" >> Say("b")
    with recorded_warnings() as caught:
        assert Review(start).run({}) == "nope"
    assert messages(caught) == [(UserWarning, FLOW_ENDS)]
