"""How loaded flows run: laziness, concurrency, skipping, on_error, next loops,
for_each, nested maps, and one loaded flow serving many inputs at once.

Components are registry functions that count their calls, so the tests check what
ran (and how often), never how long it took. Async components that must overlap
wait on :class:`asyncio.Event` objects that only the other side sets: run one after
the other they would deadlock, and ``asyncio.wait_for`` turns that into a failure.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import ComponentError, ComponentRegistry, load_flow

GUARD = 10.0  # seconds; only a guard against deadlocks, never a measurement


async def guarded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, timeout=GUARD)


class Calls(Counter[str]):
    """Counts component calls by path."""


def counting_registry(calls: Calls) -> ComponentRegistry:
    reg = ComponentRegistry()

    @reg.component("/t/echo")
    def echo(data: Any) -> Any:
        calls["/t/echo"] += 1
        return data

    @reg.component("/t/other")
    def other(data: Any) -> Any:
        calls["/t/other"] += 1
        return data

    @reg.component("/t/boom")
    def boom(data: Any) -> Any:
        calls["/t/boom"] += 1
        raise RuntimeError("boom")

    return reg


# --------------------------------------------------------------------------- laziness

LAZY = """\
steps:
  - id: wanted
    component: /t/echo
    input: {v: {$input: v}}
  - id: broken
    component: /t/boom
    input: {}
  - id: unused
    component: /t/other
    input: {v: 1}
output:
  $if: {$input: risky}
  then: {$step: broken}
  else: {$step: wanted, path: v}
"""


def test_failing_step_on_untaken_branch_does_not_run() -> None:
    calls = Calls()
    flow = load_flow(LAZY, registry=counting_registry(calls))
    result = flow.run({"v": 5, "risky": False})
    assert result.to_dict() == {"outcome": "success", "result": 5}
    assert calls == {"/t/echo": 1}
    assert dict(result.steps) == {"wanted": "completed"}


def test_taken_branch_runs_its_step_only() -> None:
    calls = Calls()
    flow = load_flow(LAZY, registry=counting_registry(calls))
    result = flow.run({"v": 5, "risky": 0})  # 0 is truthy
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.code == "COMPONENT_FAILED"
    assert result.error.message == "boom"
    assert result.error.data == {"step": "broken", "exception_type": "RuntimeError"}
    assert calls == {"/t/boom": 1}
    assert dict(result.steps) == {"broken": "failed"}


def test_skipped_step_does_not_run_what_only_its_input_needs() -> None:
    calls = Calls()
    flow = load_flow(
        """\
steps:
  - id: expensive
    component: /t/echo
    input: {v: 1}
  - id: maybe
    component: /t/other
    input: {from: {$step: expensive}}
    skip_if: {$input: skip}
output: {$step: maybe, onSkip: {action: useDefault, defaultValue: none}}
""",
        registry=counting_registry(calls),
    )
    assert flow.run({"skip": True}).result == "none"
    assert calls == {}
    assert flow.run({"skip": False}).result == {"from": {"v": 1}}
    assert calls == {"/t/echo": 1, "/t/other": 1}


def test_a_step_needed_twice_runs_once() -> None:
    calls = Calls()
    flow = load_flow(
        """\
steps:
  - id: shared
    component: /t/echo
    input: {v: {$input: v}}
  - id: left
    component: /t/other
    input: {x: {$step: shared, path: v}}
  - id: right
    component: /t/other
    input: {x: {$step: shared, path: v}}
output: [{$step: left}, {$step: right}, {$step: shared}]
""",
        registry=counting_registry(calls),
    )
    assert flow.run({"v": 3}).result == [{"x": 3}, {"x": 3}, {"v": 3}]
    assert calls == {"/t/echo": 1, "/t/other": 2}


def test_must_execute_runs_unneeded_steps_and_their_failure_is_ignored() -> None:
    calls = Calls()
    flow = load_flow(
        """\
steps:
  - id: audit
    component: /t/boom
    input: {}
    must_execute: true
  - id: log
    component: /t/other
    input: {v: {$input: v}}
    mustExecute: true
  - id: not_needed
    component: /t/other
    input: {}
