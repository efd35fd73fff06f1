"""Flows: walk a graph of nodes by the actions their ``post`` returns.

A flow is itself a node, so flows nest. At every step the flow runs a *copy* of
the node (PocketFlow's contract: state set on ``self`` does not leak between
runs) with the flow's params, then follows the successor for the returned action.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterable, Iterable
from functools import partial
from typing import Any

from pocketbatch._errors import FlowDefinitionError, ObserverError, UnknownActionError
from pocketbatch.core._async_node import AsyncNode
from pocketbatch.core._base import BaseNode, SharedT, node_name
from pocketbatch.core._events import EventKind
from pocketbatch.core._items import (
    ItemRun,
    OnItemError,
    batch_items,
    check_on_item_error,
    set_parallel_options,
    settle_item,
)
from pocketbatch.core._mermaid import render
from pocketbatch.core._parallel import bounded_map
from pocketbatch.core._retry import RateLimiter

__all__ = (
    "AsyncBatchFlow",
    "AsyncFlow",
    "AsyncParallelBatchFlow",
    "BatchFlow",
    "Flow",
)


class Flow(BaseNode[SharedT, Any, Any]):
    """Runs a graph of nodes from ``start``, following the action each ``post`` returns.

    ``node >> other`` makes ``other`` follow on the ``"default"`` action;
    ``node - "approve" >> other`` on ``"approve"``. The flow ends when a node's
    action has no successor (with PocketFlow's warning ``Flow ends: ...`` if the
    node had successors for other actions; ``node - "done" >> None`` ends it there
    the same way, as PocketFlow does). A flow's ``post`` returns the last
    action by default, so a nested flow can branch its parent.

    Args:
        start: the first node (or set it later with :meth:`start`).
        name: shown in events, errors and diagrams.
        strict: raise :class:`~pocketbatch.UnknownActionError` instead of warning
            when a node returns an action it has no successor for (an action
            wired to ``None`` ends the flow quietly).

    Example:
        >>> from pocketbatch import Flow, Node
        >>> class Check(Node):
        ...     def post(self, shared, p, e): return "ok" if shared["n"] > 0 else "bad"
        >>> class Say(Node):
        ...     def __init__(self, word): super().__init__(); self.word = word
        ...     def post(self, shared, p, e): shared["said"] = self.word
        >>> check = Check()
        >>> check - "ok" >> Say("yes")
        <Say 'Say'>
        >>> check - "bad" >> Say("no")
        <Say 'Say'>
        >>> shared = {"n": 3}
        >>> Flow(start=check).run(shared)
        >>> shared["said"]
        'yes'
    """

    _EVENTS = (EventKind.FLOW_STARTED, EventKind.FLOW_FINISHED, EventKind.FLOW_FAILED)
    _pb_strict: bool = False
    start_node: BaseNode[Any, Any, Any] | None = None

    def __init__(
        self,
        start: BaseNode[Any, Any, Any] | None = None,
        *,
        name: str | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(name=name)
        self.start_node = _check_start(start, allow_none=True)
        if strict:
            self._pb_strict = True

    def start(self, start: BaseNode[Any, Any, Any]) -> BaseNode[Any, Any, Any]:
        """Set the first node and return it, so wiring can go on from there.

        Example:
            >>> from pocketbatch import Flow, Node
            >>> flow = Flow()
            >>> first = flow.start(Node(name="first"))
            >>> flow.start_node is first
            True
        """
        self.start_node = _check_start(start, allow_none=False)
        return start

    def get_next_node(
        self, curr: BaseNode[Any, Any, Any], action: Any
    ) -> BaseNode[Any, Any, Any] | None:
        """The successor of ``curr`` for ``action`` (``None``/empty meaning ``"default"``).

        Example:
            >>> from pocketbatch import Flow, Node
            >>> a, b = Node(), Node()
            >>> _ = a - "go" >> b
            >>> Flow(start=a).get_next_node(a, "go") is b
            True
        """
        key = action or "default"
        nxt = curr.successors.get(key)
        if nxt is None and curr.successors:
            if self._pb_strict:
                if key in curr.successors:  # ``- action >> None``: an end on purpose
                    return None
                raise UnknownActionError(node_name(curr), action, list(curr.successors))
            warnings.warn(
                f"Flow ends: '{action}' not found in {list(curr.successors)}", stacklevel=4
            )
        return nxt

    def _first(self) -> BaseNode[Any, Any, Any]:
        if self.start_node is None:
            raise FlowDefinitionError(
                f"flow {node_name(self)!r} has no start node; "
                "pass Flow(start=node) or call flow.start(node)"
            )
        return self.start_node._pb_copy()

    def _orch(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        curr: BaseNode[Any, Any, Any] | None = self._first()
        p = params or {**self.params}
        last_action = None
        while curr is not None:
            curr.set_params(p)
            last_action = curr._run(shared)
            nxt = self.get_next_node(curr, last_action)
            curr = None if nxt is None else nxt._pb_copy()
        return last_action

    def _steps(self, shared: Any) -> Any:
        p = self.prep(shared)
        o = self._orch(shared)
        return self.post(shared, p, o)

    def post(self, shared: SharedT, prep_res: Any, exec_res: Any) -> Any:
        """Return the last action of the run (override to change it)."""
        return exec_res

    def validate(self) -> None:
        """Check the wiring before running: a start node, and only sync steps in a sync flow.

        Nested flows are checked too.

        Raises:
            FlowDefinitionError: listing every problem found.

        Example:
            >>> from pocketbatch import Flow, AsyncNode
            >>> Flow(start=AsyncNode(name="fetch"), name="main").validate()
            Traceback (most recent call last):
            ...
            pocketbatch._errors.FlowDefinitionError: flow 'main': step 'fetch' is an AsyncNode, ...
        """
        problems: list[str] = []
        _collect_problems(self, problems, set())
        if problems:
            raise FlowDefinitionError("; ".join(problems))

    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart`` of the graph: nodes, labelled transitions, nested
        flows as subgraphs.

        Example:
            >>> from pocketbatch import Flow, Node
            >>> a, b = Node(name="draft"), Node(name="publish")
            >>> _ = a - "approve" >> b
            >>> print(Flow(start=a, name="review").to_mermaid())
            flowchart TD
                n0["draft"]
                n1["publish"]
                n0 -->|"approve"| n1
        """
        return render(self, Flow)


