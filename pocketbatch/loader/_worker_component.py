"""A step routed to a Stepflow ``grpc`` plugin: run by the plugin's worker process.

:class:`WorkerComponent` is what the resolver returns for such a path. Nothing here
imports gRPC: the run's :class:`~pocketbatch.loader._worker_hub.WorkerHub` is imported
and started on the first call. A call finds the worker component mounted at the
path (the route's remainder, matched against the worker's own component list, as
Stepflow routes), queues one task and waits for the result. A transport failure (the
worker crashed, went silent, timed out) is retried up to ``retry.transportMaxRetries``
times (default 3) with Stepflow's backoff, the worker restarted and the task's
``attempt`` counted up, as Stepflow does; a component's own error is the step's
error, code, message and data unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from pocketbatch._errors import ComponentError
from pocketbatch.loader._component import CallContext, Component
from pocketbatch.loader._services import RunServices
from pocketbatch.loader._worker_config import WorkerPlugin

__all__ = ("WorkerComponent",)


class WorkerComponent:
    """The component at ``path``, served by a ``grpc`` plugin's worker.

    Args:
        plugin: the plugin (from ``stepflow-config.yml``).
        subpath: the path after the route's prefix (``/udf`` for ``/python/udf``).
        path: the step's full component path, for messages.
        fallback: what serves the path when the worker has no such component (the
            next rule of a route, as in Stepflow, whose router asks each plugin's
            component list in turn: ``"/": [{plugin: langchain}, {plugin: builtin}]``).

    Example:
        >>> c = WorkerComponent(WorkerPlugin("python", "python", "stepflow_worker"), "/udf",
        ...                     "/python/udf")
        >>> c
        <WorkerComponent '/python/udf' on plugin 'python'>
    """

    def __init__(
        self, plugin: WorkerPlugin, subpath: str, path: str, fallback: Component | None = None
    ) -> None:
        self.plugin = plugin
        self.subpath = subpath
        self.path = path
        self.fallback = fallback

    def __repr__(self) -> str:
        return f"<WorkerComponent {self.path!r} on plugin {self.plugin.name!r}>"

    async def __call__(self, input: Any, ctx: CallContext, /) -> Any:
        if ctx.services is None:
            async with RunServices() as own:
                return await self(input, dataclasses.replace(ctx, services=own))
        from pocketbatch.loader._worker_hub import hub_for
        from pocketbatch.loader._worker_runtime import (
            TransportFailure,
            component_ids,
            match_component,
        )

        hub = hub_for(ctx.services)
        runtime = await hub.runtime(self.plugin)
        retries = 0  # transport retries of this call (listing and task together)

        async def after(failure: TransportFailure) -> None:
            """Wait and restart the worker for the next attempt, or give up."""
            nonlocal retries
            if retries >= self.plugin.transport_max_retries:
                raise ComponentError(failure.code, failure.message) from None
            retries += 1
            await asyncio.sleep(self.plugin.backoff.delay(retries))
            await runtime.prepare_for_retry(failure.generation)

        while True:
            try:
                components = await runtime.components()
                break
            except TransportFailure as failure:
                await after(failure)
        found = match_component(components, self.subpath)
        if found is None and self.fallback is not None:
            return await self.fallback(input, ctx)
        if found is None:
            raise ComponentError(
                "ORCHESTRATOR_ERROR",
                "error routing component",
                data={
                    "path": self.path,
                    "plugin": self.plugin.name,
                    "detail": f"the worker of plugin {self.plugin.name!r} has no component at "
                    f"{self.subpath!r} (it serves {', '.join(component_ids(components))})",
                },
            )
        component_id, path_params = found
        task_id = str(uuid.uuid4())
        attempt = ctx.attempt  # a flow's on_error retry calls again with the next
        with hub.call(ctx) as token:
            while True:
                task = runtime.task(
                    component_id,
                    input,
                    attempt=attempt,
                    path_params=path_params,
                    task_id=task_id,
                    token=token,
                    step_id=ctx.step_id,
                )
                try:
                    return await runtime.submit(task, self.plugin.queue_timeout)
                except TransportFailure as failure:
                    await after(failure)
                    attempt += 1
