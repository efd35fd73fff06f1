"""A stepflow-py worker as a Stepflow user writes one, for the tests of grpc plugins.

Each launch appends its pid to ``$LAUNCH_LOG``; ``hold`` writes ``$HOLD_MARK`` when it
starts (so a test can kill the worker while a task runs).
"""

import asyncio
import os
from pathlib import Path

import msgspec
from stepflow_py.worker import StepflowContext
from stepflow_py.worker.main import main, server

if os.environ.get("LAUNCH_LOG"):
    with open(os.environ["LAUNCH_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")


class Greeting(msgspec.Struct):
    name: str
    times: int = 1


class Greeted(msgspec.Struct):
    text: str
    pid: int


@server.component
def greet(input: Greeting) -> Greeted:
    return Greeted(text=" ".join([f"hello {input.name}"] * input.times), pid=os.getpid())


@server.component
def fail(input: dict) -> dict:
    raise ValueError(f"bad input: {input.get('why')}")


@server.component
async def blobs(input: dict, context: StepflowContext) -> dict:
    blob_id = await context.put_blob(input["data"])
    return {"blob_id": blob_id, "back": await context.get_blob(blob_id)}


@server.component
async def crash_once(input: dict, context: StepflowContext) -> dict:
    if context.attempt == 1:
        os._exit(3)
    return {"attempt": context.attempt}


@server.component
async def hold(input: dict, context: StepflowContext) -> dict:
    mark = Path(os.environ["HOLD_MARK"])
    partial = mark.with_suffix(f".{os.getpid()}")  # written whole, then renamed: never seen empty
    partial.write_text(str(os.getpid()))
    partial.replace(mark)
    await asyncio.sleep(input.get("seconds", 0))
    return {"n": input["n"], "attempt": context.attempt, "pid": os.getpid()}


@server.component
async def sub(input: dict, context: StepflowContext) -> dict:
    flow = {
        "name": "inner",
        "steps": [
            {
                "id": "m",
                "component": "/builtin/create_messages",
                "input": {"user_prompt": {"$input": "q"}},
            }
        ],
        "output": {"$step": "m", "path": "messages[0].content"},
    }
    status = await context.submit_run(flow=flow, inputs=[{"q": q} for q in input["qs"]], wait=True)
    later = await context.get_run(status["run_id"], wait=True)
    return {
        "status": status["status"],
        "same": later["status"] == status["status"],
        "outputs": [r.get("output") for r in status.get("results", [])],
    }


if __name__ == "__main__":
    main()
