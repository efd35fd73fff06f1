"""The orchestrator side of Stepflow's worker protocol, served for one run.

A :class:`WorkerHub` is a ``grpc.aio`` server on ``127.0.0.1`` (a free port) with the
three services a stepflow-py 0.13 worker calls, built from the stubs stepflow-py
ships:

* ``TasksService``: ``PullTasks`` (the worker's task stream) and
  ``GetOrchestratorForRun`` (always this hub);
* ``OrchestratorService``: ``TaskHeartbeat``, ``CompleteTask``, and a worker
  context's ``SubmitRun``/``GetRun`` (``submit_run``, ``evaluate_flow``...): the flow,
  stored as a blob, runs as a nested flow of the calling step (its variables, its
  services);
* ``BlobService``: ``PutBlob``/``GetBlob`` on the run's blob store.

The hub is made on first use per run (:meth:`RunServices.owned
<pocketbatch.loader._services.RunServices.owned>`) and closed with the run: its
workers are stopped, then the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import timestamp_pb2
from stepflow_py.proto import (
    blobs_pb2,
    blobs_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
)

from pocketbatch._errors import ComponentError, PocketbatchError
from pocketbatch._result import FlowResult
from pocketbatch.loader._blobs import BlobStore
from pocketbatch.loader._component import CallContext, run_each
from pocketbatch.loader._services import RunServices
from pocketbatch.loader._worker_config import WorkerPlugin
from pocketbatch.loader._worker_convert import error_code, from_value, task_error, to_value
from pocketbatch.loader._worker_runtime import PluginRuntime

__all__ = ("WorkerHub", "hub_for")

_WAIT_SECS = 300


def hub_for(services: RunServices) -> WorkerHub:
    """The run's hub (made on first use, closed with the services)."""
    return services.owned(WorkerHub, lambda: WorkerHub(services.blobs))


