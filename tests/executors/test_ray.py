"""The ``ray`` executor against a real local Ray instance (issue 6).

One Ray instance (2 CPUs, no dashboard) is started for the module by the ``ray_local``
fixture and shut down at its end; :class:`RayExecutor` joins an initialized Ray and
leaves it running. The CLI tests run ``pocketbatch run-batch --executor ray`` as
subprocesses, each of which starts (and stops) a local Ray of its own.

The contract: the same records as ``--executor async`` for the same inputs; items
travel in chunks to at most ``workers`` actors, each of which loads the flow once;
``max_concurrency`` bounds items in flight; a worker that dies fails only the item
that kills it (``WORKER_CRASHED``); ``--resume`` after a SIGKILL of the driver
completes the output with every index exactly once.

Flows and the component module (``/raytest/<name>``) are in ``tests/executors/data``.
Components get what they need in their input, not from environment variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import free_port, line_count, records, run_cli, write_lines

ray = pytest.importorskip("ray", reason="the ray executor tests need the [ray] extra")

pytestmark = pytest.mark.ray

from pocketbatch import Flow, Node, PocketbatchError, load_flow  # noqa: E402
from pocketbatch.batch import evaluate_batch  # noqa: E402
from pocketbatch.client import Client  # noqa: E402
from pocketbatch.core import Event, EventKind  # noqa: E402
from pocketbatch.executors.ray import RayExecutor  # noqa: E402
from pocketbatch.loader import ComponentRegistry, FlowResult  # noqa: E402

DATA = Path(__file__).parent / "data"
CHECK = DATA / "check.yaml"  # input_schema {n: integer}; {"fail": true} raises
COUNTED = DATA / "counted.yaml"
CRASH = DATA / "crash.yaml"
INFLIGHT = DATA / "inflight.yaml"
NAP = DATA / "nap.yaml"
VICTIM = DATA / "victim.yaml"
SPIN = DATA / "spin.yaml"
TIMEOUT = 60  # a subprocess starts its own Ray: a few seconds of that is start-up


@pytest.fixture(scope="module", autouse=True)
def ray_local() -> Iterator[None]:
    """A local Ray instance for the whole module."""
    if ray.is_initialized():  # pragma: no cover - someone else's instance
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def as_tuple(r: FlowResult) -> tuple[Any, ...]:
    error = (r.error.code, r.error.message) if r.error is not None else None
    return (r.outcome, r.result, error)


def mixed_inputs() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for n in range(30):
        if n % 7 == 3:
            items.append({"n": n, "fail": True})  # the component raises
        elif n % 5 == 1:
            items.append({"m": n})  # no n: invalid input
        elif n % 11 == 8:
            items.append({"n": str(n)})  # wrong type
        else:
            items.append({"n": n})
    return items


def mixed_lines() -> list[Any]:
    """``mixed_inputs()`` as JSONL lines, with lines 3, 10 and 16 not valid inputs."""
    lines: list[Any] = [*mixed_inputs()]
    lines.insert(2, '{"n": 1,')  # bad JSON
    lines.insert(9, "[1, 2, 3]")  # not an object
    lines.insert(15, "42")
    return lines


# -- output equality ------------------------------------------------------------------------


def test_same_results_as_async_on_a_mixed_batch() -> None:
    flow = load_flow(CHECK)
    inputs = mixed_inputs()
    expected = run(evaluate_batch(flow, inputs, max_concurrency=8))
    got = run(evaluate_batch(flow, inputs, max_concurrency=8, executor=RayExecutor(chunk_size=4)))
    assert [as_tuple(r) for r in got] == [as_tuple(r) for r in expected]
    outcomes = {r.outcome for r in got}
    codes = {r.error.code for r in got if r.error is not None}
    assert outcomes == {"success", "failed"}
    assert len(codes) >= 2, codes  # both a failing component and invalid inputs


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=TIMEOUT)


def test_cli_output_byte_identical_to_async(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", mixed_lines())
    outputs = {}
    for executor in ("async", "ray"):
        out = tmp_path / f"{executor}.jsonl"
        ran = cli(
            "run-batch", "--flow", CHECK, "--inputs", inputs, "--output", out,
            "--executor", executor, "--chunk-size", "4", "--max-concurrent", "8",
            "--no-progress", cwd=tmp_path,
        )  # fmt: skip
        assert ran.returncode == 1, ran.stderr  # some items failed
        outputs[executor] = out.read_bytes()
    assert outputs["ray"] == outputs["async"]
    got = [json.loads(line) for line in outputs["ray"].splitlines()]
    assert [r["index"] for r in got] == list(range(len(mixed_lines())))
    assert got[2]["error"]["message"].startswith("line 3:")
    assert got[9]["error"]["message"].startswith("line 10:")


# -- chunking, one load per worker ------------------------------------------------------------


def test_chunks_go_to_at_most_workers_actors_each_loading_the_flow_once() -> None:
    flow = load_flow(COUNTED)
    inputs = [{"i": i} for i in range(60)]
    results = run(
        evaluate_batch(
            flow, inputs, max_concurrency=16, executor=RayExecutor(chunk_size=4, workers=2)
        )
    )
    assert all(r.outcome == "success" for r in results), [as_tuple(r) for r in results]
    assert [r.result["i"] for r in results] == list(range(60))
    pids = {r.result["pid"] for r in results}
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids  # the items ran on the workers, not here
    # Each worker resolved the component once (one flow load), not once per item.
    assert {r.result["loads"] for r in results} == {1}


def test_chunks_stay_full_while_the_workers_are_busy() -> None:
    # 32 in flight = 2 chunks of 8 per worker, and CPU-bound items, so the chunks come
    # back one at a time. Each frees room for 8 items, and the 8 admitted next leave
    # as one full chunk: chunks do not split into ever smaller ones (they once did,
    # down to single items: about 4 times as many Ray calls as needed).
    flow = load_flow(SPIN)
    inputs = [{"i": i, "rounds": 20_000} for i in range(240)]
    executor = RayExecutor(chunk_size=8, workers=2)
    results = run(evaluate_batch(flow, inputs, max_concurrency=32, executor=executor))
    assert [r.result for r in results] == [{"i": i} for i in range(240)]
    assert 240 // 8 <= executor.chunks_sent <= 240 // 8 + 2, executor.chunks_sent


def test_a_burst_smaller_than_a_chunk_per_worker_is_shared_among_idle_workers() -> None:
    # run-batch's defaults: 16 in flight, chunks of 16, here 2 workers. The 16 items
    # arriving together go 8 and 8 to the two idle workers, not 16 to one of them.
    flow = load_flow(COUNTED)
    executor = RayExecutor(chunk_size=16, workers=2)
    inputs = [{"i": i} for i in range(16)]
    results = run(evaluate_batch(flow, inputs, max_concurrency=16, executor=executor))
    assert [r.result["i"] for r in results] == list(range(16))
    assert executor.chunks_sent == 2
    pids = [r.result["pid"] for r in results]
    assert len(set(pids)) == 2
    assert pids[:8] == [pids[0]] * 8
    assert pids[8:] == [pids[8]] * 8


def test_a_partial_chunk_leaves_at_once_when_a_worker_is_idle() -> None:
    # One item in flight at a time: a chunk never fills. Each item leaves alone at
    # once, not after ``linger`` (a minute here: the timeout catches a wait on it).
    flow = load_flow(NAP)
    inputs = [{"i": i} for i in range(5)]
    executor = RayExecutor(chunk_size=8, workers=2, linger=60.0)
    batch = evaluate_batch(flow, inputs, max_concurrency=1, executor=executor)
    results = run(asyncio.wait_for(batch, timeout=30))
    assert [r.result for r in results] == [{"i": i} for i in range(5)]
    assert executor.chunks_sent == 5


def test_closing_cancels_the_items_it_still_holds() -> None:
    # One worker, full with two chunks of long naps, and one more item waiting for
    # room: closing the executor (a stopped batch) cancels all nine callers rather
    # than leaving them waiting forever.
    async def main() -> tuple[int, list[bool], int]:
        executor = RayExecutor(load_flow(NAP), chunk_size=4, workers=1, linger=60.0)
        async with executor:
            calls = [
                asyncio.create_task(executor.run(i, {"i": i, "sleep_ms": 60_000})) for i in range(9)
            ]
            for _ in range(100):  # a few turns of the loop: two full chunks leave
                await asyncio.sleep(0)
            sent = executor.chunks_sent  # and the ninth item waits for room
        _, still_waiting = await asyncio.wait(calls, timeout=TIMEOUT)
        return sent, [call.cancelled() for call in calls], len(still_waiting)

    sent, cancelled, still_waiting = run(main())
    assert sent == 2
    assert still_waiting == 0
    assert cancelled == [True] * 9


# -- bounded in-flight ------------------------------------------------------------------------


def test_max_concurrency_bounds_items_in_flight(tmp_path: Path) -> None:
    flow = load_flow(INFLIGHT)
    inputs = [{"i": i, "dir": str(tmp_path), "sleep_ms": 30} for i in range(48)]
    in_flight = peak = 0

    def observer(event: Event) -> None:
        nonlocal in_flight, peak
        if event.item is None:
            return
        if event.kind is EventKind.ITEM_STARTED:
            in_flight += 1
            peak = max(peak, in_flight)
        elif event.kind in (EventKind.ITEM_FINISHED, EventKind.ITEM_FAILED):
            in_flight -= 1

    results = run(
        evaluate_batch(
            flow,
            inputs,
            max_concurrency=6,
            executor=RayExecutor(chunk_size=2, workers=2),
            observer=observer,
        )
    )
    assert all(r.outcome == "success" for r in results), [as_tuple(r) for r in results]
    assert 1 <= peak <= 6
    # Inside the components, across both worker processes: never more than 6 at once.
    seen = [int(n) for n in (tmp_path / "seen").read_text().split()]
    assert len(seen) == len(inputs)
    assert max(seen) <= 6, max(seen)
    assert (tmp_path / "count").read_text() == "0"


# -- what cannot travel to the workers --------------------------------------------------------


class _Holder:
    """A component holding a lock: it cannot be pickled, hence not shipped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        return data