output: {$input: v}
""",
        registry=counting_registry(calls),
    )
    result = flow.run({"v": 1})
    assert result.to_dict() == {"outcome": "success", "result": 1}
    assert calls == {"/t/boom": 1, "/t/other": 1}
    assert dict(result.steps) == {"audit": "failed", "log": "completed"}


# --------------------------------------------------------------------------- concurrency


def handshake_registry() -> ComponentRegistry:
    """Two components that can only finish if they run at the same time."""
    reg = ComponentRegistry()
    events: dict[str, asyncio.Event] = {}

    def event(name: str) -> asyncio.Event:
        return events.setdefault(name, asyncio.Event())

    @reg.component("/t/left")
    async def left(data: Any) -> Any:
        event("left").set()
        await event("right").wait()
        return {"side": "left", **data}

    @reg.component("/t/right")
    async def right(data: Any) -> Any:
        event("right").set()
        await event("left").wait()
        return {"side": "right", **data}

    return reg


@pytest.mark.asyncio
async def test_independent_steps_run_concurrently() -> None:
    flow = load_flow(
        """\
steps:
  - id: a
    component: /t/left
    input: {n: 1}
  - id: b
    component: /t/right
    input: {n: 2}
output: {a: {$step: a}, b: {$step: b}}
""",
        registry=handshake_registry(),
    )
    result = await guarded(flow.run_async({}))
    assert result.result == {"a": {"side": "left", "n": 1}, "b": {"side": "right", "n": 2}}


@pytest.mark.asyncio
async def test_dependencies_of_one_step_run_concurrently() -> None:
    flow = load_flow(
        """\
steps:
  - id: a
    component: /t/left
    input: {}
  - id: b
    component: /t/right
    input: {}
  - id: join
    component: /builtin/create_messages
    input: {user_prompt: {$template: "{step.a.side}+{step.b.side}"}}
output: {$step: join, path: "messages[0].content"}
""",
        registry=handshake_registry(),
    )
    result = await guarded(flow.run_async({}))
    assert result.to_dict() == {"outcome": "success", "result": "left+right"}


@pytest.mark.asyncio
async def test_must_execute_step_runs_alongside_the_output() -> None:
    flow = load_flow(
        """\
steps:
  - id: side
    component: /t/left
    input: {}
    must_execute: true
  - id: main
    component: /t/right
    input: {}
output: {$step: main, path: side}
""",
        registry=handshake_registry(),
    )
    result = await guarded(flow.run_async({}))
    assert result.result == "right"
    assert dict(result.steps) == {"side": "completed", "main": "completed"}


@pytest.mark.asyncio
async def test_a_failure_does_not_wait_for_slow_siblings() -> None:
    reg = ComponentRegistry()
    cancelled: list[str] = []
    never = asyncio.Event()

    @reg.component("/t/fail")
    async def fail(data: Any) -> Any:
        raise RuntimeError("boom")

    @reg.component("/t/forever")
    async def forever(data: Any) -> Any:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append("forever")
            raise
        return {}

    flow = load_flow(
        """\
steps:
  - id: bad
    component: /t/fail
    input: {}
  - id: slow
    component: /t/forever
    input: {}
output: {a: {$step: bad}, b: {$step: slow}}
""",
        registry=reg,
    )
    result = await asyncio.wait_for(flow.run_async({}), timeout=2)
    assert result.outcome == "failed"
    assert cancelled == ["forever"]


def test_run_inside_an_event_loop_is_refused() -> None:
    flow = load_flow("output: 1\n")

    async def inside() -> None:
        with pytest.raises(RuntimeError, match="await run_async"):
            flow.run({})

    asyncio.run(inside())


# --------------------------------------------------------------------------- skipping


SKIPS = """\
steps:
  - id: first
    component: /builtin/noop
    input: {v: 1}
    skip_if: {$input: skip_first}
  - id: second
    component: /builtin/noop
    input: {v: {$step: first, path: v}}
  - id: third
    component: /builtin/noop
    input:
      v: {$step: second, path: v, on_skip: {action: use_default, default_value: 0}}
