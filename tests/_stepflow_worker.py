"""A stepflow-py worker module for tests: what a Stepflow user writes, run unchanged.

In-process: route a prefix to it (``pocketbatch.yaml``: ``routes: {/py: {module:
_stepflow_worker}}``). Out of process (Stepflow's way): ``python _stepflow_worker.py``
as a ``grpc`` plugin's command. Both must give identical records.

Components (paths under the route's prefix):

* ``/echo``: ``{message: str, repeat?: int}`` → ``{echo, attempt, step_id}``;
* ``/sync_double``: a sync component, ``{value: float}`` → ``{result}``;
* ``/fail``: raises what ``{kind}`` names (``value``, ``type``, ``os``, ``stepflow``);
* ``/flaky``: fails (``COMPONENT_FAILED``) on attempts before ``{succeed_on}``, then
  answers ``{attempt}`` (for ``onError: retry``);
* ``/crash``: ``sys.exit(1)`` (the worker dies) on attempts before ``{succeed_on}``,
  then answers ``{attempt}`` (Stepflow restarts the worker and retries the task);
* ``/blob_round_trip``: ``put_blob`` then ``get_blob`` → ``{blob_id, data}``;
* ``/get_blob``: ``{blob_id}`` → ``{data}`` (``get_blob`` of another step's blob);
* ``/sub_run``: runs ``{flow}`` on ``{inputs}`` through ``evaluate_run`` (a sub-run) →
  ``{results}``;
* ``/sub_run_status``: ``submit_run`` (no wait), then ``get_run(wait=True)`` →
  ``{total, completed, failed, outputs}``;
* ``/path/{*rest}``: a path parameter → ``{rest}``.
"""

import sys

# No ``from __future__ import annotations``: stepflow-py reads the input type from the
# annotation object itself (a string annotation makes the worker pass a plain dict).
from typing import Any

import msgspec
from stepflow_py.worker import StepflowContext, StepflowServer
from stepflow_py.worker.exceptions import StepflowExecutionError

server = StepflowServer(include_builtins=False)


class EchoInput(msgspec.Struct):
    message: str
    repeat: int = 1


class EchoOutput(msgspec.Struct):
    echo: str
    attempt: int
    step_id: str | None


@server.component
async def echo(input: EchoInput, context: StepflowContext) -> EchoOutput:
    """Echo the message ``repeat`` times."""
    return EchoOutput(
        echo=input.message * input.repeat, attempt=context.attempt, step_id=context.step_id
    )


class DoubleInput(msgspec.Struct):
    value: float


@server.component
def sync_double(input: DoubleInput) -> dict[str, Any]:
    """A sync component (no context)."""
    return {"result": input.value * 2}


class FailInput(msgspec.Struct):
    kind: str


@server.component
def fail(input: FailInput) -> dict[str, Any]:
    """Raise an error of the kind asked for."""
    if input.kind == "value":
        raise ValueError("bad value")
    if input.kind == "type":
        raise TypeError("bad type")
    if input.kind == "os":
        raise OSError("disk gone")
    if input.kind == "stepflow":
        raise StepflowExecutionError("it broke", data={"why": "asked"})
    return {"kind": input.kind}


class FlakyInput(msgspec.Struct):
    succeed_on: int


@server.component
async def flaky(input: FlakyInput, context: StepflowContext) -> dict[str, Any]:
    """Fail until the given attempt."""
    if context.attempt < input.succeed_on:
        raise ValueError(f"attempt {context.attempt} fails")
    return {"attempt": context.attempt}


@server.component
async def crash(input: FlakyInput, context: StepflowContext) -> dict[str, Any]:
    """Exit the worker process until the given attempt."""
    if context.attempt < input.succeed_on:
        sys.exit(1)
    return {"attempt": context.attempt}


class BlobInput(msgspec.Struct):
    data: Any


@server.component
async def blob_round_trip(input: BlobInput, context: StepflowContext) -> dict[str, Any]:
    """Store the data as a blob and read it back."""
    blob_id = await context.put_blob(input.data)
    return {"blob_id": blob_id, "data": await context.get_blob(blob_id)}


class GetBlobInput(msgspec.Struct):
    blob_id: str


@server.component
async def get_blob(input: GetBlobInput, context: StepflowContext) -> dict[str, Any]:
    """Read a blob another step stored."""
    return {"data": await context.get_blob(input.blob_id)}


class SubRunInput(msgspec.Struct):
    flow: dict[str, Any]
    inputs: list[Any]


@server.component
async def sub_run(input: SubRunInput, context: StepflowContext) -> dict[str, Any]:
    """Run a flow on each input as a sub-run; fails if an item fails."""
    flow_id = await context.put_blob(input.flow, "flow")
    return {"results": await context.evaluate_run_by_id(flow_id, input.inputs)}


@server.component
async def sub_run_status(input: SubRunInput, context: StepflowContext) -> dict[str, Any]:
    """Submit a sub-run without waiting, then wait for it with get_run."""
    submitted = await context.submit_run(input.flow, input.inputs, wait=False)
    status = await context.get_run(submitted["run_id"], wait=True, include_results=True)
    items = status.get("items", {})
    return {
        "total": items.get("total", 0),
        "completed": items.get("completed", 0),
        "failed": items.get("failed", 0),
        "outputs": [r.get("output") for r in status.get("results", [])],
    }


@server.component(subpath="path/{*rest}")
def path_param(input: dict[str, Any], rest: str) -> dict[str, Any]:
    """A component mounted with a path parameter."""
    return {"rest": rest}


if __name__ == "__main__":  # as Stepflow launches a worker: the gRPC pull transport
    import asyncio
    import os

    from stepflow_py.worker.grpc_worker import run_grpc_worker

    asyncio.run(
        run_grpc_worker(
            server=server,
            tasks_url=os.environ.get("STEPFLOW_TASKS_URL", "localhost:7837"),
            queue_name=os.environ.get("STEPFLOW_QUEUE_NAME", "python"),
            max_concurrent=int(os.environ.get("STEPFLOW_MAX_CONCURRENT", "4")),
        )
    )
