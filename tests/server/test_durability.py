"""Crash-resume: SIGKILL a real ``pocketbatch serve`` mid-batch, restart it on the same db."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _support import ServerProcess, server_env

DATA = Path(__file__).parent / "data"
CONFIG = DATA / "pocketbatch.yaml"
SLEEP = (DATA / "sleep.yaml").read_text()
NAP = (DATA / "nap.yaml").read_text()
N = 300

pytestmark = pytest.mark.slow


class Server(ServerProcess):
    """One ``pocketbatch serve`` process on ``db``."""

    def __init__(self, tmp_path: Path, db: Path, **env: str) -> None:
        super().__init__(
            tmp_path,
            "--db",
            str(db),
            "--config",
            str(CONFIG),
            env=server_env(**env),
            client_timeout=120,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()

    def wait_done(self, batch_id: str, at_least: int) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done: int = self.batch(batch_id)["done"]
            if done >= at_least:
                return done
            time.sleep(0.005)
        raise AssertionError(f"batch never reached {at_least} done")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []
    db = tmp_path / "pb.db"

    def start(**env: str) -> Server:
        server = Server(tmp_path, db, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def expected(n: int) -> list[dict[str, Any]]:
    return [{"index": i, "outcome": "success", "result": {"i": i}} for i in range(n)]


def submit(server: Server, flow: str, n: int, max_concurrent: int = 8) -> str:
    r = server.client.post(
        "/batches",
        json={
            "flow": flow,
            "inputs": [{"i": i, "ms": 20} for i in range(n)],
            "max_concurrent": max_concurrent,
        },
    )
    assert r.status_code == 201, r.text
    batch_id: str = r.json()["batch_id"]
    return batch_id


@pytest.mark.parametrize(
    "kill_points",
    [(1,), (50,), (150,), (50, 150), (20, 100, 200)],
    ids=lambda p: "kill-at-" + "-".join(map(str, p)),
)
def test_sigkill_mid_batch_then_restart_completes_every_input_once(
    servers: Callable[..., Server], kill_points: tuple[int, ...]
) -> None:
    server = servers()
    batch_id = submit(server, SLEEP, N)
    for point in kill_points:
        done = server.wait_done(batch_id, point)
        server.kill()
        assert done < N, "the batch finished before the kill: nothing was tested"
        server = servers()
        view = server.batch(batch_id)
        assert view["total"] == N
        assert view["done"] >= done  # nothing committed was lost
    records = server.outputs(batch_id, wait=True)
    assert records == expected(N)
    view = server.batch(batch_id)
    assert view["status"] == "completed"
    assert (view["done"], view["succeeded"], view["failed"], view["pending"]) == (N, N, 0, 0)


def test_finished_items_never_run_again(servers: Callable[..., Server], tmp_path: Path) -> None:
    first_log, second_log = tmp_path / "run1.log", tmp_path / "run2.log"
    server = servers(PB_RUN_LOG=str(first_log))
    batch_id = submit(server, NAP, N)
    server.wait_done(batch_id, 100)
    committed = {r["index"] for r in server.outputs(batch_id, wait=False)}
    server.kill()
    assert 100 <= len(committed) < N
    server = servers(PB_RUN_LOG=str(second_log))
    assert server.outputs(batch_id, wait=True) == expected(N)
    rerun = [int(x) for x in second_log.read_text().split()]
    assert len(rerun) == len(set(rerun))
    assert not committed & set(rerun)
    ran = {int(x) for x in first_log.read_text().split()} | set(rerun)
    assert ran == set(range(N))


def test_a_slow_batch_shows_its_records_as_they_come(servers: Callable[..., Server]) -> None:
    # Records reach the store in groups of up to 64, but a group does not wait long
    # for company: with slow items, progress and outputs show up item by item.
    server = servers()
    r = server.client.post(
        "/batches",
        json={"flow": NAP, "inputs": [{"i": i, "ms": 300} for i in range(10)], "max_concurrent": 1},
    )
    assert r.status_code == 201, r.text
    batch_id = r.json()["batch_id"]
    server.wait_done(batch_id, at_least=1)
    batch = server.batch(batch_id)
    assert batch["status"] == "running"
    assert 1 <= batch["done"] < 10
    assert len(server.outputs(batch_id, wait=False)) >= 1


def test_a_batch_accepted_is_never_lost(servers: Callable[..., Server]) -> None:
    server = servers()
    batch_id = submit(server, SLEEP, N)
    server.kill()  # right after the 201
    server = servers()
    assert server.outputs(batch_id, wait=True) == expected(N)
    assert server.batch(batch_id)["status"] == "completed"


def test_several_batches_resume_and_finished_ones_stay_finished(
    servers: Callable[..., Server],
) -> None:
    server = servers()
    finished = submit(server, SLEEP, 5)
    assert server.outputs(finished, wait=True) == expected(5)
    first = submit(server, SLEEP, N)
    second = submit(server, SLEEP, 120)
    server.wait_done(first, 30)
    server.kill()
    server = servers()
    assert server.outputs(first, wait=True) == expected(N)
    assert server.outputs(second, wait=True) == expected(120)
    assert server.outputs(finished, wait=True) == expected(5)
    statuses = {b["batch_id"]: b["status"] for b in server.client.get("/batches").json()["batches"]}
    assert statuses == {finished: "completed", first: "completed", second: "completed"}


def test_a_cancelled_batch_stays_cancelled_after_a_kill(servers: Callable[..., Server]) -> None:
    server = servers()
    batch_id = submit(server, SLEEP, N, max_concurrent=2)
    server.wait_done(batch_id, 4)
    assert server.client.post(f"/batches/{batch_id}/cancel").json()["status"] == "cancelled"
    done = server.batch(batch_id)["done"]
    server.kill()
    server = servers()
    view = server.batch(batch_id)
    assert view["status"] == "cancelled"
    assert view["done"] == done
    assert len(server.outputs(batch_id, wait=True)) == done
