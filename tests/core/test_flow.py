"""Flow wiring checks: validate(), strict flows, and argument type checks."""

from __future__ import annotations

from typing import Any

import pytest

from pocketbatch import (
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchFlow,
    Flow,
    FlowDefinitionError,
    Node,
    ParallelBatchNode,
    PocketbatchError,
    UnknownActionError,
)


class Say(Node):
    """Returns the action given in the constructor."""

    def __init__(self, action: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.action = action

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("ran", []).append(self.name)
        return self.action


class ASay(AsyncNode):
    """Async twin of Say."""

    def __init__(self, action: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.action = action

    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("ran", []).append(self.name)
        return self.action


class Fetch(AsyncNode):
    pass


# ---------------------------------------------------------------- validate()


def test_no_start_is_flow_definition_error() -> None:
    """validate() on a flow without start raises FlowDefinitionError naming the flow."""
    with pytest.raises(FlowDefinitionError, match="'empty' has no start node"):
        Flow(name="empty").validate()


def test_flow_definition_error_is_value_error_and_pocketbatch_error() -> None:
    """FlowDefinitionError is both a ValueError and a PocketbatchError."""
    with pytest.raises(ValueError, match="no start node"):
        Flow().validate()
    with pytest.raises(PocketbatchError, match="no start node"):
        Flow().validate()


def test_async_node_in_sync_flow_is_rejected() -> None:
    """An AsyncNode step in a sync Flow is reported by name, suggesting AsyncFlow."""
    first = Say(name="first")
    first >> Fetch(name="fetch")
    with pytest.raises(FlowDefinitionError) as info:
        Flow(start=first, name="main").validate()
    message = str(info.value)
    assert "'fetch'" in message
    assert "'main'" in message
    assert "AsyncFlow" in message
    assert "AsyncNode" in message
    assert "'first'" not in message


@pytest.mark.parametrize(
    ("node", "kind"),
    [
        (AsyncBatchNode(name="step"), "AsyncBatchNode"),
        (AsyncParallelBatchNode(name="step"), "AsyncParallelBatchNode"),
        (AsyncFlow(start=AsyncNode(), name="step"), "async flow"),
    ],
)
def test_async_kinds_in_sync_flow_are_named(node: Any, kind: str) -> None:
    """Each async kind of step is described in the message."""
    with pytest.raises(FlowDefinitionError, match=kind) as info:
        Flow(start=node).validate()
    assert "'step'" in str(info.value)
    assert "AsyncFlow" in str(info.value)


def test_async_node_in_batch_flow_is_rejected() -> None:
    """A sync BatchFlow cannot run an AsyncNode either."""
    with pytest.raises(FlowDefinitionError, match="AsyncFlow"):
        BatchFlow(start=Fetch(name="f")).validate()


def test_nested_flows_are_checked() -> None:
    """A problem inside a nested flow is found, naming the inner flow and step."""
    inner = Flow(start=Say(name="ok"), name="inner")
    inner >> Fetch(name="late")  # the async step follows the inner flow in the *outer* one
    deep = Flow(start=Fetch(name="deep"), name="deeper")
    inner.start_node >> deep  # type: ignore[operator]
    with pytest.raises(FlowDefinitionError) as info:
        Flow(start=inner, name="outer").validate()
    message = str(info.value)
    assert "flow 'outer': step 'late'" in message
    assert "flow 'deeper': step 'deep'" in message


def test_nested_empty_flow_is_reported() -> None:
    """A nested flow without a start node is reported."""
    with pytest.raises(FlowDefinitionError, match="'hollow' has no start node"):
        Flow(start=Flow(name="hollow")).validate()


def test_all_problems_listed() -> None:
    """Every problem is listed in one error."""
    a = Fetch(name="one")
    a >> Flow(name="hollow") >> Fetch(name="two")
    with pytest.raises(FlowDefinitionError) as info:
        Flow(start=a, name="main").validate()
    message = str(info.value)
    for part in ("'one'", "'two'", "'hollow' has no start node"):
        assert part in message


def test_valid_flow_passes() -> None:
    """A correctly wired flow validates, returning None."""
    a, b = Say(name="a"), Say(name="b")
    a - "x" >> b
    b >> Flow(start=Say(name="c"), name="sub")
    assert Flow(start=a).validate() is None  # type: ignore[func-returns-value]


def test_async_flow_accepts_async_and_sync_nodes() -> None:
    """An AsyncFlow may mix async nodes, sync nodes, and nested async flows."""
    a = Fetch()
    a >> Say() >> AsyncFlow(start=Fetch()) >> ParallelBatchNode()
    assert AsyncFlow(start=a).validate() is None  # type: ignore[func-returns-value]


def test_sync_nested_in_async_still_checked() -> None:
    """A sync flow nested in an AsyncFlow must itself be free of async steps."""
    bad_inner = Flow(start=Fetch(name="inner-fetch"), name="sync-inner")
    with pytest.raises(FlowDefinitionError, match="flow 'sync-inner': step 'inner-fetch'"):
        AsyncFlow(start=bad_inner).validate()


def test_validate_handles_cycles() -> None:
    """validate() terminates on cyclic graphs and self-containing flows."""
    a, b = Say(name="a"), Say(name="b")
    a >> b
    b - "again" >> a
    flow = Flow(start=a)
    a - "recurse" >> flow
    assert flow.validate() is None  # type: ignore[func-returns-value]


# ---------------------------------------------------------------- running


def test_running_flow_without_start_raises() -> None:
    """Running a Flow with no start raises FlowDefinitionError."""
    with pytest.raises(FlowDefinitionError, match="no start node"):
        Flow().run({})


@pytest.mark.asyncio
async def test_running_async_flow_without_start_raises() -> None:
    """Running an AsyncFlow with no start raises FlowDefinitionError."""
    with pytest.raises(FlowDefinitionError, match="no start node"):
        await AsyncFlow(name="af").run_async({})


def test_running_async_node_in_sync_flow_raises() -> None:
    """Running (not validating) an AsyncNode in a sync Flow raises a helpful RuntimeError."""
    with pytest.raises(RuntimeError, match="run_async"):
        Flow(start=Fetch()).run({})


# ---------------------------------------------------------------- strict


def test_strict_flow_raises_unknown_action() -> None:
    """strict=True raises UnknownActionError(node, action, known) on an unwired action."""
    review = Say("maybe", name="review")
    review - "approve" >> Say(name="pub")
    review - "reject" >> Say(name="redo")
    shared: dict[str, Any] = {}
    with pytest.raises(UnknownActionError) as info:
        Flow(start=review, strict=True).run(shared)
    err = info.value
    assert err.node == "review"
    assert err.action == "maybe"
    assert err.known == ("approve", "reject")
    assert isinstance(err, FlowDefinitionError)
    assert "'maybe'" in str(err)
    assert "'approve'" in str(err)
    assert shared["ran"] == ["review"]


def test_strict_flow_default_action_missing() -> None:
    """strict: returning None when only named actions are wired raises with action None."""
    a = Say(None, name="a")
    a - "yes" >> Say(name="b")
    with pytest.raises(UnknownActionError) as info:
        Flow(start=a, strict=True).run({})
    assert info.value.action is None
    assert info.value.known == ("yes",)


def test_strict_flow_ends_normally_at_terminal_node() -> None:
    """strict: a node with no successors at all ends the flow without error."""
    a = Say("next", name="a")
    a - "next" >> Say("anything", name="b")
    shared: dict[str, Any] = {}
    assert Flow(start=a, strict=True).run(shared) == "anything"
    assert shared["ran"] == ["a", "b"]


def test_non_strict_flow_warns_instead() -> None:
    """Without strict, an unwired action ends the flow with PocketFlow's warning."""
    review = Say("maybe", name="review")
    review - "approve" >> Say(name="pub")
    with pytest.warns(UserWarning, match="Flow ends: 'maybe' not found in \\['approve'\\]"):
        Flow(start=review).run({})


@pytest.mark.asyncio
async def test_strict_async_flow_raises_unknown_action() -> None:
    """strict=True works for AsyncFlow too."""
    a = ASay("nope", name="a")
    a - "yes" >> ASay(name="b")
    with pytest.raises(UnknownActionError) as info:
        await AsyncFlow(start=a, strict=True).run_async({})
    assert (info.value.node, info.value.action, info.value.known) == ("a", "nope", ("yes",))


def test_strict_in_nested_flow() -> None:
    """A strict inner flow raises even when the outer flow is not strict."""
    a = Say("odd", name="a")
    a - "even" >> Say(name="b")
    outer = Flow(start=Flow(start=a, strict=True))
    with pytest.raises(UnknownActionError):
        outer.run({})


# ---------------------------------------------------------------- type checks


def test_flow_start_must_be_node() -> None:
    """Flow(start=42) raises TypeError."""
    with pytest.raises(TypeError, match="start must be a node"):
        Flow(start=42)  # type: ignore[arg-type]


def test_rshift_non_node_is_type_error() -> None:
    """node >> 42 raises TypeError."""
    with pytest.raises(TypeError, match="successor must be a node"):
        Node() >> 42  # type: ignore[type-var]


def test_conditional_rshift_non_node_is_type_error() -> None:
    """node - "x" >> 42 raises TypeError."""
    with pytest.raises(TypeError, match="successor must be a node"):
        Node() - "x" >> 42  # type: ignore[type-var]


def test_non_string_action_is_type_error() -> None:
    """node - 42 raises TypeError naming what it got; next() takes any hashable, as PocketFlow."""
    with pytest.raises(TypeError, match="Action must be a string, got int: 42"):
        Node() - 42  # type: ignore[operator]
    a, b = Node(), Node()
    assert a.next(b, 42) is b  # type: ignore[arg-type]
    assert a.successors == {42: b}


def test_overwriting_successor_warns() -> None:
    """Rewiring an action warns like PocketFlow."""
    a = Node()
    a >> Node()
    with pytest.warns(UserWarning, match="Overwriting successor for action 'default'"):
        a >> Node()


def test_flow_start_method_must_be_node() -> None:
    """flow.start(42) raises TypeError like Flow(start=42)."""
    with pytest.raises(TypeError):
        Flow().start(42)  # type: ignore[arg-type]
