"""Executors (pocketbatch/batch/_executors.py): ``AsyncExecutor``, ``ProcessExecutor``,
``flow_runner`` and ``make_executor``.

The process executor's contract (issue 4, and its docstring): items run in worker
processes; each worker loads the flow once (from ``LoadedFlow.recipe``), not once per
item; a worker that dies fails only the item that kills it (``WORKER_CRASHED``), and
every other item still succeeds; core flows (module-level, picklable) run there too.

The flows and the component module live in ``tests/batch/data`` (routed by its
``pocketbatch.yaml``). Every test is bounded with ``asyncio.wait_for``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import AsyncNode, Flow, Node, load_flow
from pocketbatch.batch import (
    INPUT_KEY,
    OUTPUT_KEY,
    AsyncExecutor,
    InputProblem,
    ProcessExecutor,
    evaluate_batch,
    flow_runner,
    make_executor,
    run_batch,
)
from pocketbatch.loader import FlowResult

DATA = Path(__file__).parent / "data"
MODULE = "pb_batch_test_components"
TIMEOUT = 120.0
WORKERS = 2


def checksum(i: int, n: int) -> int:
    """The value ``/batchtest/cpu`` computes (same code as the component module)."""
    acc = 0
    for k in range(n):
        acc = (acc * 31 + k) % 1_000_003
    return (acc + i) % 1_000_003


# Module-level core nodes, so that they pickle for the process executor.
class CpuNode(Node):
    def prep(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]

    def exec(self, data: Any) -> Any:
        if data.get("fail"):
            raise ValueError(f"item {data['i']} fails")
        return {"i": data["i"], "value": checksum(data["i"], data["n"]), "pid": os.getpid()}

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = exec_res


class AsyncCpuNode(AsyncNode):
    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]

    async def exec_async(self, data: Any) -> Any:
        await asyncio.sleep(0)
        return {"i": data["i"], "value": checksum(data["i"], data["n"]), "pid": os.getpid()}

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = exec_res


class Unpicklable(Node):
    def prep(self, shared: dict[str, Any]) -> Any:
        return shared[INPUT_KEY]

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared[OUTPUT_KEY] = (lambda: prep_res) if prep_res == 1 else prep_res


def cpu_inputs(count: int, n: int = 20_000) -> list[dict[str, Any]]:
    return [{"i": i, "n": n + (i % 7) * 1000} for i in range(count)]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


# -- results and where they run -------------------------------------------------------------


def test_process_executor_gives_the_same_results_as_async() -> None:
    flow = load_flow(DATA / "cpu.yaml")
    inputs = cpu_inputs(24)
    in_process = run(evaluate_batch(flow, inputs, max_concurrency=4))
    pooled = run(
        evaluate_batch(flow, inputs, max_concurrency=4, executor="process", max_workers=WORKERS)
    )
    assert [r.to_dict() for r in pooled] == [r.to_dict() for r in in_process]
    assert [r.result for r in pooled] == [
        {"i": x["i"], "value": checksum(x["i"], x["n"])} for x in inputs
    ]


def test_process_executor_runs_items_in_other_processes() -> None:
    flow = load_flow(DATA / "cpu_pid.yaml")
    results = run(
        evaluate_batch(
            flow, cpu_inputs(16), max_concurrency=4, executor="process", max_workers=WORKERS
        )
    )
    pids = {r.result["pid"] for r in results}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= WORKERS
    in_process = run(evaluate_batch(flow, cpu_inputs(3)))
    assert {r.result["pid"] for r in in_process} == {os.getpid()}


def test_each_worker_loads_the_flow_once_not_once_per_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    imports = tmp_path / "imports.log"
    loads = tmp_path / "loads.log"
    monkeypatch.setenv("PB_IMPORT_LOG", str(imports))
    monkeypatch.setenv("PB_LOAD_LOG", str(loads))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)  # count this test's imports only

    flow = load_flow(DATA / "counted.yaml")  # the parent loads (and imports) once
    assert loads.read_text().split() == [str(os.getpid())]
    results = run(
        evaluate_batch(
            flow, cpu_inputs(40, n=2000), max_concurrency=8, executor="process", max_workers=WORKERS
        )
    )
    assert all(r.ok for r in results)
    ran_in = {r.result["pid"] for r in results}

    import_pids = imports.read_text().split()
    assert len(import_pids) <= WORKERS + 1  # each worker at most once, plus the parent

    load_pids = loads.read_text().split()
    worker_loads = [pid for pid in load_pids if pid != str(os.getpid())]
    assert load_pids.count(str(os.getpid())) == 1  # the executor does not load it again here
    assert 1 <= len(worker_loads) <= WORKERS  # once per worker, not once per item (40)
    assert len(set(worker_loads)) == len(worker_loads)  # no worker loads it twice
    assert {str(pid) for pid in ran_in} <= set(worker_loads)  # every worker loaded it first


# -- a worker that dies ---------------------------------------------------------------------


@pytest.mark.parametrize("crashing", [{7}, {0}, {3, 11}])
def test_a_worker_crash_fails_only_the_item_that_kills_it(crashing: set[int]) -> None:
    flow = load_flow(DATA / "crash.yaml")
    inputs = [{"i": i, "crash": i in crashing} for i in range(20)]
    results = run(
        evaluate_batch(flow, inputs, max_concurrency=4, executor="process", max_workers=WORKERS)
    )
    assert len(results) == 20
    for i, result in enumerate(results):
        if i in crashing:
            assert result.outcome == "failed", (i, result)
            assert result.error is not None
            assert result.error.code == "WORKER_CRASHED"
        else:
            assert result.ok, (i, result)
            assert result.result["i"] == i
            assert result.result["pid"] != os.getpid()


def test_after_a_crash_the_pool_keeps_serving_items() -> None:
    flow = load_flow(DATA / "crash.yaml")
    inputs = [{"i": i, "crash": i == 2} for i in range(60)]
    results = run(
        evaluate_batch(flow, inputs, max_concurrency=6, executor="process", max_workers=WORKERS)
    )
    assert [r.ok for r in results] == [i != 2 for i in range(60)]


# -- core flows -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: Flow(start=CpuNode()), lambda: AsyncCpuNode()])
def test_core_flow_on_the_process_executor(make: Any) -> None:
    inputs = cpu_inputs(12)
    results = run(
        evaluate_batch(make(), inputs, max_concurrency=4, executor="process", max_workers=WORKERS)
    )
    for x, result in zip(inputs, results):
        assert result.ok, result
        assert result.result["value"] == checksum(x["i"], x["n"])
        assert result.result["pid"] != os.getpid()


def test_core_flow_failures_on_the_process_executor() -> None:
    inputs = [{"i": i, "n": 10, "fail": i == 3} for i in range(6)]
    results = run(
        evaluate_batch(Flow(start=CpuNode()), inputs, executor="process", max_workers=WORKERS)
    )
    assert [r.ok for r in results] == [i != 3 for i in range(6)]
    assert results[3].error is not None
    assert results[3].error.code == "COMPONENT_FAILED"
    assert "item 3 fails" in results[3].error.message


def test_a_result_that_does_not_pickle_fails_only_its_item() -> None:
    results = run(
        evaluate_batch(Flow(start=Unpicklable()), [0, 1, 2], executor="process", max_workers=1)
    )
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None
    assert results[1].error.code == "COMPONENT_FAILED"
    assert [results[0].result, results[2].result] == [0, 2]


def test_run_batch_with_the_process_executor() -> None:
    flow = load_flow(DATA / "cpu.yaml")
    results = run_batch(flow, cpu_inputs(6), executor="process", max_workers=1)
    assert [r.result["i"] for r in results] == list(range(6))


def test_input_problems_on_the_process_executor() -> None:
    flow = load_flow(DATA / "cpu.yaml")
    inputs: list[Any] = [{"i": 0, "n": 10}, InputProblem("INVALID_JSON", "line 2: x")]
    results = run(evaluate_batch(flow, inputs, executor="process", max_workers=1))
    assert results[0].ok
    assert results[1].error is not None
    assert results[1].error.code == "INVALID_JSON"


# -- construction ---------------------------------------------------------------------------


def test_process_executor_needs_a_recipe_or_a_core_flow() -> None:
    flow = load_flow(DATA / "cpu.yaml")
    flow.recipe = None
    with pytest.raises(ValueError, match="load_flow"):
        ProcessExecutor(flow)
    with pytest.raises(TypeError):
        ProcessExecutor(object())


def test_process_executor_defaults_to_one_worker_per_cpu() -> None:
    flow = load_flow(DATA / "cpu.yaml")
    assert ProcessExecutor(flow).max_workers == (os.cpu_count() or 1)
    assert ProcessExecutor(flow, max_workers=3).max_workers == 3


def test_process_executor_direct_use() -> None:
    async def go() -> list[FlowResult]:
        flow = load_flow(DATA / "cpu.yaml")
        async with ProcessExecutor(flow, max_workers=1) as executor:
            return [await executor.run(i, {"i": i, "n": 100}) for i in range(3)]

    assert [r.result["i"] for r in run(go())] == [0, 1, 2]


def test_make_executor() -> None:
    flow = load_flow(DATA / "cpu.yaml")
    assert isinstance(make_executor("async", flow), AsyncExecutor)
    assert isinstance(make_executor("process", flow, max_workers=2), ProcessExecutor)
    mine = AsyncExecutor(flow)
    assert make_executor(mine, flow) is mine
    from pocketbatch.executors.ray import RayExecutor

    assert isinstance(make_executor("ray", flow), RayExecutor)  # not started until entered
    assert make_executor("ray://head:10001", flow).address == "ray://head:10001"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="executor"):
        make_executor("fiber", flow)  # type: ignore[arg-type]


def test_flow_runner_for_a_loaded_flow_and_a_core_flow() -> None:
    loaded = flow_runner(load_flow(DATA / "cpu.yaml"))
    assert asyncio.run(loaded({"i": 1, "n": 10})).result == {"i": 1, "value": checksum(1, 10)}
    core = flow_runner(Flow(start=CpuNode()))
    result = asyncio.run(core({"i": 1, "n": 10}))
    assert result.result["value"] == checksum(1, 10)
    failed = asyncio.run(core({"i": 1, "n": 10, "fail": True}))
    assert failed.error is not None
    assert failed.error.code == "COMPONENT_FAILED"
    with pytest.raises(TypeError):
        flow_runner(42)