def test_a_component_that_cannot_be_shipped_fails_fast_naming_it() -> None:
    registry = ComponentRegistry()
    registry.register("/local/ok", lambda data: data)
    registry.register("/local/holder", _Holder())
    text = (
        "steps:\n"
        "  - {id: a, component: /local/ok, input: {$input: '$'}}\n"
        "  - {id: b, component: /local/holder, input: {$step: a}}\n"
        "output: {$step: b}\n"
    )
    flow = load_flow(text, registry=registry)
    assert run(evaluate_batch(flow, [{"n": 1}]))[0].result == {"n": 1}  # fine in-process
    with pytest.raises(PocketbatchError, match="component /local/holder cannot be shipped") as e:
        run(evaluate_batch(flow, [{"n": 1}], executor=RayExecutor(chunk_size=2)))
    assert "cannot pickle '_thread.lock' object" in str(e.value)


def test_a_core_flow_that_cannot_be_shipped_fails_fast() -> None:
    class Locked(Node):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

        def exec(self, prep_res: Any) -> Any:
            return prep_res

    with pytest.raises(PocketbatchError, match="the flow cannot be shipped to the Ray workers"):
        run(evaluate_batch(Flow(start=Locked()), [{"n": 1}], executor=RayExecutor()))


# -- shipping a folder with runtime_env -------------------------------------------------------


