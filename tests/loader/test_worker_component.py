"""Stepflow ``grpc`` plugins run by real stepflow-py worker processes on loopback.

Each test writes a ``stepflow-config.yml`` whose plugin section is what a Stepflow
user writes (``command``, ``args``, ``queueName``, ``env``), pointing at the installed
stepflow-py: ``stepflow_worker`` or the small worker module beside this file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from _support import records, run_cli, write_lines

from pocketbatch import load_flow
from pocketbatch.loader._blobs import blob_id
from pocketbatch.loader._services import RunServices

pytest.importorskip("stepflow_py")

WORKER = Path(__file__).parent / "stepflow_worker" / "my_worker.py"


def _project(tmp: Path, steps: str, plugin: str = "", retry: str = "") -> Path:
    shutil.copy(WORKER, tmp / "my_worker.py")
    (tmp / "stepflow-config.yml").write_text(
        f"""plugins:
  builtin:
    type: builtin
  mine:
    type: grpc
    command: {sys.executable}
    args: [my_worker.py]
    queueName: mine
    env:
      LAUNCH_LOG: "${{LAUNCH_LOG:-{tmp / "launches.txt"}}}"
      HOLD_MARK: "{tmp / "hold.txt"}"
      STEPFLOW_LOG_LEVEL: WARNING
{plugin}routes:
  "/mine":
    - plugin: mine
  "/builtin":
    - plugin: builtin
{retry}""",
        encoding="utf-8",
    )
    flow = tmp / "flow.yaml"
    flow.write_text(f"schema: https://stepflow.org/schemas/v1/flow.json\n{steps}", encoding="utf-8")
    return flow


def _launches(tmp: Path) -> list[str]:
    path = tmp / "launches.txt"
    return path.read_text().split() if path.exists() else []


ONE_STEP = """steps:
  - id: s
    component: /mine/greet
    input: {$input: $}
output: {$step: s}
"""


def _flow(tmp: Path, component: str) -> Path:
    """Another flow file beside the project's, calling ``component`` on its input."""
    flow = tmp / f"{component.strip('/').replace('/', '_')}.yaml"
    flow.write_text(ONE_STEP.replace("/mine/greet", component), encoding="utf-8")
    return flow