output:
  second: {$step: second, path: v, on_skip: {action: use_default, default_value: skipped}}
  third: {$step: third, path: v}
"""


def test_skip_propagates_until_a_reference_gives_a_default() -> None:
    flow = load_flow(SKIPS)
    result = flow.run({"skip_first": True})
    assert result.to_dict() == {"outcome": "success", "result": {"second": "skipped", "third": 0}}
    assert dict(result.steps) == {"first": "skipped", "second": "skipped", "third": "completed"}
    result = flow.run({"skip_first": False})
    assert result.result == {"second": 1, "third": 1}
    assert set(result.steps.values()) == {"completed"}


@pytest.mark.parametrize("value", [0, "", [], {}, "false", True])
def test_truthy_skip_conditions(value: Any) -> None:
    assert load_flow(SKIPS).run({"skip_first": value}).steps["first"] == "skipped"


@pytest.mark.parametrize("value", [False, None])
def test_falsy_skip_conditions(value: Any) -> None:
    assert load_flow(SKIPS).run({"skip_first": value}).steps["first"] == "completed"


def test_output_needing_a_skipped_step_is_skipped() -> None:
    flow = load_flow(
        "steps:\n  - {id: s, component: /builtin/noop, input: {}, skip: true}\noutput: {$step: s}\n"
    )
    result = flow.run({})
    assert result.outcome == "skipped"
    assert result.to_dict() == {"outcome": "skipped"}
    assert result.result is None
    assert result.error is None


def test_skipped_step_in_for_each_input_fails_the_item() -> None:
    flow = load_flow(
        """\
steps:
  - {id: gone, component: /builtin/noop, input: {}, skip: true}
  - id: each
    component: /builtin/noop
    for_each: [1, 2]
    input: {x: {$item: "$"}, g: {$step: gone}}
    on_item_error: collect
