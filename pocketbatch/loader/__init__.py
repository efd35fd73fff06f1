"""Flows from files: compile Stepflow-format YAML/JSON flows into pocketbatch graphs.

The public names are re-exported from :mod:`pocketbatch` (imported on first use,
so ``import pocketbatch`` stays light): :func:`load_flow`, :class:`LoadedFlow`,
:class:`FlowResult`, :class:`FlowError`, :class:`ComponentRegistry`.

Inside: ``_source`` reads YAML/JSON with positions; ``_spec`` parses and checks a
flow file; ``_expr`` compiles and evaluates expressions; ``_registry`` resolves
component paths (registry, config files, mocks, ``/python`` imports);
``_builtins`` and ``_nested`` are the builtin components (``_network`` and
``_transport`` confine their outbound HTTP on a server); ``_run`` compiles specs
into core graphs and runs them; ``_testing`` runs a file's ``test.cases``.
"""

from pocketbatch._result import FlowError, FlowResult
from pocketbatch.loader._component import CallContext, LoaderOptions
from pocketbatch.loader._network import NetworkPolicy
from pocketbatch.loader._registry import ComponentRegistry
from pocketbatch.loader._run import FlowRecipe, LoadedFlow, load_flow

__all__ = (
    "CallContext",
    "ComponentRegistry",
    "FlowError",
    "FlowRecipe",
    "FlowResult",
    "LoadedFlow",
    "LoaderOptions",
    "NetworkPolicy",
    "load_flow",
)