def test_a_shipped_working_dir_is_what_the_workers_read(tmp_path: Path) -> None:
    # run-batch --ray-working-dir: the flow file and its /python/ module travel in
    # Ray's runtime_env working_dir, and the workers import the module from their
    # copy, not from this folder (as on a cluster whose nodes share no filesystem).
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "shipmod.py").write_text(
        "def where(data):\n    return {'i': data['i'], 'file': __file__}\n", encoding="utf-8"
    )
    (shipped / "flow.yaml").write_text(
        "steps:\n"
        "  - {id: w, component: /python/shipmod.where, input: {$input: '$'}}\n"
        "output: {$step: w}\n",
        encoding="utf-8",
    )
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(6)))
    out = tmp_path / "out.jsonl"
    ran = cli(
        "run-batch", "--flow", "shipped/flow.yaml", "--inputs", inputs, "--output", out,
        "--executor", "ray", "--ray-working-dir", "shipped", "--chunk-size", "2",
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    got = records(out)
    assert [r["result"]["i"] for r in got] == list(range(6))
    files = {Path(r["result"]["file"]) for r in got}
    assert {f.name for f in files} == {"shipmod.py"}
    assert not any(f.is_relative_to(shipped) for f in files), files


def test_runtime_env_needs_the_executor_to_connect_to_ray() -> None:
    # Ray takes a job's runtime_env only when connecting; this process is connected.
    executor = RayExecutor(load_flow(NAP), runtime_env={"env_vars": {"A": "1"}})
    with pytest.raises(PocketbatchError, match=r"pass runtime_env to your ray\.init"):
        run(evaluate_batch(load_flow(NAP), [{"i": 1}], executor=executor))


def test_ray_working_dir_needs_the_ray_executor(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"i": 1}])
    ran = cli(
        "run-batch", "--flow", NAP, "--inputs", inputs, "--ray-working-dir", tmp_path,
        cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 2
    assert "--ray-working-dir needs --executor ray" in ran.stderr


# -- a killed worker --------------------------------------------------------------------------


def test_an_item_that_kills_its_worker_fails_alone() -> None:
    flow = load_flow(CRASH)
    bad = 5
    inputs = [{"i": i, "crash": i == bad} for i in range(16)]
    results = run(
        evaluate_batch(
            flow, inputs, max_concurrency=8, executor=RayExecutor(chunk_size=4, workers=2)
        )
    )
    assert results[bad].outcome == "failed"
    assert results[bad].error is not None
    assert results[bad].error.code == "WORKER_CRASHED"
    others = [r for i, r in enumerate(results) if i != bad]
    assert all(r.outcome == "success" for r in others), [as_tuple(r) for r in others]
    assert [r.result["i"] for r in others] == [i for i in range(16) if i != bad]


def test_an_item_that_kills_its_only_worker_fails_alone() -> None:
    # One worker, several chunks in flight on it at once (chunk_size 2, 8 in flight).
    flow = load_flow(CRASH)
    bad = 5
    inputs = [{"i": i, "crash": i == bad} for i in range(16)]
    results = run(
        evaluate_batch(
            flow, inputs, max_concurrency=8, executor=RayExecutor(chunk_size=2, workers=1)
        )
    )
    failed = [i for i, r in enumerate(results) if r.outcome != "success"]
    assert failed == [bad], [as_tuple(results[i]) for i in failed]


def test_a_worker_sigkilled_mid_batch_loses_no_item(tmp_path: Path) -> None:
    # A worker process killed from outside (SIGKILL: the OOM killer, an operator)
    # while it holds a chunk: its items run again, alone, on another worker, and as
    # none of them caused the death, every item succeeds.
    flow = load_flow(VICTIM)
    inputs = [{"i": i, "dir": str(tmp_path), "sleep_ms": 300} for i in range(24)]
    target = tmp_path / "pid-9"

    async def main() -> list[FlowResult]:
        executor = RayExecutor(chunk_size=4, workers=2)
        batch = asyncio.ensure_future(
            evaluate_batch(flow, inputs, max_concurrency=8, executor=executor)
        )
        deadline = time.monotonic() + TIMEOUT
        while not target.exists():  # item 9 is running: its worker holds it
            assert not batch.done(), batch.result()
            assert time.monotonic() < deadline, "item 9 never started"
            await asyncio.sleep(0.01)
        killed = int(target.read_text())
        os.kill(killed, signal.SIGKILL)
        results = await batch
        assert results[9].ok, as_tuple(results[9])
        assert results[9].result["pid"] != killed  # it ran again, elsewhere
        return results

    results = run(main())
    assert [as_tuple(r) for r in results if not r.ok] == []
    assert [r.result["i"] for r in results] == list(range(24))


# -- resume after a SIGKILL of the driver ------------------------------------------------------


def test_resume_after_sigkill_of_the_driver(tmp_path: Path) -> None:
    n = 200
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i, "sleep_ms": 20} for i in range(n)))
    out = tmp_path / "out.jsonl"
    args = ["run-batch", "--flow", NAP, "--inputs", inputs, "--output", out]
    args += ["--executor", "ray", "--chunk-size", "4", "--no-progress"]
    with open(tmp_path / "err1.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pocketbatch", *map(str, args)],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its Ray processes share its process group
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while line_count(out) < 30:
            if proc.poll() is not None:
                raise AssertionError(
                    f"run-batch exited ({proc.returncode}) before 30 records: "
                    + (tmp_path / "err1.txt").read_text()
                )
            assert time.monotonic() < deadline, "timed out waiting for 30 records"
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    killed_at = line_count(out)
    assert killed_at < n, "the batch finished before it was killed: make it slower"

    ran = cli(*args, "--resume", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    got = records(out)
    assert [r["index"] for r in got] == list(range(n))
    assert all(r["outcome"] == "success" and r["result"] == {"i": r["index"]} for r in got)


# -- the server on Ray ------------------------------------------------------------------------


@pytest.fixture
def ray_server(tmp_path: Path) -> Iterator[tuple[Client, subprocess.Popen[bytes]]]:
    """``pocketbatch serve --executor ray`` on a free port: its client and its process
    (whose output goes to ``server.log``)."""
    pytest.importorskip("fastapi", reason="the server needs the [server] extra")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "POCKETBATCH_TOKEN"}
    args = ["serve", "--port", str(port), "--db", str(tmp_path / "pb.db")]
    args += ["--config", str(DATA / "pocketbatch.yaml"), "--executor", "ray"]
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pocketbatch", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Ray processes share its process group
        )
    client = Client(f"http://127.0.0.1:{port}", timeout=TIMEOUT)
    try:
        deadline = time.monotonic() + TIMEOUT  # the server connects to Ray first
        while True:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "server.log").read_text())
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                client.list_batches(limit=1)
                break
            except PocketbatchError:
                time.sleep(0.05)
        yield client, proc
    finally:
        client.close()
        proc.terminate()  # a clean stop: the server shuts down the Ray it started
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=TIMEOUT)
            raise


