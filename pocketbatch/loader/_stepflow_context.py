"""The ``StepflowContext`` an in-process stepflow-py component gets, served by the run.

Imported only when such a component asks for a context (it imports stepflow_py).
What the worker's context does over gRPC, this one does in the run:

* values cross as over gRPC (:func:`wire` to the component, :func:`returned` from
  it), and
  run statuses are ``MessageToDict`` of the worker protocol's messages (whole numbers
  in outputs come back as floats, as the worker's ``GrpcContext`` gives them);
* ``put_blob``/``get_blob``: the run's blob store (``ctx.services.blobs``; a store for
  the call when there are no run services), with Stepflow's content-addressed ids;
* ``submit_run``, ``submit_run_by_id``, ``get_run``: sub-runs of a flow (a ``Flow``,
  a mapping, or a stored flow's blob id) through
  :meth:`~pocketbatch.loader._component.CallContext.evaluate_batch`; the status is
  the worker's dict (``OrchestratorRunStatus`` as ``MessageToDict`` gives it);
* ``evaluate_flow``, ``evaluate_flow_by_id``, ``evaluate_run``,
  ``evaluate_run_by_id``: the results in input order, ``StepflowFailed`` for the
  first failed item, as the worker raises it;
* ``step_id``, ``attempt`` from the step; ``run_id`` a fresh UUID per call
  (pocketbatch runs have no id); ``flow_id`` ``None``.

Not supported here (a clear error): ``overrides``, binary (bytes) blobs.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
from google.protobuf.json_format import MessageToDict
from stepflow_py.proto import common_pb2, orchestrator_pb2
from stepflow_py.worker.context import StepflowContext
from stepflow_py.worker.exceptions import StepflowFailed
from stepflow_py.worker.task_handler import proto_value_to_python, python_to_proto_value

from pocketbatch._errors import ComponentError
from pocketbatch._result import FlowResult
from pocketbatch.loader._builtin_blobs import blob_store
from pocketbatch.loader._component import CallContext
from pocketbatch.loader._worker_convert import error_code, from_value

__all__ = ("InProcessContext", "returned", "wire")


def wire(value: Any) -> Any:
    """``value`` as it looks after a trip through the worker protocol: a protobuf
    ``Value`` (numbers are doubles: whole numbers come back as ints, integers beyond
    2**53 lose precision), whose objects the orchestrator keeps with their keys
    sorted (a ``BTreeMap``). In-process components see their inputs, and the run sees
    their outputs and blobs (and so Stepflow's blob ids), as over gRPC.

    Example:
        >>> wire({"b": 2.0, "a": [1.5, True, None, {"z": 1, "y": 2}]})
        {'a': [1.5, True, None, {'y': 2, 'z': 1}], 'b': 2}
    """
    return _sorted(proto_value_to_python(python_to_proto_value(value)))


def returned(value: Any) -> Any:
    """``value`` sent by a component (an output, a blob, a sub-run's inputs) as the run
    reads it from a worker: ``python_to_proto_value`` on the worker's side, then the
    hub's :func:`~pocketbatch.loader._worker_convert.from_value` (whole numbers within
    64 bits as ints, keys sorted, NaN and infinities as ``None``). (:func:`wire` is the
    other way: what a component receives, read by stepflow-py.)

    Example:
        >>> returned({"b": 2.0, "a": 1e300, "c": float("nan")})
        {'a': 1e+300, 'b': 2, 'c': None}
    """
    return from_value(python_to_proto_value(value))


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


class InProcessContext(StepflowContext):
    """A stepflow-py ``StepflowContext`` for a component called in-process by a run.

    Args:
        ctx: the step's :class:`~pocketbatch.loader._component.CallContext`.
        attempt: the attempt to report (default ``ctx.attempt``; higher after the
            component exited its "worker").
    """

    def __init__(self, ctx: CallContext, *, attempt: int | None = None) -> None:
        attempt = ctx.attempt if attempt is None else attempt
        super().__init__(step_id=ctx.step_id, run_id=str(uuid.uuid4()), attempt=attempt)
        self.call = ctx
        self.blobs = blob_store(ctx)
        self._runs: dict[str, asyncio.Task[dict[str, Any]]] = {}

    # -- blobs

    async def put_blob(self, data: Any, blob_type: str = "data") -> str:
        if isinstance(data, bytes | bytearray):
            raise ComponentError(
                "INVALID_INPUT", "binary blobs are not supported by in-process components"
            )
        value = returned(msgspec.to_builtins(data))
        return await self.blobs.put(value, blob_type)  # type: ignore[arg-type]

    async def get_blob(self, blob_id: str) -> Any:
        value, _kind = await self.blobs.get(blob_id)
        return wire(value)

    # -- runs

    async def submit_run(  # type: ignore[override]
        self,
        flow: Any | None = None,
        inputs: list[Any] | None = None,
        *,
        flow_id: str | None = None,
        wait: bool = True,
        timeout_secs: int | None = None,
        max_concurrency: int | None = None,
        overrides: Any = None,
    ) -> Any:
        """Run ``flow`` (or the stored ``flow_id``) on each input; the run's status
        (with its results when ``wait``), as the worker's ``submit_run`` answers."""
        if overrides:
            raise ComponentError(
                "INVALID_INPUT", "flow overrides are not supported by in-process components"
            )
        if flow is not None and flow_id is None:
            flow_id = await self.put_blob(flow, blob_type="flow")
        if flow_id is None:
            raise ValueError("Either flow or flow_id must be provided")
        definition = await self.get_blob(flow_id)
        items = [returned(item) for item in inputs] if inputs else [{}]
        run_id = str(uuid.uuid4())
        task = asyncio.ensure_future(
            self._run(run_id, flow_id, definition, items, max_concurrency, timeout_secs)
        )
        self._runs[run_id] = task
        if wait:
            return await task
        return _status(run_id, flow_id, definition, len(items), None, self._run_id)

    async def submit_run_by_id(
        self,
        flow_id: str,
        inputs: list[Any],
        wait: bool = False,
        max_concurrency: int | None = None,
        overrides: Any = None,
        subflow_key: Any = None,
    ) -> Any:
        return await self.submit_run(
            flow_id=flow_id,
            inputs=inputs,
            wait=wait,
            max_concurrency=max_concurrency,
            overrides=overrides,
        )

    async def get_run(  # type: ignore[override]
        self,
        run_id: str,
        *,
        wait: bool = False,
        include_results: bool = True,
        timeout_secs: int | None = None,
    ) -> Any:
        """The status of a run this context submitted (``wait``: once it ends)."""
        task = self._runs.get(run_id)
        if task is None:
            raise ComponentError("INVALID_INPUT", f"unknown run {run_id!r}")
        if wait or task.done():
            status = dict(await asyncio.wait_for(asyncio.shield(task), timeout_secs))
            if not include_results:
                status.pop("results", None)
            return status
        return {"run_id": run_id, "status": "EXECUTION_STATUS_RUNNING"}

    async def evaluate_run_by_id(
        self,
        flow_id: str,
        inputs: list[Any],
        max_concurrency: int | None = None,
        overrides: Any = None,
        subflow_key: Any = None,
    ) -> list[Any]:
        status = await self.submit_run(
            flow_id=flow_id,
            inputs=inputs,
            wait=True,
            max_concurrency=max_concurrency,
            overrides=overrides,
        )
        results = []
        for item in status.get("results", []):
            if item.get("status", "") == "EXECUTION_STATUS_FAILED":
                raise StepflowFailed(
                    error_code=item.get("error_code", "TASK_ERROR_CODE_UNSPECIFIED"),
                    message=(
                        f"Item at index {item.get('item_index', '?')} failed: "
                        f"{item.get('error_message', 'Unknown error')}"
                    ),
                )
            results.append(item.get("output"))
        return results

    async def _run(
        self,
        run_id: str,
        flow_id: str,
        definition: Any,
        items: list[Any],
        max_concurrency: int | None,
        timeout_secs: int | None,
    ) -> dict[str, Any]:
        batch = self.call.evaluate_batch(definition, items, max_concurrency=max_concurrency)
        results = await asyncio.wait_for(batch, timeout_secs)
        return _status(run_id, flow_id, definition, len(items), results, self._run_id)


def _status(
    run_id: str,
    flow_id: str,
    definition: Any,
    total: int,
    results: list[FlowResult] | None,
    parent: str | None,
) -> dict[str, Any]:
    """The run status as the worker's ``submit_run``/``get_run`` return it."""
    completed = COMPLETED = common_pb2.EXECUTION_STATUS_COMPLETED
    FAILED = common_pb2.EXECUTION_STATUS_FAILED
    message = orchestrator_pb2.OrchestratorRunStatus(
        run_id=run_id,
        flow_id=flow_id,
        flow_name=(definition.get("name") if isinstance(definition, dict) else None) or "",
        parent_run_id=parent or "",
    )
    if results is None:
        message.status = common_pb2.EXECUTION_STATUS_RUNNING
        message.items.CopyFrom(common_pb2.ItemStatistics(total=total, running=total))
        return _as_dict(message)
    failed = 0
    for index, result in enumerate(results):
        item = common_pb2.ItemResult(item_index=index)
        if result.ok:
            item.status = COMPLETED
            item.output.CopyFrom(python_to_proto_value(result.result))
        else:
            failed += 1
            item.status = FAILED
            error = result.error
            item.error_message = error.message if error is not None else "skipped"
            code = error_code(error.code) if error is not None else 0  # 0: UNSPECIFIED
            item.error_code = common_pb2.TaskErrorCode.ValueType(code)
        message.results.append(item)
    message.status = FAILED if failed else completed
    message.items.CopyFrom(
        common_pb2.ItemStatistics(total=total, completed=total - failed, failed=failed)
    )
    return _as_dict(message)


def _as_dict(message: Any) -> dict[str, Any]:
    found: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
    return found
