"""The server's SQLite store, without HTTP: batches, inputs, outputs, the writer thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pocketbatch.server._store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "pb.db")
    yield s
    s.close()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def make(store: Store, batch_id: str, n: int, *, max_concurrent: int = 4) -> int:
    async def go() -> int:
        return await store.create_batch(
            batch_id,
            "output: 1\n",
            [f'{{"i": {i}}}'.encode() for i in range(n)],
            max_concurrent=max_concurrent,
            name=f"name-{batch_id}",
        )

    return run(go())  # type: ignore[return-value]


def add(store: Store, rows: list[tuple[str, int, bool, bytes]]) -> None:
    run(store.add_outputs(rows))


def rec(i: int, tag: str = "") -> bytes:
    return f'{{"index":{i},"outcome":"success","result":"{tag}{i}"}}'.encode()


def test_create_and_get_batch(store: Store) -> None:
    assert make(store, "b1", 5, max_concurrent=3) == 5
    row = store.get_batch("b1")
    assert row is not None
    assert (row.id, row.name, row.flow, row.status) == ("b1", "name-b1", "output: 1\n", "running")
    assert (row.total, row.max_concurrent, row.done, row.succeeded, row.failed) == (5, 3, 0, 0, 0)
    assert row.finished is None
    assert row.created > 0
    view = row.to_dict()
    assert view["batch_id"] == "b1"
    assert view["pending"] == 5
    assert "flow" not in view
    assert store.get_batch("nope") is None


def test_empty_batch(store: Store) -> None:
    assert make(store, "empty", 0) == 0
    row = store.get_batch("empty")
    assert row is not None
    assert row.total == 0
    assert list(store.pending_inputs("empty")) == []
    assert list(store.outputs("empty")) == []


def test_outputs_counts_pending_in_order(store: Store) -> None:
    make(store, "b", 10)
    add(store, [("b", 7, True, rec(7)), ("b", 2, False, rec(2)), ("b", 0, True, rec(0))])
    row = store.get_batch("b")
    assert row is not None
    assert (row.done, row.succeeded, row.failed) == (3, 2, 1)
    assert row.to_dict()["pending"] == 7
    assert list(store.outputs("b")) == [rec(0), rec(2), rec(7)]
    pending = list(store.pending_inputs("b"))
    assert [i for i, _ in pending] == [1, 3, 4, 5, 6, 8, 9]
    assert pending[0][1] == b'{"i": 1}'


def test_pending_inputs_and_outputs_read_in_chunks(store: Store) -> None:
    make(store, "b", 1003)
    add(store, [("b", i, True, rec(i)) for i in range(0, 1003, 2)])
    assert [i for i, _ in store.pending_inputs("b", chunk=7)] == list(range(1, 1003, 2))
    assert list(store.outputs("b", chunk=10)) == [rec(i) for i in range(0, 1003, 2)]


def test_batches_are_separate(store: Store) -> None:
    make(store, "a", 3)
    make(store, "b", 3)
    add(store, [("a", 0, True, rec(0, "a")), ("b", 1, True, rec(1, "b"))])
    assert list(store.outputs("a")) == [rec(0, "a")]
    assert list(store.outputs("b")) == [rec(1, "b")]
    assert [i for i, _ in store.pending_inputs("a")] == [1, 2]


def test_add_outputs_twice_keeps_the_first(store: Store) -> None:
    make(store, "b", 2)
    add(store, [("b", 0, True, rec(0, "first"))])
    add(store, [("b", 0, False, rec(0, "second"))])
    add(store, [("b", 1, True, rec(1, "x")), ("b", 1, True, rec(1, "y"))])
    assert list(store.outputs("b")) == [rec(0, "first"), rec(1, "x")]
    row = store.get_batch("b")
    assert row is not None
    assert (row.done, row.succeeded) == (2, 2)


def test_duplicate_batch_id_is_refused(store: Store) -> None:
    make(store, "b", 2)
    with pytest.raises(sqlite3.IntegrityError):
        make(store, "b", 3)
    row = store.get_batch("b")
    assert row is not None
    assert row.total == 2
    assert len(list(store.pending_inputs("b"))) == 2


def test_list_batches_pages_newest_first(store: Store) -> None:
    for k in range(7):
        make(store, f"b{k}", 1)
    seen: list[str] = []
    for offset in range(0, 8, 3):
        rows, total = store.list_batches(limit=3, offset=offset)
        assert total == 7
        seen += [r.id for r in rows]
    assert sorted(seen) == sorted(f"b{k}" for k in range(7))
    assert len(seen) == 7
    created = [store.get_batch(b).created for b in seen]  # type: ignore[union-attr]
    assert created == sorted(created, reverse=True)
    assert store.list_batches(limit=5, offset=100) == ([], 7)


def test_set_status_and_unfinished(store: Store) -> None:
    for name in ("a", "b", "c"):
        make(store, name, 1)
    assert sorted(store.unfinished()) == ["a", "b", "c"]
    run(store.set_status("a", "completed", finished=True))
    run(store.set_status("b", "cancelled", finished=True))
    assert store.unfinished() == ["c"]
    a = store.get_batch("a")
    assert a is not None
    assert a.status == "completed"
    assert a.finished is not None
    run(store.set_status("c", "running", finished=False))
    c = store.get_batch("c")
    assert c is not None
    assert c.status == "running"
    assert c.finished is None


def test_thousands_of_nowait_writes_all_land(store: Store) -> None:
    make(store, "b", 5000)
    futures = [store.add_outputs_nowait([("b", i, i % 3 != 0, rec(i))]) for i in range(5000)]
    for future in futures:
        future.result(timeout=60)
    row = store.get_batch("b")
    assert row is not None
    assert row.done == 5000
    assert row.succeeded == sum(1 for i in range(5000) if i % 3 != 0)
    assert list(store.outputs("b")) == [rec(i) for i in range(5000)]


def test_concurrent_writes_are_grouped_into_few_transactions(store: Store) -> None:
    make(store, "b", 3000)
    statements: list[str] = []
    gate = threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)
        assert gate.wait(timeout=30)

    blocker = store.write(hold)
    futures = []
    threads = [
        threading.Thread(
            target=lambda k=k: futures.extend(
                store.add_outputs_nowait([("b", i, True, rec(i))]) for i in range(k, 3000, 4)
            )
        )
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(futures) == 3000
    gate.set()
    blocker.result(timeout=30)
    for future in futures:
        future.result(timeout=60)
    commits = [s for s in statements if s.strip().upper() == "COMMIT"]
    # 3000 writes queued while the writer was busy: at most 1000 per transaction.
    assert 1 <= len(commits) <= 4, len(commits)
    row = store.get_batch("b")
    assert row is not None
    assert row.done == 3000


def test_second_store_on_the_same_file_sees_committed_data(tmp_path: Path) -> None:
    first = Store(tmp_path / "pb.db")
    try:
        make(first, "b", 4)
        add(first, [("b", 1, True, rec(1))])
        second = Store(tmp_path / "pb.db")
        try:
            row = second.get_batch("b")
            assert row is not None
            assert (row.total, row.done) == (4, 1)
            assert list(second.outputs("b")) == [rec(1)]
            # and the other way round, while the first is still open
            add(second, [("b", 2, True, rec(2))])
            assert list(first.outputs("b")) == [rec(1), rec(2)]
        finally:
            second.close()
    finally:
        first.close()
    conn = sqlite3.connect(tmp_path / "pb.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()


def test_close_finishes_queued_writes(tmp_path: Path) -> None:
    first = Store(tmp_path / "pb.db")
    make(first, "b", 2000)
    futures = [first.add_outputs_nowait([("b", i, True, rec(i))]) for i in range(2000)]
    first.close()
    assert all(f.done() and f.exception() is None for f in futures)
    again = Store(tmp_path / "pb.db")
    try:
        row = again.get_batch("b")
        assert row is not None
        assert row.done == 2000
    finally:
        again.close()


def test_a_failing_write_does_not_fail_writes_grouped_with_it(store: Store) -> None:
    make(store, "b", 2)
    gate = threading.Event()
    blocker = store.write(lambda conn: gate.wait(timeout=30))

    def boom(conn: sqlite3.Connection) -> None:
        raise sqlite3.IntegrityError("a bad write")

    bad = store.write(boom)
    good = store.add_outputs_nowait([("b", 0, True, rec(0))])
    gate.set()
    blocker.result(timeout=30)
    with pytest.raises(sqlite3.IntegrityError):
        bad.result(timeout=30)
    assert good.exception(timeout=30) is None
    assert list(store.outputs("b")) == [rec(0)]
