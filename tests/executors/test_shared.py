"""``pocketbatch.executors._shared``: the executors of a server's batches.

Without Ray nothing is shared: each batch gets a fresh executor of the spec's
kind. The Ray session (one connection, one pool of actors) is exercised by the
server tests in ``tests/executors/test_ray.py``.
"""

from __future__ import annotations

from pathlib import Path

from pocketbatch import load_flow
from pocketbatch.batch import AsyncExecutor, ProcessExecutor
from pocketbatch.batch._executors import ExecutorSpec
from pocketbatch.executors import open_shared_executors

FLOW = "output: {$input: x}\n"


def test_each_batch_gets_an_executor_of_its_own() -> None:
    shared = open_shared_executors(ExecutorSpec.parse("async"))
    flow = load_flow(FLOW)
    first, second = shared.executor(flow), shared.executor(flow)
    assert isinstance(first, AsyncExecutor)
    assert first is not second
    shared.close()


def test_process_batches_get_the_spec_s_workers(tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(FLOW)
    shared = open_shared_executors(ExecutorSpec.parse("process", workers=3))
    executor = shared.executor(load_flow(tmp_path / "flow.yaml"))
    assert isinstance(executor, ProcessExecutor)
    assert executor.max_workers == 3
    shared.close()


def test_a_batch_s_http_pool_follows_what_it_may_have_in_flight() -> None:
    """The server sizes each batch's pool to min(batch, server) max_concurrent; before,
    every batch got the default pool of 16, capping a wider batch at 16 requests."""
    from pocketbatch.loader._services import ServiceSettings

    shared = open_shared_executors(ExecutorSpec.parse("async"))
    executor = shared.executor(load_flow(FLOW), ServiceSettings(max_connections=48))
    assert isinstance(executor, AsyncExecutor)
    assert executor._services.settings.max_connections == 48
    shared.close()
