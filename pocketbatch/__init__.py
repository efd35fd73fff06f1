"""pocketbatch: PocketFlow-compatible nodes and flows, built to run over many inputs.

Switch ``from pocketflow import ...`` to ``from pocketbatch import ...`` and
existing code runs unchanged; then reach for bounded concurrency
(``max_concurrency``), fault isolation (``on_item_error="collect"``), retries with
backoff, rate limits, thread and process pools, events and Mermaid diagrams.

Layers (each depends only on those above it): ``pocketbatch.core`` (stdlib and
typing-extensions only) is re-exported here. Importing pocketbatch imports none of
the optional parts.

Example:
    >>> from pocketbatch import Flow, Node
    >>> class Hello(Node):
    ...     def post(self, shared, prep_res, exec_res): shared["greeting"] = "hello"
    >>> shared = {}
    >>> Flow(start=Hello()).run(shared)
    >>> shared
    {'greeting': 'hello'}
"""

from pocketbatch._errors import (
    FlowDefinitionError,
    MissingExtraError,
    NodeTimeoutError,
    ObserverError,
    PocketbatchError,
    UnknownActionError,
)
from pocketbatch.core import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BaseNode,
    BatchFlow,
    BatchNode,
    Event,
    EventKind,
    Flow,
    ItemError,
    Node,
    NodeOptions,
    Observer,
    ParallelBatchNode,
)

__version__ = "0.1.0"

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
    "FlowDefinitionError",
    "ItemError",
    "MissingExtraError",
    "Node",
    "NodeOptions",
    "NodeTimeoutError",
    "Observer",
    "ObserverError",
    "ParallelBatchNode",
    "PocketbatchError",
    "UnknownActionError",
    "__version__",
)
