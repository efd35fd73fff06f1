"""A full disk under the server: nothing stalls, nothing is lost or stored twice.

Issue 10: on a full disk a running batch used to stall forever (``running``, 0 in
flight, ``?wait=true`` never returning, nothing logged) and a submission answered a
bare 500. Now storage errors are logged (rate-limited), shown in the batch status
(``storage_error``), retried with a doubling delay, and the batch continues once
space returns; a submission answers 507 with a message.

The disk is filled for real in two ways: SQLite's ``max_page_count`` (the store's
``max_pages``), which fails writes with SQLITE_FULL exactly as a full disk does, in
every run; and, where this process may mount one, a tiny tmpfs filled with a file,
under a real ``pocketbatch serve`` subprocess.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from _support import ServerProcess, mounted_tmpfs

from pocketbatch.server import ServerSettings, create_app
from pocketbatch.server._store import StorageError, Store

DATA = Path(__file__).parent / "data"
CONFIG = DATA / "pocketbatch.yaml"
GATE = (DATA / "gate.yaml").read_text()
FULL = 1  # max_pages below any database's size: the disk is full now
TIMEOUT = 30


def until(check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``check`` until it returns something truthy (a bound, not a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def until_async(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def rec(i: int, pad: int = 0) -> bytes:
    return json.dumps({"index": i, "outcome": "success", "result": "x" * pad}).encode()


def make(store: Store, batch_id: str, n: int) -> None:
    async def go() -> None:
        await store.create_batch(batch_id, "output: 1\n", [b"{}"] * n, max_concurrent=4)

    asyncio.run(go())


def indexes(store: Store, batch_id: str) -> list[int]:
    return [json.loads(r)["index"] for r in store.outputs(batch_id)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "pb.db")
    yield s
    s.max_pages = None
    s.close()


# -- the store -------------------------------------------------------------------------


def test_outputs_on_a_full_disk_wait_and_are_stored_once_when_space_returns(
    store: Store,
) -> None:
    make(store, "b", 10)
    store.add_outputs_nowait([("b", i, True, rec(i)) for i in range(3)]).result(TIMEOUT)
    store.max_pages = FULL
    held = store.add_outputs_nowait([("b", i, True, rec(i, 5000)) for i in range(3, 10)])
    problem = until(
        lambda: (
            store.storage_problem if getattr(store.storage_problem, "retries", 0) >= 3 else None
        ),
        "three failed attempts",
    )
    assert "database or disk is full" in problem.message
    assert not held.done(), "a write that may wait must not fail on a full disk"
    assert indexes(store, "b") == [0, 1, 2]
    # A record queued again meanwhile (a batch rerunning an input) is still stored once.
    again = store.add_outputs_nowait([("b", 4, True, rec(4, 5000))])

    store.max_pages = None  # space returns
    held.result(TIMEOUT)
    again.result(TIMEOUT)
    assert store.storage_problem is None
    assert indexes(store, "b") == list(range(10))


def test_accepting_a_batch_on_a_full_disk_fails_at_once(store: Store) -> None:
    make(store, "before", 1)
    store.max_pages = FULL
    with pytest.raises(StorageError, match=r"cannot write to .*pb\.db: database or disk is full"):
        make(store, "big", 2000)
    assert store.get_batch("big") is None
    assert store.storage_problem is not None
    store.max_pages = None
    make(store, "big", 2000)
    row = store.get_batch("big")
    assert row is not None
    assert row.total == 2000
    assert store.storage_problem is None


def test_failures_are_logged_once_then_after_2_4_8_attempts_and_the_recovery(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pocketbatch.server")
    make(store, "b", 3)
    store.max_pages = FULL
    held = store.add_outputs_nowait([("b", i, True, rec(i, 5000)) for i in range(3)])
    until(lambda: getattr(store.storage_problem, "retries", 0) >= 5, "five failed attempts")
    store.max_pages = None
    held.result(TIMEOUT)

    lines = [r.getMessage() for r in caplog.records if r.name == "pocketbatch.server"]
    failures = [line for line in lines if "cannot write to" in line]
    recovered = [line for line in lines if "works again" in line]
    assert len(recovered) == 1, lines
    attempts = int(recovered[0].split("after ")[1].split(" ")[0])
    assert attempts >= 5
    # Logged at attempts 1, 2, 4, 8...: not once per retry.
    assert len(failures) == sum(1 for n in range(1, attempts + 1) if n & (n - 1) == 0)
    assert all("database or disk is full" in line for line in failures)


def test_backoff_doubles_from_a_tenth_of_a_second_to_thirty() -> None:
    from pocketbatch.server._store import backoff

    delays = [backoff(n) for n in range(1, 14)]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert all(b == min(30.0, 2 * a) for a, b in itertools.pairwise(delays))
    assert delays[-1] == 30.0
    assert backoff(10_000) == 30.0


def test_closing_on_a_full_disk_does_not_hang_and_loses_only_what_reruns(tmp_path: Path) -> None:
    store = Store(tmp_path / "pb.db")
    make(store, "b", 4)
    store.add_outputs_nowait([("b", 0, True, rec(0))]).result(TIMEOUT)
    store.max_pages = FULL
    held = store.add_outputs_nowait([("b", i, True, rec(i, 5000)) for i in range(1, 4)])
    until(lambda: store.storage_problem, "a failed attempt")
    closing = threading.Thread(target=store.close)
    closing.start()
    closing.join(TIMEOUT)
    assert not closing.is_alive(), "close() hung on a full disk"
    with pytest.raises(StorageError):
        held.result(0)
    again = Store(tmp_path / "pb.db")  # the next start: those inputs run again
    try:
        assert [i for i, _ in again.pending_inputs("b")] == [1, 2, 3]
    finally:
        again.close()


def test_a_cancelled_waiter_does_not_stop_the_writer(store: Store) -> None:
    """A write whose waiter was cancelled (a cancelled batch, a closing server) used to
    kill the writer thread (InvalidStateError), and every later write waited forever."""
    make(store, "b", 3)
    release = threading.Event()

    def insert(conn: Any) -> None:
        conn.execute("INSERT INTO outputs VALUES ('b', 0, 1, ?)", (rec(0),))

    async def go() -> None:
        blocker = store.write(lambda conn: release.wait(TIMEOUT))  # holds the writer
        queued = store.write(insert)

        async def wait() -> None:
            await asyncio.wrap_future(queued)

        waiter = asyncio.create_task(wait())
        await asyncio.sleep(0)
        waiter.cancel()
        await until_async(queued.cancelled, "the cancel to reach the write's future")
        release.set()
        await asyncio.wrap_future(blocker)
        await asyncio.wait_for(store.add_outputs([("b", 1, True, rec(1))]), TIMEOUT)

    asyncio.run(go())
    assert indexes(store, "b") == [0, 1]  # the cancelled waiter's write was still done


# -- the API, in-process (the test reaches the store to fill its disk) ------------------


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    app = create_app(ServerSettings(db=tmp_path / "pb.db", config=CONFIG))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test/api/v1", timeout=TIMEOUT
        ) as client:
            yield client, app.state.store
            app.state.store.max_pages = None


async def status(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    r = await client.get(f"/batches/{batch_id}")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


@pytest.mark.asyncio
async def test_submit_on_a_full_disk_answers_507_with_a_message(
    api: tuple[httpx.AsyncClient, Store],
) -> None:
    client, store = api
    store.max_pages = FULL
    inputs = [{"i": i, "pad": 10} for i in range(500)]
    r = await client.post("/batches", json={"flow": GATE, "inputs": inputs})
    assert r.status_code == 507, r.text
    assert "database or disk is full" in r.json()["detail"]
    assert "free space" in r.json()["detail"]
    assert (await client.get("/batches")).json()["total"] == 0  # nothing half-stored

    store.max_pages = None
    r = await client.post("/batches", json={"flow": GATE, "inputs": inputs})
    assert r.status_code == 201, r.text
    out = await client.get(f"/batches/{r.json()['batch_id']}/outputs", params={"wait": "true"})
    assert len(out.text.splitlines()) == 500


@pytest.mark.asyncio
async def test_a_full_disk_pauses_a_batch_which_finishes_when_space_returns(
    api: tuple[httpx.AsyncClient, Store], tmp_path: Path
) -> None:
    """The stall of issue 10: the batch now shows the error, waits, and completes."""
    client, store = api
    gate = tmp_path / "open"
    inputs = [{"i": i} if i < 5 else {"i": i, "gate": str(gate), "pad": 5000} for i in range(40)]
    r = await client.post("/batches", json={"flow": GATE, "inputs": inputs, "max_concurrent": 4})
    assert r.status_code == 201, r.text
    batch_id = r.json()["batch_id"]

    async def first_five() -> bool:
        done: int = (await status(client, batch_id))["done"]
        return done == 5

    await until_async(first_five, "the first five records")
    store.max_pages = FULL
    gate.touch()

    async def failing() -> dict[str, Any] | None:
        view = await status(client, batch_id)
        error = view.get("storage_error")
        return view if error and error["retries"] >= 2 else None

    view = await until_async(failing, "the status to show the storage error")
    assert view["status"] == "running"
    assert view["done"] == 5
    assert "database or disk is full" in view["storage_error"]["message"]
    assert view["storage_error"]["since"] >= view["created"]
    waiting = asyncio.create_task(
        client.get(f"/batches/{batch_id}/outputs", params={"wait": "true"})
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing stored can finish it while the disk is full

    store.max_pages = None  # space returns
    response = await asyncio.wait_for(waiting, TIMEOUT)
    records = [json.loads(line) for line in response.text.splitlines()]
    assert [rec["index"] for rec in records] == list(range(40))
    assert all(rec["outcome"] == "success" for rec in records)
    view = await status(client, batch_id)
    assert (view["status"], view["done"], view["storage_error"]) == ("completed", 40, None)


@pytest.mark.asyncio
async def test_a_paused_batch_stops_taking_inputs(
    api: tuple[httpx.AsyncClient, Store], tmp_path: Path
) -> None:
    """While its records cannot be stored, a batch does not run on with them in memory."""
    client, store = api
    gate, log = tmp_path / "open", tmp_path / "ran.log"
    n = 5000
    inputs = [{"i": i, "gate": str(gate), "log": str(log), "pad": 100} for i in range(n)]
    r = await client.post("/batches", json={"flow": GATE, "inputs": inputs, "max_concurrent": 8})
    batch_id = r.json()["batch_id"]
    store.max_pages = FULL
    gate.touch()

    async def failing() -> bool:
        error = (await status(client, batch_id))["storage_error"]
        return bool(error) and error["retries"] >= 5

    await until_async(failing, "five failed attempts")
    ran = len(log.read_text().splitlines())
    # At most 16 groups of 64 records waiting, plus the runner's window of 4 x 8 items.
    assert ran <= 17 * 64 + 32, ran
    assert (await status(client, batch_id))["done"] == 0

    store.max_pages = None
    out = await client.get(f"/batches/{batch_id}/outputs", params={"wait": "true"})
    assert [json.loads(line)["index"] for line in out.text.splitlines()] == list(range(n))
    assert sorted(int(i) for i in log.read_text().split()) == list(range(n))  # each ran once


@pytest.mark.asyncio
async def test_a_record_that_cannot_be_stored_fails_the_batch_instead_of_stalling(
    api: tuple[httpx.AsyncClient, Store],
) -> None:
    """Not a full disk but another write error: the batch ends (failed), waiters return."""
    client, store = api

    def refuse_outputs(conn: Any) -> None:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON outputs "
            "BEGIN SELECT RAISE(ABORT, 'outputs refused'); END"
        )

    await asyncio.wrap_future(store.write(refuse_outputs))
    r = await client.post("/batches", json={"flow": GATE, "inputs": [{"i": 1}, {"i": 2}]})
    batch_id = r.json()["batch_id"]
    out = await asyncio.wait_for(
        client.get(f"/batches/{batch_id}/outputs", params={"wait": "true"}), TIMEOUT
    )
    assert out.text == ""
    view = await status(client, batch_id)
    assert (view["status"], view["done"]) == ("failed", 0)


def test_the_status_schema_documents_storage_error(tmp_path: Path) -> None:
    schema = create_app(ServerSettings(db=tmp_path / "pb.db")).openapi()
    get = schema["paths"]["/api/v1/batches/{batch_id}"]["get"]
    body = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(body["properties"]["storage_error"]["anyOf"][0]["properties"]) == {
        "message",
        "retries",
        "since",
    }
    assert "507" in schema["paths"]["/api/v1/batches"]["post"]["responses"]


# -- a real full filesystem under a real server ------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs (needs the right to mount: skipped where there is none)."""
    yield from mounted_tmpfs(tmp_path / "disk", "16m")


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; delete it to free the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