output: {$step: each}
"""
    )
    message = 'an item needs step "gone", which was skipped'
    error = {"error": {"code": "EXPRESSION_FAILURE", "message": message, "data": {"step": "each"}}}
    assert flow.run({}).result == [error, error]


# --------------------------------------------------------------------------- on_error


def flaky_registry(calls: Calls, failures: int, code: str | None = None) -> ComponentRegistry:
    """``/t/flaky`` fails its first ``failures`` calls (with ``code``, or a plain error)."""
    reg = ComponentRegistry()

    @reg.component("/t/flaky")
    async def flaky(data: Any) -> Any:
        calls["/t/flaky"] += 1
        if calls["/t/flaky"] <= failures:
            if code is None:
                raise RuntimeError(f"attempt {calls['/t/flaky']}")
            raise ComponentError(code, f"attempt {calls['/t/flaky']}")
        return {"attempts": calls["/t/flaky"], **data}

    return reg


def flaky_flow(on_error: str, reg: ComponentRegistry) -> Any:
    return load_flow(
        "steps:\n"
        "  - id: call\n"
        "    component: /t/flaky\n"
        "    input: {v: 1}\n"
        f"    {on_error}\n"
        "output: {$step: call}\n",
        registry=reg,
    )


@pytest.mark.parametrize(
    "on_error",
    [
        "on_error: {action: retry, max_retries: 2, wait: 0}",
        "onError: {action: retry, maxRetries: 2, wait: 0}",
    ],
)
@pytest.mark.parametrize(("failures", "attempts"), [(0, 1), (1, 2), (2, 3), (3, 3), (10, 3)])
def test_retry_counts_attempts(on_error: str, failures: int, attempts: int) -> None:
    calls = Calls()
    result = flaky_flow(on_error, flaky_registry(calls, failures)).run({})
    assert calls["/t/flaky"] == attempts
    if failures < 3:
        assert result.to_dict() == {"outcome": "success", "result": {"attempts": attempts, "v": 1}}
    else:
        assert result.to_dict() == {
            "outcome": "failed",
            "error": {
                "code": "COMPONENT_FAILED",
                "message": "attempt 3",
                "data": {"step": "call", "exception_type": "RuntimeError"},
            },
        }
        assert dict(result.steps) == {"call": "failed"}


def test_retry_defaults_to_three_retries() -> None:
    calls = Calls()
    result = flaky_flow("on_error: {action: retry, wait: 0}", flaky_registry(calls, 99)).run({})
    assert calls["/t/flaky"] == 4
    assert result.outcome == "failed"


def test_retry_zero_retries_is_one_attempt() -> None:
    calls = Calls()
    flow = flaky_flow(
        "on_error: {action: retry, max_retries: 0, wait: 0}", flaky_registry(calls, 1)
    )
    assert flow.run({}).outcome == "failed"
    assert calls["/t/flaky"] == 1


@pytest.mark.parametrize("code", ["COMPONENT_FAILED", "RESOURCE_UNAVAILABLE", 3, 7])
def test_retryable_codes_are_retried(code: str | int) -> None:
    calls = Calls()
    flow = flaky_flow(
        "on_error: {action: retry, max_retries: 3, wait: 0}", flaky_registry(calls, 2, code)
    )
    assert flow.run({}).result == {"attempts": 3, "v": 1}
    assert calls["/t/flaky"] == 3


@pytest.mark.parametrize("code", ["INVALID_INPUT", "EXPRESSION_FAILURE", "RATE_LIMITED", 2, 8])
def test_non_retryable_codes_are_not_retried(code: str | int) -> None:
    calls = Calls()
    flow = flaky_flow(
        "on_error: {action: retry, max_retries: 3, wait: 0}", flaky_registry(calls, 1, code)
    )
    result = flow.run({})
    assert calls["/t/flaky"] == 1
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {"code": code, "message": "attempt 1"},
    }


def test_retry_does_not_rerun_a_bad_input_expression() -> None:
    calls = Calls()
    flow = load_flow(
        "steps:\n"
        "  - id: call\n"
        "    component: /t/flaky\n"
        "    input: {v: {$input: missing}}\n"
        "    on_error: {action: retry, max_retries: 5, wait: 0}\n"
        "output: {$step: call}\n",
        registry=flaky_registry(calls, 0),
    )
    result = flow.run({})
    assert calls["/t/flaky"] == 0
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {
            "code": "EXPRESSION_FAILURE",
            "message": "Input path $.missing not found",
            "data": {"step": "call"},
        },
    }


@pytest.mark.parametrize(
    "on_error",
    [
        "on_error: {action: use_default, default_value: {fallback: true}}",
        "onError: {action: useDefault, defaultValue: {fallback: true}}",
        "on_error: {action: useDefault, default_value: {fallback: true}}",
    ],
)
@pytest.mark.parametrize("code", [None, "INVALID_INPUT"])
def test_use_default(on_error: str, code: str | None) -> None:
    calls = Calls()
    result = flaky_flow(on_error, flaky_registry(calls, 1, code)).run({})
    assert result.to_dict() == {"outcome": "success", "result": {"fallback": True}}
    assert dict(result.steps) == {"call": "defaulted"}
    assert calls["/t/flaky"] == 1


def test_use_default_without_a_value_is_null_and_success_is_untouched() -> None:
    calls = Calls()
    assert flaky_flow("on_error: use_default", flaky_registry(calls, 1)).run({}).result is None
    calls = Calls()
    result = flaky_flow("on_error: {action: use_default}", flaky_registry(calls, 0)).run({})
    assert result.result == {"attempts": 1, "v": 1}
    assert dict(result.steps) == {"call": "completed"}


def test_fail_is_the_default_and_is_not_retried() -> None:
    for on_error in ("description: no on_error", "on_error: fail", "on_error: {action: fail}"):
        calls = Calls()
        result = flaky_flow(on_error, flaky_registry(calls, 1)).run({})
        assert result.outcome == "failed"
        assert calls["/t/flaky"] == 1


def test_component_error_data_reaches_the_result() -> None:
    reg = ComponentRegistry()

    @reg.component("/t/err")
    def err(data: Any) -> Any:
        raise ComponentError("RATE_LIMITED", "slow down", {"retry_after": 3})

    flow = load_flow(
        "steps: [{id: s, component: /t/err, input: {}}]\noutput: {$step: s}\n", registry=reg
    )
    result = flow.run({})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {"code": "RATE_LIMITED", "message": "slow down", "data": {"retry_after": 3}},
    }


# --------------------------------------------------------------------------- next loops

AGENT = """\
steps:
  - id: think
    component: /agent/think
    input:
      turn: {$coalesce: [{$step: act, path: turn}, 0]}
      goal: {$input: goal}
    next: {act: act, finish: finish, give_up: give_up}
    action: {$step: think, path: decision}
  - id: act
    component: /agent/act
    input: {turn: {$step: think, path: turn}}
    next: think
  - id: finish
    component: /builtin/noop
    input:
      turns: {$step: think, path: turn}
      log: {$step: act, path: log, on_skip: {action: use_default, default_value: []}}
  - id: give_up
    component: /builtin/noop
    input: {gave_up_at: {$step: think, path: turn}}
