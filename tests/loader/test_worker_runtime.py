"""The queue of a grpc plugin, driven as a worker drives it (no gRPC: the calls a
worker's RPCs make), with a stand-in worker process that never connects."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

pytest.importorskip("stepflow_py")

from stepflow_py.proto import orchestrator_pb2

from pocketbatch import ComponentError
from pocketbatch.loader._worker_config import WorkerPlugin
from pocketbatch.loader._worker_runtime import PluginRuntime, TransportFailure

IDLE = WorkerPlugin(
    "p", "q", sys.executable, ("-c", "import time; time.sleep(60)"), queue_timeout=0.5
)
IN_PROGRESS = orchestrator_pb2.TASK_STATUS_IN_PROGRESS


def _task(runtime: PluginRuntime, task_id: str) -> Any:
    return runtime.task(
        "echo", {"x": 1}, attempt=1, path_params={}, task_id=task_id, token="t", step_id="s"
    )


@pytest.mark.asyncio
async def test_a_task_nobody_claims_times_out_in_the_queue() -> None:
    runtime = PluginRuntime(IDLE, "127.0.0.1:1")
    try:
        with pytest.raises(TransportFailure) as info:
            await runtime.submit(_task(runtime, "t1"), 0.2)
        assert (info.value.code, info.value.message) == (
            "TIMEOUT", "task 't1' timed out waiting for worker to start",
        )  # fmt: skip
        assert runtime.launches == 1
    finally:
        await runtime.aclose()


@pytest.mark.asyncio
async def test_one_unclaimed_task_per_worker_and_requeue_when_it_goes() -> None:
    runtime = PluginRuntime(IDLE, "127.0.0.1:1")
    try:
        runs = [asyncio.create_task(runtime.submit(_task(runtime, f"t{i}"), 30)) for i in (1, 2)]
        await asyncio.sleep(0)
        first = runtime.connect("w1")
        assert (await runtime.next_for(first)).task_id == "t1"  # type: ignore[union-attr]
        waiting = asyncio.create_task(runtime.next_for(first))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # t1 is not claimed yet: t2 stays queued
        runtime.disconnect(first)  # the worker went away before claiming t1
        assert await waiting is None
        second = runtime.connect("w2")
        assert (await runtime.next_for(second)).task_id == "t1"  # type: ignore[union-attr]
        assert runtime.heartbeat("t1", "w2") == IN_PROGRESS
        assert runtime.heartbeat("t1", "w1") == orchestrator_pb2.TASK_STATUS_ALREADY_CLAIMED
        assert (await runtime.next_for(second)).task_id == "t2"  # type: ignore[union-attr]
        assert runtime.complete("t1", {"y": 2})
        assert runtime.complete("t2", error=ComponentError("COMPONENT_FAILED", "no"))
        assert not runtime.complete("t2", {})
        assert await runs[0] == {"y": 2}
        with pytest.raises(ComponentError, match="no"):
            await runs[1]
        assert runtime.heartbeat("t1", "w2") is None  # done: unknown now
    finally:
        await runtime.aclose()


@pytest.mark.asyncio
async def test_the_run_ending_cancels_a_waiting_task_without_a_transport_retry() -> None:
    # A TransportFailure is retried by the caller (a backoff sleep, a worker restart):
    # the end of the run is no such failure.
    runtime = PluginRuntime(IDLE, "127.0.0.1:1")
    waiting = asyncio.create_task(runtime.submit(_task(runtime, "t1"), 30))
    await asyncio.sleep(0)
    await runtime.aclose()
    with pytest.raises(ComponentError) as info:
        await waiting
    assert (info.value.code, info.value.message) == ("CANCELLED", "the run has ended")
    assert not isinstance(info.value, TransportFailure)
