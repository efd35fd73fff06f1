"""The run's side of the worker protocol, called as a worker's context calls it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pocketbatch import load_flow
from pocketbatch.loader._blobs import MemoryBlobStore
from pocketbatch.loader._component import CallContext

pytest.importorskip("stepflow_py")

from stepflow_py.proto import common_pb2, orchestrator_pb2

from pocketbatch.loader._worker_convert import from_value, to_value
from pocketbatch.loader._worker_hub import WorkerHub


def _load(data: Any) -> Any:
    return load_flow(json.dumps(data))


@pytest.mark.asyncio
@pytest.mark.parametrize("max_concurrency", [None, 0, 1])
async def test_submit_run_runs_every_item_whatever_max_concurrency(
    max_concurrency: int | None,
) -> None:
    # max_concurrency 0 (set, but no bound) made a semaphore of 0: the items never ran.
    hub = WorkerHub(MemoryBlobStore())
    flow_id = await hub.blobs.put({"output": {"n": {"$input": "n"}}}, "flow")
    ctx = CallContext(step_id="s", flow_dir=None, variables={}, load_subflow=_load)
    request = orchestrator_pb2.OrchestratorSubmitRunRequest()
    run = request.run_request
    run.flow_id, run.wait, run.timeout_secs = flow_id, True, 5
    run.input.extend(to_value({"n": n}) for n in (1, 2, 3))
    if max_concurrency is not None:
        run.max_concurrency = max_concurrency
    try:
        with hub.call(ctx) as token:
            request.root_run_id = token
            status = await hub.submit_run(request)
    finally:
        await hub.aclose()
    assert status.status == common_pb2.EXECUTION_STATUS_COMPLETED
    assert [from_value(r.output) for r in status.results] == [{"n": 1}, {"n": 2}, {"n": 3}]
