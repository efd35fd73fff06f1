"""Executors for the many batches of one long-running process (``pocketbatch serve``).

:func:`open_shared_executors` opens, once, what a server's batches share for its
executor spec, and gives each batch its executor: for ``"ray"`` a
:class:`~pocketbatch.executors.ray.RaySession` (one Ray connection, one pool of
actors); for ``"async"`` and ``"process"`` nothing is shared, and each batch gets
an executor of its own from :func:`~pocketbatch.batch.make_executor`.
"""

from __future__ import annotations

from typing import Protocol

from pocketbatch.batch._executors import Executor, ExecutorSpec, make_executor
from pocketbatch.loader import LoadedFlow
from pocketbatch.loader._providers import ProviderLimiters
from pocketbatch.loader._services import ServiceSettings

__all__ = ("SharedExecutors", "open_shared_executors")


class SharedExecutors(Protocol):
    """Gives each batch of a process its executor; closed once, at the end."""

    def executor(
        self,
        flow: LoadedFlow,
        services: ServiceSettings | None = None,
        limiters: ProviderLimiters | None = None,
    ) -> Executor:
        """The executor for one batch's flow (not entered yet); ``services`` sizes its
        HTTP pool and sets its retries; ``limiters``: the provider limiters all the
        process's batches share (Ray's actors keep their own)."""
        ...

    def close(self) -> None:
        """Release what the batches shared."""
        ...


class _PerBatch:
    """Nothing shared: each batch gets an executor of its own."""

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec

    def executor(
        self,
        flow: LoadedFlow,
        services: ServiceSettings | None = None,
        limiters: ProviderLimiters | None = None,
    ) -> Executor:
        return make_executor(self.spec, flow, services=services, limiters=limiters)

    def close(self) -> None:
        return None


def open_shared_executors(spec: ExecutorSpec) -> SharedExecutors:
    """What the batches of a process share for ``spec``; call in the event loop they use.

    Raises:
        PocketbatchError: Ray cannot be reached.
        MissingExtraError: ``"ray"`` without the ``[ray]`` extra.

    Example:
        >>> from pocketbatch import load_flow
        >>> shared = open_shared_executors(ExecutorSpec.parse("async"))
        >>> shared.executor(load_flow("output: 1\\n"))
        AsyncExecutor()
        >>> shared.close()
    """
    if spec.kind == "ray":
        from pocketbatch.executors.ray import RaySession

        return RaySession(spec)
    return _PerBatch(spec)