@dataclass(eq=False)
class _SubRun:
    run_id: str
    flow_id: str
    flow_name: str | None
    root: str
    job: asyncio.Task[list[FlowResult]]
    created: timestamp_pb2.Timestamp
    done: timestamp_pb2.Timestamp | None = None
    results: list[FlowResult] = field(default_factory=list)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class WorkerHub:
    """The run's worker services and its plugins' runtimes.

    Example:
        >>> from pocketbatch.loader._blobs import MemoryBlobStore
        >>> WorkerHub(MemoryBlobStore()).address is None
        True
    """

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.address: str | None = None
        self._server: grpc.aio.Server | None = None
        self._start = asyncio.Lock()
        self._runtimes: dict[tuple[Path | None, str], PluginRuntime] = {}
        self._queues: dict[str, PluginRuntime] = {}
        self._calls: dict[str, CallContext] = {}
        self._runs: dict[str, _SubRun] = {}

    async def runtime(self, plugin: WorkerPlugin) -> PluginRuntime:
        """The plugin's runtime in this run (the server starts on first use)."""
        async with self._start:
            if self._server is None:
                server = grpc.aio.server()
                tasks_pb2_grpc.add_TasksServiceServicer_to_server(_Tasks(self), server)
                orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(
                    _Orchestrator(self), server
                )
                blobs_pb2_grpc.add_BlobServiceServicer_to_server(_Blobs(self), server)
                port = server.add_insecure_port("127.0.0.1:0")
                await server.start()
                self._server, self.address = server, f"127.0.0.1:{port}"
        key = (plugin.cwd, plugin.name)
        found = self._runtimes.get(key)
        if found is None:
            other = self._queues.get(plugin.queue_name)
            if other is not None:
                raise ComponentError(
                    "ORCHESTRATOR_ERROR",
                    f"plugins {other.plugin.name!r} ({other.plugin.where}) and {plugin.name!r} "
                    f"({plugin.where}) use the same queueName {plugin.queue_name!r}",
                )
            assert self.address is not None
            found = self._runtimes[key] = PluginRuntime(plugin, self.address)
            self._queues[plugin.queue_name] = found
        return found

    @contextlib.contextmanager
    def call(self, ctx: CallContext) -> Iterator[str]:
        """A token the worker's context sends back (``root_run_id``) to reach ``ctx``."""
        token = str(uuid.uuid4())
        self._calls[token] = ctx
        try:
            yield token
        finally:
            del self._calls[token]

    def owner(self, task_id: str) -> PluginRuntime | None:
        return next((r for r in self._runtimes.values() if r.owns(task_id)), None)

    async def aclose(self) -> None:
        """Stop every worker, end the sub-runs, then the server."""
        for runtime in self._runtimes.values():
            await runtime.aclose()
        for run in self._runs.values():
            run.job.cancel()
        for run in self._runs.values():
            with contextlib.suppress(BaseException):
                await run.job
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    # ------------------------------------------------------------------ sub-runs

    async def submit_run(
        self, request: orchestrator_pb2.OrchestratorSubmitRunRequest
    ) -> orchestrator_pb2.OrchestratorRunStatus:
        run_request = request.run_request
        ctx = self._calls.get(request.root_run_id)
        if ctx is None or ctx.load_subflow is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"run not found: {request.root_run_id}")
        try:
            flow_data, _ = await self.blobs.get(run_request.flow_id)
        except ComponentError:
            raise _Abort(
                grpc.StatusCode.NOT_FOUND, f"flow not found: {run_request.flow_id}"
            ) from None
        try:
            flow = ctx.load_subflow(flow_data)
        except PocketbatchError as exc:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid flow: {exc}") from None
        inputs = [from_value(v) for v in run_request.input]
        variables = {
            **ctx.variables,
            **{k: from_value(v) for k, v in run_request.variables.items()},
        }
        whole = run_each(
            flow,
            inputs,
            variables=variables,
            services=ctx.services,
            max_concurrency=(
                run_request.max_concurrency if run_request.HasField("max_concurrency") else 10
            ),  # Stepflow's default
        )
        name = flow_data.get("name") if isinstance(flow_data, dict) else None
        run = _SubRun(
            str(uuid.uuid4()),
            run_request.flow_id,
            name if isinstance(name, str) else None,
            request.root_run_id,
            asyncio.create_task(whole),
            _now(),
        )
        self._runs[run.run_id] = run
        if run_request.wait:
            await self._wait(run, run_request.timeout_secs or _WAIT_SECS)
        return self._status(run, include_results=True)

    async def get_run(
        self, request: orchestrator_pb2.OrchestratorGetRunRequest
    ) -> orchestrator_pb2.OrchestratorRunStatus:
        run = self._runs.get(request.run_id)
        if run is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"run not found: {request.run_id}")
        if request.wait:
            await self._wait(run, request.timeout_secs or _WAIT_SECS)
        return self._status(run, include_results=request.include_results)

    async def _wait(self, run: _SubRun, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(run.job), seconds)

    def _status(
        self, run: _SubRun, *, include_results: bool
    ) -> orchestrator_pb2.OrchestratorRunStatus:
        status = orchestrator_pb2.OrchestratorRunStatus(
            run_id=run.run_id,
            flow_id=run.flow_id,
            root_run_id=run.root,
            parent_run_id=run.root,
            created_at=run.created,
        )
        if run.flow_name is not None:
            status.flow_name = run.flow_name
        if not run.job.done():
            status.status = common_pb2.EXECUTION_STATUS_RUNNING
            return status
        if run.done is None:
            run.done = _now()
            run.results = run.job.result() if not run.job.cancelled() else []
        failed = sum(r.outcome == "failed" for r in run.results)
        status.status = (
            common_pb2.EXECUTION_STATUS_FAILED if failed else common_pb2.EXECUTION_STATUS_COMPLETED
        )
        status.completed_at.CopyFrom(run.done)
        status.items.total = len(run.results)
        status.items.completed = len(run.results) - failed
        status.items.failed = failed
        if include_results:
            for index, result in enumerate(run.results):
                item = status.results.add(item_index=index, completed_at=run.done)
                if result.outcome == "failed" and result.error is not None:
                    item.status = common_pb2.EXECUTION_STATUS_FAILED
                    item.error_message = result.error.message
                    item.error_code = error_code(result.error.code)
                else:
                    item.status = common_pb2.EXECUTION_STATUS_COMPLETED
                    item.output.CopyFrom(to_value(result.result))
        return status


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Tasks(tasks_pb2_grpc.TasksServiceServicer):
    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub

    async def PullTasks(
        self, request: tasks_pb2.PullTasksRequest, context: Any
    ) -> AsyncIterator[tasks_pb2.TaskAssignment]:
        runtime = self.hub._queues.get(request.queue_name)
        if runtime is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"queue not found: {request.queue_name}")
            return
        connection = runtime.connect(request.worker_id or str(uuid.uuid4()))
        try:
            while True:
                task = await runtime.next_for(connection)
                if task is None:
                    return
                yield task
        finally:
            runtime.disconnect(connection)

    async def GetOrchestratorForRun(
        self, request: tasks_pb2.GetOrchestratorForRunRequest, context: Any
    ) -> tasks_pb2.GetOrchestratorForRunResponse:
        return tasks_pb2.GetOrchestratorForRunResponse(
            orchestrator_service_url=self.hub.address or ""
        )


