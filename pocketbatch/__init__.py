"""pocketbatch: PocketFlow-compatible nodes and flows, built to run over many inputs.

Switch ``from pocketflow import ...`` to ``from pocketbatch import ...`` and
existing code runs unchanged; then reach for bounded concurrency
(``max_concurrency``), fault isolation (``on_item_error="collect"``), retries with
backoff, rate limits, thread and process pools, events and Mermaid diagrams.

Layers (each depends only on those above it): ``pocketbatch.core`` (stdlib and
typing-extensions only) is re-exported here, and so are the flow-file loader's
names (:func:`load_flow`, :class:`LoadedFlow`, :class:`FlowResult`,
:class:`FlowError`, :class:`ComponentRegistry`), which are imported on first use so
that ``import pocketbatch`` loads neither YAML, jsonschema nor httpx.

Example:
    >>> from pocketbatch import Flow, Node
    >>> class Hello(Node):
    ...     def post(self, shared, prep_res, exec_res): shared["greeting"] = "hello"
    >>> shared = {}
    >>> Flow(start=Hello()).run(shared)
    >>> shared
    {'greeting': 'hello'}
"""

import typing as _typing

from pocketbatch._errors import (
    ComponentError,
    FlowDefinitionError,
    FlowWarning,
    LoadError,
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
    ProviderLimiter,
    Usage,
)

if _typing.TYPE_CHECKING:
    from pocketbatch.batch import BatchItemError, evaluate_batch, iter_batch, run_batch
    from pocketbatch.loader import (
        ComponentRegistry,
        FlowError,
        FlowResult,
        LoadedFlow,
        load_flow,
    )

__version__ = "0.1.0"

# Public names that live in the loader layer, imported when first used.
_LAZY = {
    "BatchItemError": "pocketbatch.batch",
    "evaluate_batch": "pocketbatch.batch",
    "iter_batch": "pocketbatch.batch",
    "run_batch": "pocketbatch.batch",
    "ComponentRegistry": "pocketbatch.loader",
    "FlowError": "pocketbatch.loader",
    "FlowResult": "pocketbatch.loader",
    "LoadedFlow": "pocketbatch.loader",
    "load_flow": "pocketbatch.loader",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pocketbatch' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = (
    "AsyncBatchFlow",
    "AsyncBatchNode",
    "AsyncFlow",
    "AsyncNode",
    "AsyncParallelBatchFlow",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchFlow",
    "BatchItemError",
    "BatchNode",
    "ComponentError",
    "ComponentRegistry",
    "Event",
    "EventKind",
    "Flow",
    "FlowDefinitionError",
    "FlowError",
    "FlowResult",
    "FlowWarning",
    "ItemError",
    "LoadError",
    "LoadedFlow",
    "MissingExtraError",
    "Node",
    "NodeOptions",
    "NodeTimeoutError",
    "Observer",
    "ObserverError",
    "ParallelBatchNode",
    "PocketbatchError",
    "ProviderLimiter",
    "UnknownActionError",
    "Usage",
    "__version__",
    "evaluate_batch",
    "iter_batch",
    "load_flow",
    "run_batch",
)