def _check_start(
    start: BaseNode[Any, Any, Any] | None, *, allow_none: bool
) -> BaseNode[Any, Any, Any] | None:
    if (start is None and allow_none) or isinstance(start, BaseNode):
        return start
    raise TypeError(f"start must be a node or a flow, got {type(start).__name__}: {start!r}")


def _collect_problems(flow: Flow[Any], problems: list[str], seen: set[int]) -> None:
    if id(flow) in seen:
        return
    seen.add(id(flow))
    if flow.start_node is None:
        problems.append(
            f"flow {node_name(flow)!r} has no start node; "
            "pass Flow(start=node) or call flow.start(node)"
        )
        return
    is_async = isinstance(flow, AsyncFlow)
    stack: list[BaseNode[Any, Any, Any]] = [flow.start_node]
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if not is_async and isinstance(node, AsyncNode):
            kind = "an async flow" if isinstance(node, Flow) else f"an {_async_base(node)}"
            problems.append(
                f"flow {node_name(flow)!r}: step {node_name(node)!r} is {kind}, "
                "which a sync Flow cannot run; use AsyncFlow"
            )
        if isinstance(node, Flow):
            _collect_problems(node, problems, seen)
        stack.extend(n for n in reversed(node.successors.values()) if n is not None)


def _async_base(node: BaseNode[Any, Any, Any]) -> str:
    for klass in type(node).__mro__:
        if klass.__module__.startswith("pocketbatch."):
            return klass.__name__
    return type(node).__name__