output:
  $coalesce:
    - {$step: finish, on_skip: {action: use_default}}
    - {$step: give_up}
"""


def agent_registry(calls: Calls) -> ComponentRegistry:
    reg = ComponentRegistry()

    @reg.component("/agent/think")
    async def think(data: Any) -> Any:
        calls["think"] += 1
        await asyncio.sleep(0)
        turn = data["turn"] + 1
        if data["goal"] == "confuse":
            decision = "dance"
        elif data["goal"] == "hopeless" and turn > 3:
            decision = "give_up"
        elif turn >= data["goal"] if isinstance(data["goal"], int) else False:
            decision = "finish"
        else:
            decision = "act"
        return {"turn": turn, "decision": decision}

    @reg.component("/agent/act")
    async def act(data: Any) -> Any:
        calls["act"] += 1
        await asyncio.sleep(0)
        return {"turn": data["turn"], "log": [f"acted at {data['turn']}"]}

    return reg


@pytest.mark.parametrize("goal", [1, 2, 5])
def test_agent_loop_stops_by_action(goal: int) -> None:
    calls = Calls()
    flow = load_flow(AGENT, registry=agent_registry(calls))
    result = flow.run({"goal": goal})
    assert result.outcome == "success"
    assert result.result["turns"] == goal
    assert calls == ({"think": goal, "act": goal - 1} if goal > 1 else {"think": 1})
    assert result.result["log"] == ([f"acted at {goal - 1}"] if goal > 1 else [])
    assert result.steps["finish"] == "completed"
    assert "give_up" not in result.steps


def test_agent_loop_other_exit() -> None:
    calls = Calls()
    result = load_flow(AGENT, registry=agent_registry(calls)).run({"goal": "hopeless"})
    assert result.result == {"gave_up_at": 4}
    assert calls == {"think": 4, "act": 3}


def test_unknown_action_fails_the_run() -> None:
    calls = Calls()
    result = load_flow(AGENT, registry=agent_registry(calls)).run({"goal": "confuse"})
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.code == "UNKNOWN_ACTION"
    assert "'dance'" in result.error.message
    assert "'act', 'finish', 'give_up'" in result.error.message
    assert calls == {"think": 1}


def test_action_must_be_a_string() -> None:
    flow = load_flow(
        "steps:\n"
        "  - {id: a, component: /builtin/noop, input: {}, next: {x: b}, action: 5}\n"
        "  - {id: b, component: /builtin/noop, input: {}}\n"
        "output: 1\n"
    )
    result = flow.run({})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {
            "code": "EXPRESSION_FAILURE",
            "message": "action must be a string, got int",
            "data": {"step": "a"},
        },
    }


def test_next_without_action_takes_the_default_transition() -> None:
    flow = load_flow(
        "start: b\n"
        "steps:\n"
        "  - {id: a, component: /builtin/noop, input: {from_a: {$step: b}}}\n"
        "  - {id: b, component: /builtin/noop, input: {v: {$input: v}}, next: a}\n"
        "output: {$step: a}\n"
    )
    result = flow.run({"v": 1})
    assert result.result == {"from_a": {"v": 1}}
    assert list(result.steps) == ["b", "a"]


@pytest.mark.asyncio
async def test_agent_loops_reused_concurrently_keep_their_own_state() -> None:
    calls = Calls()
    flow = load_flow(AGENT, registry=agent_registry(calls))
    goals = [1 + i % 6 for i in range(30)]
    results = await guarded(asyncio.gather(*(flow.run_async({"goal": g}) for g in goals)))
    assert [r.result["turns"] for r in results] == goals
    assert calls == {"think": sum(goals), "act": sum(g - 1 for g in goals)}


# --------------------------------------------------------------------------- for_each


def items_registry(calls: Calls, in_flight: list[int]) -> ComponentRegistry:
    reg = ComponentRegistry()
    state = {"now": 0}

    @reg.component("/t/item")
    async def item(data: Any) -> Any:
        calls["item"] += 1
        state["now"] += 1
        in_flight.append(state["now"])
        try:
            for _ in range(3):
                await asyncio.sleep(0)
            if data["x"] % 3 == 0:
                raise ValueError(f"bad {data['x']}")
            return {"y": data["x"] * 10}
        finally:
            state["now"] -= 1

    return reg


FOR_EACH = """\
steps:
  - id: each
    component: /t/item
    for_each: {$input: xs}
    input: {x: {$item: "$"}}
    max_concurrency: 2
    on_item_error: %s
