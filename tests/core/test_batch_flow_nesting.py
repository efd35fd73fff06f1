"""Batch flows nest in parent flows whatever their on_item_error mode."""

from __future__ import annotations

import asyncio

import pytest

from pocketbatch import (
    AsyncBatchFlow,
    AsyncFlow,
    AsyncParallelBatchFlow,
    BatchFlow,
    Flow,
    ItemError,
    Node,
)


class Boom(Node):
    """Fails for the param set with i == 1."""

    def exec(self, _: object) -> None:
        if self.params["i"] == 1:
            raise ValueError("one")


class Done(Node):
    def post(self, shared: dict[str, object], p: object, e: object) -> None:
        shared["after"] = True


def test_collecting_batch_flow_nests_in_a_flow() -> None:
    """A collect-mode BatchFlow returns None as its action (as in PocketFlow), not its results."""
    seen: list[object] = []

    class Each(BatchFlow):
        def prep(self, shared: object) -> list[dict[str, int]]:
            return [{"i": 0}, {"i": 1}, {"i": 2}]

        def post(self, shared: object, prep_res: object, exec_res: object) -> object:
            seen.append(exec_res)
            return super().post(shared, prep_res, exec_res)

    inner = Each(start=Boom(), on_item_error="collect")
    inner >> Done()
    shared: dict[str, object] = {}
    assert Flow(start=inner).run(shared) is None
    assert shared == {"after": True}
    [actions] = seen
    assert isinstance(actions, list)
    assert actions[0] is None
    assert isinstance(actions[1], ItemError)
    assert actions[1].index == 1
    assert actions[2] is None


@pytest.mark.parametrize("cls", [AsyncBatchFlow, AsyncParallelBatchFlow])
def test_collecting_async_batch_flow_nests_in_an_async_flow(cls: type[AsyncBatchFlow]) -> None:
    """The async batch flows' default post_async returns None too."""

    class Each(cls):  # type: ignore[valid-type,misc]
        async def prep_async(self, shared: object) -> list[dict[str, int]]:
            return [{"i": 0}, {"i": 1}]

    inner = Each(start=Boom(), on_item_error="collect")
    inner >> Done()
    shared: dict[str, object] = {}
    assert asyncio.run(AsyncFlow(start=inner).run_async(shared)) is None
    assert shared == {"after": True}