class BatchFlow(Flow[SharedT]):
    """Runs its sub-flow once per param dict that ``prep`` returns, one after another.

    Each run's params are the dict merged over the flow's own ``params``; nodes
    read them as ``self.params``. ``post`` receives ``(shared, param_list, None)``.

    Args:
        on_item_error: ``"raise"`` (default) or ``"collect"``: every run goes
            ahead, and ``post``'s third argument becomes the list of last actions
            with an :class:`~pocketbatch.ItemError` for each run that raised.
        start, name, strict: as for :class:`Flow`.

    Example:
        >>> from pocketbatch import BatchFlow, Node
        >>> class Greet(Node):
        ...     def post(self, shared, p, e):
        ...         greeting, who = self.params["greeting"], self.params["who"]
        ...         shared.setdefault("out", []).append(f"{greeting} {who}")
        >>> class Everyone(BatchFlow):
        ...     def prep(self, shared): return [{"who": w} for w in shared["people"]]
        >>> flow = Everyone(start=Greet())
        >>> flow.set_params({"greeting": "hi"})
        >>> shared = {"people": ["ada", "alan"]}
        >>> flow.run(shared)
        >>> shared["out"]
        ['hi ada', 'hi alan']
    """

    _pb_on_item_error: OnItemError = "raise"

    def __init__(
        self,
        start: BaseNode[Any, Any, Any] | None = None,
        *,
        on_item_error: OnItemError = "raise",
        name: str | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(start, name=name, strict=strict)
        if check_on_item_error(on_item_error) != "raise":
            self._pb_on_item_error = on_item_error

    def post(self, shared: SharedT, prep_res: Any, exec_res: Any) -> Any:
        """Return the next action: ``None`` by default, as in PocketFlow.

        ``exec_res`` is ``None``, or with ``on_item_error="collect"`` the list of
        each run's last action (an :class:`~pocketbatch.ItemError` where it raised).
        """
        return None

    def _param_sets(self, param_list: Any) -> Iterable[Any]:
        return batch_items(self, param_list)

    def _run_params(self, index: int, params: dict[str, Any], shared: Any) -> Any:
        run = ItemRun(self, index)
        try:
            action = self._orch(shared, {**self.params, **params})
        except ObserverError:
            raise
        except Exception as exc:
            failure = run.failed(exc)
            if self._pb_on_item_error == "raise":
                raise
            return settle_item(True, index, failure)
        return run.finished(action, action=action)

    def _steps(self, shared: Any) -> Any:
        pr = self.prep(shared)
        actions = [self._run_params(i, bp, shared) for i, bp in enumerate(self._param_sets(pr))]
        return self.post(shared, pr if pr is not None else [], self._exec_res(actions))

    def _exec_res(self, actions: list[Any]) -> list[Any] | None:
        return actions if self._pb_on_item_error == "collect" else None


class AsyncFlow(Flow[SharedT], AsyncNode[SharedT, Any, Any]):
    """A flow that can run async nodes; sync nodes run too (on the event loop, or on
    a worker thread when they have ``offload=True``).

    Run it with ``await flow.run_async(shared)``.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncFlow, AsyncNode, Node
        >>> class Fetch(AsyncNode):
        ...     async def exec_async(self, _): return "page"
        ...     async def post_async(self, shared, p, page): shared["page"] = page
        >>> class Count(Node):
        ...     def prep(self, shared): return shared["page"]
        ...     def exec(self, page): return len(page)
        ...     def post(self, shared, p, n): shared["n"] = n
        >>> fetch = Fetch()
        >>> _ = fetch >> Count(offload=True)
        >>> shared = {}
        >>> asyncio.run(AsyncFlow(start=fetch).run_async(shared))
        >>> shared["n"]
        4
    """

    async def _orch_async(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        curr: BaseNode[Any, Any, Any] | None = self._first()
        p = params or {**self.params}
        last_action = None
        while curr is not None:
            curr.set_params(p)
            if isinstance(curr, AsyncNode):
                last_action = await curr._run_async(shared)
            elif curr._pb_offload:
                last_action = await asyncio.to_thread(curr._run, shared)
            else:
                last_action = curr._run(shared)
            nxt = self.get_next_node(curr, last_action)
            curr = None if nxt is None else nxt._pb_copy()
        return last_action

    async def _steps_async(self, shared: Any) -> Any:
        p = await self.prep_async(shared)
        o = await self._orch_async(shared)
        return await self.post_async(shared, p, o)

    async def post_async(self, shared: SharedT, prep_res: Any, exec_res: Any) -> Any:
        """Return the last action of the run (override to change it)."""
        return exec_res


class AsyncBatchFlow(AsyncFlow[SharedT], BatchFlow[SharedT]):
    """Runs its sub-flow once per param dict from ``prep_async``, one after another.

    ``prep_async`` may return an iterable or an async iterable of param dicts.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncBatchFlow, AsyncNode
        >>> class Save(AsyncNode):
        ...     async def post_async(self, shared, p, e):
        ...         shared.setdefault("ids", []).append(self.params["id"])
        >>> class PerId(AsyncBatchFlow):
        ...     async def prep_async(self, shared): return [{"id": i} for i in range(3)]
        >>> shared = {}
        >>> asyncio.run(PerId(start=Save()).run_async(shared))
        >>> shared["ids"]
        [0, 1, 2]
    """

    async def post_async(self, shared: SharedT, prep_res: Any, exec_res: Any) -> Any:
        """Return the next action: ``None`` by default (see :meth:`BatchFlow.post`)."""
        return None

    async def _steps_async(self, shared: Any) -> Any:
        pr = await self.prep_async(shared)
        actions: list[Any] = []
        collect = self._pb_on_item_error == "collect"
        if isinstance(pr, AsyncIterable):
            param_sets: Any = pr
        else:
            param_sets = self._param_sets(pr)
        index = 0
        async for bp in _each(param_sets):
            action = await _run_params_async(self, index, bp, shared)
            actions.append(settle_item(collect, index, action))
            index += 1
        return await self.post_async(shared, pr if pr is not None else [], self._exec_res(actions))


async def _run_params_async(
    flow: AsyncFlow[Any], index: int, params: dict[str, Any], shared: Any
) -> Any:
    """One sub-flow run of an async batch flow; a failure comes back as ``_Failure``."""
    run = ItemRun(flow, index)
    try:
        action = await flow._orch_async(shared, {**flow.params, **params})
    except ObserverError:
        raise
    except Exception as exc:
        return run.failed(exc)
    return run.finished(action, action=action)


async def _each(items: Iterable[Any] | AsyncIterable[Any]) -> Any:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class AsyncParallelBatchFlow(AsyncFlow[SharedT], BatchFlow[SharedT]):
    """Runs its sub-flow once per param dict from ``prep_async``, concurrently.

    As in PocketFlow, every run shares the one ``shared`` store and gets its own
    copies of the nodes (so each sees its own ``params``). Beyond PocketFlow:

    Args:
        max_concurrency: never more than this many sub-flow runs in flight;
            param dicts are pulled lazily. ``None``: all at once.
        max_per_second: start at most this many runs per second.
        on_item_error: ``"raise"`` (first failure cancels and awaits the runs in
            flight, then propagates) or ``"collect"``.
        start, name, strict: as for :class:`Flow`.

    Example:
        >>> import asyncio
        >>> from pocketbatch import AsyncParallelBatchFlow, AsyncNode
        >>> class Resize(AsyncNode):
        ...     async def exec_async(self, _):
        ...         await asyncio.sleep(0)
        ...         return self.params["size"] * 2
        ...     async def post_async(self, shared, p, e): shared[self.params["size"]] = e
        >>> class AllSizes(AsyncParallelBatchFlow):
        ...     async def prep_async(self, shared): return [{"size": s} for s in (1, 2, 3)]
        >>> shared = {}
        >>> asyncio.run(AllSizes(start=Resize(), max_concurrency=2).run_async(shared))
        >>> sorted(shared.items())
        [(1, 2), (2, 4), (3, 6)]
    """

    _pb_max_concurrency: int | None = None
    _pb_max_per_second: float | None = None

    def __init__(
        self,
        start: BaseNode[Any, Any, Any] | None = None,
        *,
        max_concurrency: int | None = None,
        max_per_second: float | None = None,
        on_item_error: OnItemError = "raise",
        name: str | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__(start, on_item_error=on_item_error, name=name, strict=strict)
        set_parallel_options(self, max_concurrency, max_per_second)

    async def post_async(self, shared: SharedT, prep_res: Any, exec_res: Any) -> Any:
        """Return the next action: ``None`` by default (see :meth:`BatchFlow.post`)."""
        return None

    async def _limited_run(
        self, limiter: RateLimiter | None, shared: Any, index: int, params: dict[str, Any]
    ) -> Any:
        if limiter is not None:
            await limiter.acquire()
        return await _run_params_async(self, index, params, shared)

    async def _steps_async(self, shared: Any) -> Any:
        pr = await self.prep_async(shared)
        limiter = RateLimiter(self._pb_max_per_second) if self._pb_max_per_second else None
        actions = await bounded_map(
            partial(self._limited_run, limiter, shared),
            pr if isinstance(pr, AsyncIterable) else self._param_sets(pr),
            limit=self._pb_max_concurrency,
            collect=self._pb_on_item_error == "collect",
            owner=self,
        )
        return await self.post_async(shared, pr if pr is not None else [], self._exec_res(actions))