output: {$step: each}
"""


def test_for_each_collect_keeps_order_and_marks_failures() -> None:
    calls, in_flight = Calls(), []
    flow = load_flow(FOR_EACH % "collect", registry=items_registry(calls, in_flight))
    result = flow.run({"xs": [1, 2, 3, 4, 5, 6, 7]})
    bad = {
        x: {
            "error": {
                "code": "COMPONENT_FAILED",
                "message": f"bad {x}",
                "data": {"step": "each", "exception_type": "ValueError"},
            }
        }
        for x in (3, 6)
    }
    assert result.result == [bad.get(x, {"y": 10 * x}) for x in range(1, 8)]
    assert calls["item"] == 7
    assert max(in_flight) == 2


def test_for_each_raise_fails_the_step() -> None:
    calls, in_flight = Calls(), []
    flow = load_flow(FOR_EACH % "raise", registry=items_registry(calls, in_flight))
    result = flow.run({"xs": [1, 2, 3, 4, 5, 6, 7]})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {
            "code": "COMPONENT_FAILED",
            "message": "bad 3",
            "data": {"step": "each", "exception_type": "ValueError"},
        },
    }
    assert dict(result.steps) == {"each": "failed"}
    assert calls["item"] < 7  # items not started yet never start
    assert max(in_flight) <= 2


def test_for_each_retries_each_item() -> None:
    calls = Calls()
    reg = ComponentRegistry()
    seen: Counter[int] = Counter()

    @reg.component("/t/once_bad")
    def once_bad(data: Any) -> Any:
        calls["once_bad"] += 1
        seen[data["x"]] += 1
        if seen[data["x"]] == 1:
            raise RuntimeError("first try")
        return data["x"]

    flow = load_flow(
        "steps:\n"
        "  - id: each\n"
        "    component: /t/once_bad\n"
        "    for_each: {$input: xs}\n"
        "    input: {x: {$item: '$'}}\n"
        "    on_error: {action: retry, max_retries: 1, wait: 0}\n"
        "output: {$step: each}\n",
        registry=reg,
    )
    assert flow.run({"xs": [4, 5, 6]}).result == [4, 5, 6]
    assert calls["once_bad"] == 6


def test_for_each_use_default_per_item() -> None:
    calls, in_flight = Calls(), []
    flow = load_flow(
        "steps:\n"
        "  - id: each\n"
        "    component: /t/item\n"
        "    for_each: {$input: xs}\n"
        "    input: {x: {$item: '$'}}\n"
        "    on_error: {action: use_default, default_value: {y: -1}}\n"
        "output: {$step: each}\n",
        registry=items_registry(calls, in_flight),
    )
    assert flow.run({"xs": [1, 3, 4]}).result == [{"y": 10}, {"y": -1}, {"y": 40}]


def test_for_each_needs_a_list() -> None:
    flow = load_flow(
        "steps:\n"
        "  - {id: each, component: /builtin/noop, for_each: {$input: xs}, input: {$item: '$'}}\n"
        "output: {$step: each}\n"
    )
    result = flow.run({"xs": {"not": "a list"}})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {
            "code": "EXPRESSION_FAILURE",
            "message": "for_each must give a list, got dict",
            "data": {"step": "each"},
        },
    }


# ---------------------------------------------------------------- nested map, many inputs

MAP = """\
steps:
  - id: squares
    component: /builtin/map
    input:
      workflow:
        steps:
          - id: sq
            component: /t/square
            input: {x: {$input: x}}
        output: {$step: sq, path: sq}
      items: {$input: items}
      max_concurrency: 3