@pytest.mark.slow
def test_a_batch_reuses_one_worker_and_converts_structs(tmp_path: Path) -> None:
    flow = _project(tmp_path, ONE_STEP)
    items = [{"name": f"n{i}", "times": 2} for i in range(40)]
    done = run_cli(
        "run-batch", "--flow", flow, "--inputs", write_lines(tmp_path / "in.jsonl", items),
        "--output", tmp_path / "out.jsonl", "--max-concurrent", "16", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = records(tmp_path / "out.jsonl")
    assert [r["result"]["text"] for r in out] == [f"hello n{i} hello n{i}" for i in range(40)]
    assert len(_launches(tmp_path)) == 1
    assert {r["result"]["pid"] for r in out} == {int(_launches(tmp_path)[0])}


@pytest.mark.slow
def test_stepflow_worker_echo_over_a_batch(tmp_path: Path) -> None:
    command = shutil.which("stepflow_worker", path=str(Path(sys.executable).parent))
    assert command is not None
    (tmp_path / "stepflow-config.yml").write_text(
        f"plugins:\n  python:\n    type: grpc\n    command: {command}\n    queueName: python\n"
        'routes:\n  "/python":\n    - plugin: python\n',
        encoding="utf-8",
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text("steps:\n  - {id: e, component: /python/echo, input: {$input: $}}\n"
                    "output: {$step: e}\n")  # fmt: skip
    items = [{"k": i, "nested": {"b": [1, 2.5], "a": None}} for i in range(12)]
    done = run_cli(
        "run-batch", "--flow", flow, "--inputs", write_lines(tmp_path / "in.jsonl", items),
        "--output", tmp_path / "out.jsonl", "--max-concurrent", "16", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["result"] for r in records(tmp_path / "out.jsonl")] == items


def _run(calls: list[tuple[Path, Any]]) -> list[dict[str, Any]]:
    """Run each ``(flow, input)`` in one run (one RunServices: one worker per plugin)."""

    async def main() -> list[dict[str, Any]]:
        async with RunServices() as services:
            results = await asyncio.gather(
                *(load_flow(f).run_async(i, services=services) for f, i in calls)
            )
        return [r.to_dict() for r in results]

    return asyncio.run(main())


@pytest.mark.slow
def test_worker_features_in_one_run(tmp_path: Path) -> None:
    """Component errors keep Stepflow's code, message and data; blobs go through the
    run's store with Stepflow's ids; a sub-run runs a flow given inline; a path the
    worker does not serve is Stepflow's routing error."""
    _project(tmp_path, ONE_STEP)
    data = {"b": 1, "a": [1, 2.5, {"z": None, "y": True}]}
    failed, blob, sub, unrouted = _run(
        [
            (_flow(tmp_path, "/mine/fail"), {"why": "nope"}),
            (_flow(tmp_path, "/mine/blobs"), {"data": data}),
            (_flow(tmp_path, "/mine/sub"), {"qs": ["x", "y"]}),
            (_flow(tmp_path, "/mine/absent"), {}),
        ]
    )
    assert failed["outcome"] == "failed"
    error = failed["error"]
    assert (error["code"], error["message"]) == ("COMPONENT_FAILED", "bad input: nope")
    assert error["data"]["exception_type"] == "ValueError"
    assert "traceback" not in error["data"]  # left out, as on the in-process path
    sorted_data = {"a": [1, 2.5, {"y": True, "z": None}], "b": 1}
    assert blob["result"] == {"blob_id": blob_id(sorted_data), "back": sorted_data}
    assert sub["result"] == {
        "status": "EXECUTION_STATUS_COMPLETED", "same": True, "outputs": ["x", "y"],
    }  # fmt: skip
    assert unrouted["error"]["code"] == "ORCHESTRATOR_ERROR"
    assert unrouted["error"]["message"] == "error routing component"
    assert "/greet" in unrouted["error"]["data"]["detail"]
    assert len(_launches(tmp_path)) == 1


@pytest.mark.slow
def test_a_worker_that_exits_mid_task_is_restarted_and_the_task_retried(tmp_path: Path) -> None:
    _project(tmp_path, ONE_STEP)
    (result,) = _run([(_flow(tmp_path, "/mine/crash_once"), {})])
    assert result == {"outcome": "success", "result": {"attempt": 2}}
    assert len(_launches(tmp_path)) == 2


@pytest.mark.slow
def test_a_worker_killed_mid_batch_is_restarted_and_its_tasks_retried(tmp_path: Path) -> None:
    _project(tmp_path, ONE_STEP)
    loaded = load_flow(_flow(tmp_path, "/mine/hold"))
    mark = tmp_path / "hold.txt"

    async def main() -> list[dict[str, Any]]:
        async with RunServices() as services:
            runs = [
                asyncio.create_task(loaded.run_async({"n": n, "seconds": 0.5}, services=services))
                for n in range(8)
            ]
            while not mark.exists():  # noqa: ASYNC110 (another process writes it)
                await asyncio.sleep(0.05)
            os.kill(int(mark.read_text()), signal.SIGKILL)
            return [r.to_dict() for r in await asyncio.gather(*runs)]

    results = asyncio.run(main())
    assert [r["result"]["n"] for r in results] == list(range(8))
    _, second = map(int, _launches(tmp_path))
    assert any(r["result"]["attempt"] == 2 for r in results)  # in flight when killed
    assert {r["result"]["pid"] for r in results if r["result"]["attempt"] == 2} == {second}
    assert len(_launches(tmp_path)) == 2


@pytest.mark.slow
def test_execution_timeout_is_a_transport_failure_and_retries_are_bounded(tmp_path: Path) -> None:
    _project(
        tmp_path, ONE_STEP, plugin="    executionTimeoutSecs: 1\n",
        retry="retry:\n  transportMaxRetries: 1\n  backoff: {type: constant, delayMs: 10}\n",
    )  # fmt: skip
    flow_text = (tmp_path / "stepflow-config.yml").read_text()
    assert "executionTimeoutSecs" in flow_text
    (result,) = _run([(_flow(tmp_path, "/mine/hold"), {"n": 1, "seconds": 30})])
    assert result["outcome"] == "failed"
    assert result["error"]["code"] == "TIMEOUT"
    assert result["error"]["message"].endswith("exceeded execution timeout")
    assert len(_launches(tmp_path)) == 2  # restarted once for the one retry


def test_a_worker_that_cannot_start_fails_the_step_as_unreachable(tmp_path: Path) -> None:
    (tmp_path / "stepflow-config.yml").write_text(
        "plugins:\n  py:\n    type: grpc\n    command: /nonexistent/worker\n    queueName: py\n"
        'routes:\n  "/py":\n    - plugin: py\nretry: {transportMaxRetries: 0}\n',
        encoding="utf-8",
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text("steps:\n  - {id: e, component: /py/echo, input: {}}\noutput: {$step: e}\n")
    (result,) = _run([(flow, {})])
    assert result["error"]["code"] == "UNREACHABLE"
    assert "plugin 'py'" in result["error"]["message"]
    assert "/nonexistent/worker" in result["error"]["message"]


BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grpc", "stepflow_py"):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Block())
from pocketbatch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_extra_a_grpc_plugin_is_a_clear_load_error(tmp_path: Path) -> None:
    flow = _project(tmp_path, ONE_STEP)
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", BLOCK, "run", "--flow", str(flow), "--input", "{}"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "plugin 'mine'" in done.stderr
    assert "pip install '.[stepflow]'" in done.stderr
    assert _launches(tmp_path) == []


@pytest.mark.slow
def test_the_worker_and_the_in_process_route_give_identical_records(tmp_path: Path) -> None:
    """One worker module, run out of process (grpc plugin) and in-process (a
    pocketbatch.yaml route to the module): the same records, byte for byte."""
    steps = """steps:
  - {id: g, component: /mine/greet, input: {name: {$input: name}, times: 2}}
  - {id: b, component: /mine/blobs, input: {data: {$input: data}}}
output: {text: {$step: g, path: text}, blob: {$step: b}}
"""
    items: list[Any] = [
        {"name": "ann", "data": {"z": [1, 2.5, None], "a": {"y": True, "b": "x"}}},
        {"name": 7, "data": {}},  # greet's Struct refuses a number: a validation error
    ]
    fail_steps = "steps:\n  - {id: f, component: /mine/fail, input: {why: {$input: why}}}\n"
    fail_steps += "output: {$step: f}\n"
    out: dict[str, list[Any]] = {}
    for way in ("worker", "inproc"):
        root = tmp_path / way
        root.mkdir()
        flow = _project(root, steps)
        failing = root / "fail.yaml"
        failing.write_text(fail_steps, encoding="utf-8")
        if way == "inproc":
            (root / "stepflow-config.yml").unlink()
            (root / "pocketbatch.yaml").write_text("routes:\n  /mine: {module: my_worker}\n")
        got = []
        for path, lines in ((flow, items), (failing, [{"why": "nope"}])):
            output = root / f"{path.stem}.out.jsonl"
            done = run_cli(
                "run-batch", "--flow", path, "--inputs", write_lines(root / "in.jsonl", lines),
                "--output", output, "--no-progress",
            )  # fmt: skip
            assert done.returncode == 1, done.stderr  # some items failed
            got += output.read_text().splitlines()
        out[way] = got
    assert out["worker"] == out["inproc"]
    assert len(out["worker"]) == 3
