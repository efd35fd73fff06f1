"""The core layer: nodes, flows, batch classes, concurrency, retries, events.

It depends on the standard library and ``typing-extensions`` only; everything
else in pocketbatch builds on it. The friendly names are re-exported from
:mod:`pocketbatch`.
"""

from pocketbatch.core._events import Event, EventKind, Observer
from pocketbatch.core._flow import (
    AsyncBatchFlow,
    AsyncFlow,
    AsyncParallelBatchFlow,
    BatchFlow,
    Flow,
)
from pocketbatch.core._node import (
    AsyncBatchNode,
    AsyncNode,
    BaseNode,
    BatchNode,
    ItemError,
    Node,
    NodeOptions,
)
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
    "RateLimiter",
    "bounded_map",
)