class _Orchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub

    async def TaskHeartbeat(
        self, request: orchestrator_pb2.TaskHeartbeatRequest, context: Any
    ) -> orchestrator_pb2.TaskHeartbeatResponse:
        if not request.worker_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "worker_id is required")
        runtime = self.hub.owner(request.task_id)
        status = None if runtime is None else runtime.heartbeat(request.task_id, request.worker_id)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"task not found: {request.task_id}")
        return orchestrator_pb2.TaskHeartbeatResponse(
            should_abort=status == orchestrator_pb2.TASK_STATUS_ALREADY_CLAIMED,
            status=status,  # type: ignore[arg-type]
        )

    async def CompleteTask(
        self, request: orchestrator_pb2.CompleteTaskRequest, context: Any
    ) -> orchestrator_pb2.CompleteTaskResponse:
        runtime = self.hub.owner(request.task_id)
        kind = request.WhichOneof("result")
        delivered = False
        if runtime is not None and kind == "response":
            delivered = runtime.complete(request.task_id, from_value(request.response.output))
        elif runtime is not None and kind == "error":
            delivered = runtime.complete(request.task_id, error=task_error(request.error))
        elif runtime is not None and kind == "list_components":
            delivered = runtime.complete(request.task_id, list(request.list_components.components))
        elif kind is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "either response, error, or list_components must be provided",
            )
        if not delivered:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"task not found: {request.task_id}")
        return orchestrator_pb2.CompleteTaskResponse()

    async def SubmitRun(
        self, request: orchestrator_pb2.OrchestratorSubmitRunRequest, context: Any
    ) -> orchestrator_pb2.OrchestratorRunStatus:
        try:
            return await self.hub.submit_run(request)
        except _Abort as exc:
            await context.abort(exc.code, exc.details)
            raise

    async def GetRun(
        self, request: orchestrator_pb2.OrchestratorGetRunRequest, context: Any
    ) -> orchestrator_pb2.OrchestratorRunStatus:
        try:
            return await self.hub.get_run(request)
        except _Abort as exc:
            await context.abort(exc.code, exc.details)
            raise


class _Blobs(blobs_pb2_grpc.BlobServiceServicer):
    def __init__(self, hub: WorkerHub) -> None:
        self.hub = hub

    async def PutBlob(
        self, request: blobs_pb2.PutBlobRequest, context: Any
    ) -> blobs_pb2.PutBlobResponse:
        kind = request.blob_type or "data"
        if kind not in ("data", "flow", "binary"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid blob_type: '{kind}'")
        if request.WhichOneof("content") == "raw_data":
            data: Any = base64.b64encode(request.raw_data).decode()
        elif request.WhichOneof("content") == "json_data":
            data = from_value(request.json_data)
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "content is required")
        blob_id = await self.hub.blobs.put(data, kind)  # type: ignore[arg-type]
        response = blobs_pb2.PutBlobResponse(blob_id=blob_id)
        if request.HasField("filename"):
            response.filename = request.filename
        return response

    async def GetBlob(
        self, request: blobs_pb2.GetBlobRequest, context: Any
    ) -> blobs_pb2.GetBlobResponse:
        try:
            data, kind = await self.hub.blobs.get(request.blob_id)
        except ComponentError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"blob not found: {request.blob_id}")
            raise
        response = blobs_pb2.GetBlobResponse(blob_id=request.blob_id, blob_type=kind)
        if kind == "binary" and isinstance(data, str):
            response.raw_data = base64.b64decode(data)
        else:
            response.json_data.CopyFrom(to_value(data))
        return response