output:
  id: {$input: id}
  results: {$step: squares, path: results}
  ok: {$step: squares, path: successful}
  failed: {$step: squares, path: failed}
"""


@pytest.mark.asyncio
async def test_nested_map_over_many_concurrent_inputs() -> None:
    calls = Calls()
    reg = ComponentRegistry()

    @reg.component("/t/square")
    async def square(data: Any) -> Any:
        calls["square"] += 1
        for _ in range(data["x"] % 4):
            await asyncio.sleep(0)
        if data["x"] % 7 == 0:
            raise ValueError(f"no {data['x']}")
        return {"sq": data["x"] ** 2}

    flow = load_flow(MAP, registry=reg)
    inputs = [{"id": i, "items": [{"x": i * 10 + k} for k in range(i % 6)]} for i in range(50)]
    results = await guarded(asyncio.gather(*(flow.run_async(inp) for inp in inputs)))

    for inp, result in zip(inputs, results):
        expected = []
        for item in inp["items"]:
            x = item["x"]
            if x % 7 == 0:
                error = {
                    "code": "COMPONENT_FAILED",
                    "message": f"no {x}",
                    "data": {"step": "sq", "exception_type": "ValueError"},
                }
                expected.append({"outcome": "failed", "error": error})
            else:
                expected.append({"outcome": "success", "result": x * x})
        n_failed = sum(1 for e in expected if e["outcome"] == "failed")
        assert result.to_dict() == {
            "outcome": "success",
            "result": {
                "id": inp["id"],
                "results": expected,
                "ok": len(expected) - n_failed,
                "failed": n_failed,
            },
        }
    assert calls["square"] == sum(len(inp["items"]) for inp in inputs)


@pytest.mark.asyncio
async def test_loaded_flow_reused_concurrently_gives_each_input_its_own_store() -> None:
    reg = ComponentRegistry()
    calls = Calls()

    @reg.component("/t/slow_echo")
    async def slow_echo(data: Any) -> Any:
        calls["slow_echo"] += 1
        for _ in range(data["n"] % 5):
            await asyncio.sleep(0)
        return {"n": data["n"], "doubled": data["n"] * 2}

    flow = load_flow(
        """\
steps:
  - id: first
    component: /t/slow_echo
    input: {n: {$input: n}}
  - id: maybe
    component: /t/slow_echo
    input: {n: {$step: first, path: doubled}}
    skip_if: {$input: odd}
output:
  n: {$step: first, path: n}
  twice: {$step: maybe, path: n, on_skip: {action: use_default, default_value: null}}
