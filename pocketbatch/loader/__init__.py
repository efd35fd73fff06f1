"""Flows from files: compile Stepflow-format YAML/JSON flows into pocketbatch graphs.

The public names are re-exported from :mod:`pocketbatch` (imported on first use,
so ``import pocketbatch`` stays light): :func:`load_flow`, :class:`LoadedFlow`,
:class:`FlowResult`, :class:`FlowError`, :class:`ComponentRegistry`.

Inside, from the bottom up:

* reading a flow file: ``_source`` reads YAML/JSON with positions; ``_expr`` is
  the expression tree and its evaluation, ``_expr_compile`` builds it from a
  document; ``_spec`` parses and checks a flow file;
* components: ``_component`` is the contract (``CallContext``, ``Subflow``);
  ``_mocks`` are mock components; ``_adapt`` wraps functions and nodes as
  components; ``_registry`` is the ``ComponentRegistry``;
* config files: ``_config`` is what a config says; ``_config_reader`` (shared),
  ``_config_pocketbatch`` and ``_config_stepflow`` read the two formats;
  ``_config_files`` finds and loads them;
* resolving paths: ``_python_modules`` imports user modules and says what they
  offer; ``_resolve`` turns a component path into a component;
* builtins: ``_builtins`` (the table and the small ones), ``_builtin_base``
  (what they share), ``_builtin_files`` (``load_file``, file confinement),
  ``_builtin_http`` (``/http/request``, ``/builtin/openai``) and ``_nested``
  (``/builtin/eval``, ``/builtin/map``);
  ``_network`` and ``_transport`` confine their outbound HTTP on a server;
* running: ``_state`` is one run's store; ``_nodes`` are the step nodes;
  ``_flow_mermaid`` draws data-flow files; ``_load`` has ``load_flow``,
  ``LoadedFlow`` and ``FlowRecipe``; ``_testing`` runs a file's ``test.cases``;
  ``_cache`` is the step cache (``StepCache``) of ``cache: true`` steps.
"""

from pocketbatch._result import FlowError, FlowResult
from pocketbatch.loader._cache import CacheStatistics, StepCache, cache_key
from pocketbatch.loader._component import CallContext, LoaderOptions
from pocketbatch.loader._load import FlowRecipe, LoadedFlow, load_flow
from pocketbatch.loader._network import NetworkPolicy
from pocketbatch.loader._registry import ComponentRegistry

__all__ = (
    "CacheStatistics",
    "CallContext",
    "ComponentRegistry",
    "FlowError",
    "FlowRecipe",
    "FlowResult",
    "LoadedFlow",
    "LoaderOptions",
    "NetworkPolicy",
    "StepCache",
    "cache_key",
    "load_flow",
)