class RealServer(ServerProcess):
    def __init__(self, tmp_path: Path, db: Path) -> None:
        super().__init__(tmp_path, "--db", str(db), "--config", str(CONFIG), up_timeout=TIMEOUT)

    status = ServerProcess.batch


def test_a_real_full_filesystem(tmp_path: Path, tiny_disk: Path) -> None:
    server = RealServer(tmp_path, tiny_disk / "pb.db")
    try:
        gate = tmp_path / "open"
        inputs: list[dict[str, Any]] = [{"i": i} for i in range(5)]
        inputs += [{"i": i, "gate": str(gate), "pad": 100_000} for i in range(5, 60)]
        body = {"flow": GATE, "inputs": inputs, "max_concurrent": 4}
        r = server.client.post("/batches", json=body)
        assert r.status_code == 201, r.text
        batch_id = r.json()["batch_id"]
        until(lambda: server.status(batch_id)["done"] == 5, "the first five records")

        filler = fill(tiny_disk)  # the 55 records left (5.5 MB) cannot fit now
        gate.touch()

        def failing() -> dict[str, Any] | None:
            view = server.status(batch_id)
            error = view.get("storage_error")
            return view if error and error["retries"] >= 2 else None

        view = until(failing, "the status to show the storage error")
        assert view["status"] == "running"
        assert view["done"] < 60
        big = [{"i": i, "pad": "y" * 100_000} for i in range(200)]  # 20 MB: more than the disk
        r = server.client.post("/batches", json={"flow": GATE, "inputs": big})
        assert r.status_code == 507, r.text
        assert "free space" in r.json()["detail"]

        filler.unlink()  # space returns; the records drain as the store checkpoints
        r = server.client.get(f"/batches/{batch_id}/outputs", params={"wait": "true"})
        assert r.status_code == 200
        records = [json.loads(line) for line in r.text.splitlines()]
        assert [rec["index"] for rec in records] == list(range(60))
        assert all(rec["outcome"] == "success" for rec in records)
        view = server.status(batch_id)
        assert (view["status"], view["done"], view["storage_error"]) == ("completed", 60, None)
    finally:
        server.stop()
    log = server.log_text()
    assert "pocketbatch store: cannot write to" in log
    assert "works again" in log