""",
        registry=reg,
    )
    ns = list(range(60))
    results = await guarded(
        asyncio.gather(*(flow.run_async({"n": n, "odd": n % 2 == 1}) for n in ns))
    )
    for n, result in zip(ns, results):
        assert result.result == {"n": n, "twice": None if n % 2 else 2 * n}
        assert result.steps["maybe"] == ("skipped" if n % 2 else "completed")
    assert calls["slow_echo"] == 60 + 30


@pytest.mark.asyncio
async def test_concurrent_runs_with_different_variables() -> None:
    flow = load_flow(
        "steps:\n"
        "  - id: s\n"
        "    component: /builtin/sleep\n"
        "    input: {duration_ms: 0, passthrough: {$variable: tag}}\n"
        "output: {$step: s, path: passthrough}\n"
    )
    tags = [f"tag-{i}" for i in range(40)]
    results = await guarded(
        asyncio.gather(*(flow.run_async({}, variables={"tag": t}) for t in tags))
    )
    assert [r.result for r in results] == tags


def test_invalid_input_runs_no_step() -> None:
    calls = Calls()
    flow = load_flow(
        "input_schema: {type: object, required: [v]}\n"
        "steps: [{id: s, component: /t/echo, input: {v: {$input: v}}, must_execute: true}]\n"
        "output: {$step: s}\n",
        registry=counting_registry(calls),
    )
    result = flow.run({})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {"code": "INVALID_INPUT", "message": "input $: 'v' is a required property"},
    }
    assert calls == {}
    assert dict(result.steps) == {}


# ------------------------------------------------------- issue 13: Stepflow's error shapes

STEPFLOW_MOCK = """\
plugins:
  mock:
    type: mock
    components:
      /one_output:
        behaviors:
          { input: "a" }: {outcome: success, result: {output: b}}
      /two_outputs:
        behaviors:
          { input: "b" }: {outcome: success, result: {x: 1, y: 2}}
routes:
  "/mock":
    - plugin: mock
"""

BASIC = """\
steps:
- id: step1
  component: /mock/one_output
  input: {input: {$input: name}}
- id: step2
  component: /mock/two_outputs
  input: {input: {$step: step1, path: output}}
output:
  name: {$step: step1, path: output}
  x: {$step: step2, path: x}
"""


def test_mock_without_behavior_fails_as_stepflow_reports_it(tmp_path: Path) -> None:
    """Stepflow's tests/mock/basic.yaml case 'world': the plugin's failure is UNREACHABLE,
    'step "step1" failed', with its error stack as data; step2, which needs step1,
    fails with that same error (Stepflow's expectation, matched with its rule)."""
    from pocketbatch.loader._testing import mismatches

    (tmp_path / "stepflow-config.yml").write_text(STEPFLOW_MOCK, encoding="utf-8")
    flow_path = tmp_path / "basic.yaml"
    flow_path.write_text(BASIC, encoding="utf-8")
    result = load_flow(flow_path).run({"name": "world"})
    expected = {
        "outcome": "failed",
        "error": {
            "code": "UNREACHABLE",
            "message": 'step "step1" failed',
            "data": {
                "stack": [
                    {
                        "error": 'step "step1" failed',
                        "attachments": [
                            "Component: /one_output",
                            "Component execution failed for step 'step1'",
                            'No behavior defined for /one_output on {"input":"world"}',
                        ],
                    },
                    {"error": "error executing user-defined function"},
                ]
            },
        },
    }
    assert mismatches(expected, result.to_dict()) == []
    assert result.error is not None
    assert result.error.data["step"] == "step1"
    assert load_flow(flow_path).run({"name": "a"}).result == {"name": "b", "x": 1}


def test_component_exception_keeps_its_own_message() -> None:
    """No 'step "x" failed: ValueError:' prefix: the message is the exception's; the step
    and the exception type are in data."""
    reg = ComponentRegistry()

    @reg.component("/t/bad")
    def bad(data: Any) -> Any:
        raise ValueError("Intentional error: test error")

    @reg.component("/t/silent")
    def silent(data: Any) -> Any:
        raise KeyError()

    flow = load_flow(
        "steps:\n- {id: s, component: /t/bad, input: {}}\noutput: {$step: s}\n", registry=reg
    )
    assert flow.run({}).to_dict()["error"] == {
        "code": "COMPONENT_FAILED",
        "message": "Intentional error: test error",
        "data": {"step": "s", "exception_type": "ValueError"},
    }
    flow = load_flow(
        "steps:\n- {id: q, component: /t/silent, input: {}}\noutput: {$step: q}\n", registry=reg
    )
    assert flow.run({}).to_dict()["error"]["message"] == "KeyError"
