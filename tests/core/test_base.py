"""Flows copy each node per step, honouring a subclass's own copy protocol."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketbatch import AsyncBatchNode, AsyncParallelBatchNode, BatchNode, Flow, Node


class Plain(Node):
    def post(self, shared: dict[str, Any], p: Any, e: Any) -> None:
        shared.setdefault("seen", []).append(self)


def test_each_step_runs_a_fresh_shallow_copy() -> None:
    """The node a flow runs is a copy: same class, same attributes, not the wired object."""
    node = Plain(max_retries=2)
    node.tag = "x"  # type: ignore[attr-defined]
    shared: dict[str, Any] = {}
    Flow(start=node).run(shared)
    [ran] = shared["seen"]
    assert ran is not node
    assert type(ran) is Plain
    assert ran.tag == "x"
    assert ran.max_retries == 2


class WithCopyHook(Node):
    """Counts copies through __copy__, as copy.copy would call it."""

    copies = 0

    def __copy__(self) -> WithCopyHook:
        type(self).copies += 1
        new = WithCopyHook()
        new.__dict__.update(self.__dict__)
        return new


class WithState(Node):
    """Drops an uncopyable handle from its state, as copy.copy would do via __getstate__."""

    def __init__(self) -> None:
        super().__init__()
        self.handle = object()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["handle"] = None
        return state

    def post(self, shared: dict[str, Any], p: Any, e: Any) -> None:
        shared["handle"] = self.handle


class Slotted(Node):
    __slots__ = ("weight",)

    def __init__(self, weight: int) -> None:
        super().__init__()
        self.weight = weight

    def post(self, shared: dict[str, Any], p: Any, e: Any) -> None:
        shared["weight"] = self.weight


def test_custom_copy_hook_is_used() -> None:
    """A node defining __copy__ is copied through it."""
    WithCopyHook.copies = 0
    Flow(start=WithCopyHook()).run({})
    assert WithCopyHook.copies == 1


def test_getstate_is_honoured() -> None:
    """A node defining __getstate__ is copied as copy.copy would copy it."""
    shared: dict[str, Any] = {}
    Flow(start=WithState()).run(shared)
    assert shared["handle"] is None


def test_slots_are_copied() -> None:
    """Slot attributes survive the per-step copy."""
    shared: dict[str, Any] = {}
    Flow(start=Slotted(7)).run(shared)
    assert shared["weight"] == 7


def test_copy_copy_still_works_on_nodes() -> None:
    """copy.copy(node) keeps its standard meaning."""
    node = Plain()
    node.tag = "y"  # type: ignore[attr-defined]
    twin = copy.copy(node)
    assert twin is not node
    assert twin.tag == "y"  # type: ignore[attr-defined]


@pytest.mark.parametrize("falsy", [0, False])
def test_falsy_non_iterable_prep_is_an_empty_batch(falsy: object) -> None:
    """Like PocketFlow's `items or []`, a falsy non-iterable prep result is an empty batch."""

    class Sync(BatchNode):
        def prep(self, shared: Any) -> Any:
            return falsy

        def post(self, shared: dict[str, Any], p: Any, results: Any) -> None:
            shared["results"] = results

    shared: dict[str, Any] = {}
    Sync().run(shared)
    assert shared["results"] == []


@pytest.mark.parametrize("cls", [AsyncBatchNode, AsyncParallelBatchNode])
@pytest.mark.asyncio
async def test_falsy_non_iterable_prep_is_an_empty_async_batch(cls: type[Any]) -> None:
    """The async batch nodes treat a falsy non-iterable prep result as an empty batch too."""

    class Async(cls):  # type: ignore[misc,valid-type]
        async def prep_async(self, shared: Any) -> Any:
            return 0

        async def post_async(self, shared: dict[str, Any], p: Any, results: Any) -> None:
            shared["results"] = results

    shared: dict[str, Any] = {}
    await Async().run_async(shared)
    assert shared["results"] == []


def test_truthy_non_iterable_prep_is_a_clear_error() -> None:
    """A truthy non-iterable prep result says what went wrong and how to fix it."""

    class Bad(BatchNode):
        def prep(self, shared: Any) -> Any:
            return 42

    with pytest.raises(TypeError, match="prep returned int, which is not iterable"):
        Bad(name="bad").run({})
