"""The core layer: nodes, flows, batch classes, concurrency, retries, events.

It depends on the standard library and ``typing-extensions`` only; everything
else in pocketbatch builds on it. The friendly names are re-exported from
:mod:`pocketbatch`.

Modules, each importing only the ones above it:

- ``_events``: :class:`Event`, observers, and the reports a run makes;
- ``_retry``: retry delays, option checks, :class:`RateLimiter`;
- ``_limits``: :class:`ProviderLimiter` (a provider's request and token budgets) and :class:`Usage`;
- ``_base``: :class:`BaseNode`, the hooks, ``>>`` wiring, the per-step copy;
- ``_items``: :class:`ItemError` and what every batch class shares per item;
- ``_node``: :class:`Node` (retries, fallback) and :class:`BatchNode`;
- ``_async_node``: :class:`AsyncNode` (timeouts) and :class:`AsyncBatchNode`;
- ``_parallel``: :func:`bounded_map` and :class:`AsyncParallelBatchNode`;
- ``_pool``: :class:`ParallelBatchNode` on thread or process pools;
- ``_mermaid``: a flow graph as a Mermaid flowchart;
- ``_flow``: :class:`Flow` and the batch, async and parallel flows.
"""

from pocketbatch.core._async_node import AsyncBatchNode, AsyncNode
from pocketbatch.core._base import BaseNode
from pocketbatch.core._events import Event, EventKind, Observer
from pocketbatch.core._flow import (
    AsyncBatchFlow,
    AsyncFlow,
    AsyncParallelBatchFlow,
    BatchFlow,
    Flow,
)
from pocketbatch.core._items import ItemError
from pocketbatch.core._limits import ProviderLimiter, Usage
from pocketbatch.core._node import BatchNode, Node, NodeOptions
from pocketbatch.core._parallel import AsyncParallelBatchNode, bounded_map
from pocketbatch.core._pool import ParallelBatchNode
from pocketbatch.core._retry import RateLimiter

__all__ = (
    "AsyncBatchFlow",
    "AsyncBatchNode",
    "AsyncFlow",
    "AsyncNode",
    "AsyncParallelBatchFlow",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchFlow",
    "BatchNode",
    "Event",
    "EventKind",
    "Flow",
    "ItemError",
    "Node",
    "NodeOptions",
    "Observer",
    "ParallelBatchNode",
    "ProviderLimiter",
    "RateLimiter",
    "Usage",
    "bounded_map",
)