def test_the_server_runs_batches_on_ray(
    ray_server: tuple[Client, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    client, server = ray_server
    inputs = write_lines(tmp_path / "in.jsonl", mixed_lines())  # bad lines: failed records
    # Two batches at once, sharing the server's Ray workers.
    mixed = client.submit_batch(CHECK, inputs, max_concurrent=8)
    counted = client.submit_batch(COUNTED, [{"i": i} for i in range(40)], max_concurrent=16)

    # The mixed batch: the records run-batch --executor async writes, byte for byte.
    out = tmp_path / "async.jsonl"
    ran = cli(
        "run-batch", "--flow", CHECK, "--inputs", inputs, "--output", out,
        "--executor", "async", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr  # some items failed
    assert client.wait(mixed, poll=0.2)["status"] == "completed"
    assert list(client.outputs(mixed)) == out.read_bytes().splitlines()

    # The counted batch ran on Ray's workers, each of which loaded the flow once.
    assert client.wait(counted, poll=0.2)["status"] == "completed"
    got = [json.loads(line) for line in client.outputs(counted)]
    assert [r["result"]["i"] for r in got] == list(range(40))
    pids = {r["result"]["pid"] for r in got}
    assert server.pid not in pids
    assert 1 <= len(pids) <= 2
    assert {r["result"]["loads"] for r in got} == {1}


# -- a cluster through Ray Client (ray://) ---------------------------------------------------


@pytest.fixture
def ray_client_address(tmp_path: Path) -> Iterator[str]:
    """``ray://127.0.0.1:PORT``: a Ray Client server in front of the module's Ray instance."""
    port = free_port()
    gcs = ray.get_runtime_context().gcs_address
    args = ["--address", gcs, "--host", "127.0.0.1", "--port", str(port), "--mode", "legacy"]
    with open(tmp_path / "client-server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ray.util.client.server", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "client-server.log").read_text())
            assert time.monotonic() < deadline, "the Ray Client server did not come up"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"ray://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)


def test_cli_on_a_cluster_through_ray_client_matches_async(
    ray_client_address: str, tmp_path: Path
) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", mixed_lines())
    outputs = {}
    for executor in ("async", ray_client_address):
        out = tmp_path / f"{len(outputs)}.jsonl"
        ran = cli(
            "run-batch", "--flow", CHECK, "--inputs", inputs, "--output", out,
            "--executor", executor, "--chunk-size", "4", "--max-concurrent", "8",
            "--no-progress", cwd=tmp_path,
        )  # fmt: skip
        assert ran.returncode == 1, ran.stderr  # some items failed
        outputs[executor] = out.read_bytes()
    assert outputs[ray_client_address] == outputs["async"]


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    # Ray Client retries for about 30 s before it gives up.
    address = f"ray://127.0.0.1:{free_port()}"  # nothing listens there
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    ran = cli(
        "run-batch", "--flow", CHECK, "--inputs", inputs, "--executor", address,
        "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 2
    assert f"pocketbatch: cannot connect to the Ray cluster at {address}: " in ran.stderr
    assert "Traceback" not in ran.stderr
    assert ran.stdout == ""


def test_server_batches_share_the_ray_workers(
    ray_server: tuple[Client, subprocess.Popen[bytes]],
) -> None:
    # A long batch holds work on every worker; a small one submitted after it still
    # finishes first: the batches share the server's actors, rather than the small
    # one waiting for CPUs that the long one's actors would hold until it ends.
    client, _ = ray_server
    long = [{"i": i, "sleep_ms": 400} for i in range(40)]
    long_id = client.submit_batch(NAP, long, max_concurrent=2)
    deadline = time.monotonic() + TIMEOUT
    while client.get_batch(long_id)["done"] < 1:  # the long batch is running
        assert time.monotonic() < deadline, "the long batch never started"
        time.sleep(0.02)
    small_id = client.submit_batch(NAP, [{"i": i} for i in range(4)], max_concurrent=4)
    while (small := client.get_batch(small_id))["status"] == "running":
        assert time.monotonic() < deadline, "the small batch never finished"
        time.sleep(0.05)
    assert small["status"] == "completed"
    long_now = client.get_batch(long_id)
    assert long_now["status"] == "running"
    assert long_now["done"] < len(long)
    assert [json.loads(line)["result"] for line in client.outputs(small_id)] == [
        {"i": i} for i in range(4)
    ]
    client.cancel_batch(long_id)


def test_the_ray_server_stops_cleanly_on_sigterm(
    ray_server: tuple[Client, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # ray.init() installs a SIGTERM handler of its own (sys.exit, which broke the
    # shutdown with tracebacks); the server keeps uvicorn's graceful one, which
    # shuts down and then dies of the SIGTERM it caught, as uvicorn does.
    client, server = ray_server
    batch_id = client.submit_batch(NAP, [{"i": i} for i in range(4)])
    assert client.wait(batch_id, poll=0.05)["status"] == "completed"
    server.terminate()
    assert server.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM)
    assert "Traceback" not in (tmp_path / "server.log").read_text(errors="replace")


# -- the README's Ray command ----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def readme_ray_command() -> list[str]:
    """The README's ``run-batch ... --executor ray`` command on a cookbook batch."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        if not line.startswith("pocketbatch run-batch "):
            continue
        words = shlex.split(line.split("#", 1)[0])
        options = dict(zip(words[2::2], words[3::2], strict=False))  # --option value pairs
        if options.get("--flow", "").startswith("cookbook/") and options.get("--executor") == "ray":
            return words
    raise AssertionError("the README shows no cookbook batch run with --executor ray")


def test_the_readmes_cookbook_batch_on_ray_matches_async(tmp_path: Path) -> None:
    command = readme_ray_command()
    assert command[:2] == ["pocketbatch", "run-batch"]
    outputs = {}
    for executor in ("ray", "async"):
        args = [*command[1:], "--output", str(tmp_path / f"{executor}.jsonl"), "--no-progress"]
        if executor == "async":
            args[args.index("--executor") + 1] = "async"
        ran = cli(*args, cwd=ROOT)
        assert ran.returncode in (0, 1), ran.stderr  # 1: the batch has failing orders
        outputs[executor] = (tmp_path / f"{executor}.jsonl").read_bytes()
    assert outputs["ray"] == outputs["async"]
    assert outputs["ray"].count(b"\n") == 20


# -- limits set by hand, usage (issue 12) ---------------------------------------------------


def test_hand_set_limits_reach_the_actors_and_their_usage_comes_back(tmp_path: Path) -> None:
    """``requests_per_minute`` (the CLI's --requests-per-minute) reaches each actor as
    its share of the budget, and so does the config's ``providers:`` limit; the
    items' requests, tokens, 429s and retries come back to the driver."""
    from _fake_llm import CHAT_FLOW, USAGE, fake_llm

    from pocketbatch.core import Usage
    from pocketbatch.loader._services import ServiceSettings

    with fake_llm() as fake:
        fake.fail(429, retry_after_ms="1")
        (tmp_path / "pocketbatch.yaml").write_text(
            f"providers:\n  {fake.base_url}:\n    tokens_per_minute: 100000\n", encoding="utf-8"
        )
        flow_file = tmp_path / "flow.yaml"
        flow_file.write_text(CHAT_FLOW, encoding="utf-8")
        flow = load_flow(flow_file, variables={"openai_base_url": fake.base_url})
        executor = RayExecutor(
            flow, workers=2, chunk_size=2, services=ServiceSettings(requests_per_minute=6000)
        )

        async def batch() -> tuple[list[FlowResult], list[Any]]:
            async with executor:
                results = [await executor.run(i, {"q": str(i)}) for i in range(2)]
                results += await asyncio.gather(
                    *(executor.run(i, {"q": str(i)}) for i in range(2, 8))
                )
                assert executor._pool is not None
                limits = [
                    await actor.limits.remote(executor._key) for actor in executor._pool.actors
                ]
            return results, limits

        results, limits = run(batch())
    assert [r.result for r in results] == [f"echo: {i}" for i in range(8)]
    # Each of the 2 actors that called the provider: half of each budget.
    assert [limit for limit in limits if limit] == [[(3000.0, 50000.0)]] * len(
        [limit for limit in limits if limit]
    )
    assert any(limits)
    assert executor.usage == Usage(
        requests=9,
        tokens_in=8 * USAGE["prompt_tokens"],
        tokens_out=8 * USAGE["completion_tokens"],
        rate_limited=1,
        retries=1,
    )
