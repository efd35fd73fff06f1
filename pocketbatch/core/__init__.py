"""The core layer: nodes, flows, batch classes, concurrency, retries, events.

It depends on the standard library and ``typing-extensions`` only; everything
else in pocketbatch builds on it. The friendly names are re-exported from
:mod:`pocketbatch`.
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
    "RateLimiter",
    "bounded_map",
)
