"""The server's blob store: a remote batch's blobs live in the server's SQLite file."""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
from pathlib import Path

import pytest
from _support import ServerProcess

from pocketbatch import ComponentError
from pocketbatch.loader._blobs import blob_id
from pocketbatch.server._blobs import SqliteBlobStore


@pytest.mark.asyncio
async def test_put_get_keeps_the_value_its_type_and_stepflows_id(tmp_path: Path) -> None:
    store = SqliteBlobStore(tmp_path / "pb.db")
    value = {"z": 1, "a": [1, 2.5, None, "x"], "big": 2**62}
    ref = await store.put(value, "flow")
    assert ref == blob_id(value)
    assert await store.put(value, "flow") == ref  # the same value is one blob
    got, kind = await store.get(ref)
    assert (got, kind) == (value, "flow")
    assert list(got) == ["z", "a", "big"]  # key order kept: ids stay Stepflow's
    store.close()


@pytest.mark.asyncio
async def test_blobs_outlive_the_store_and_travel_by_file_name(tmp_path: Path) -> None:
    first = SqliteBlobStore(tmp_path / "pb.db")
    ref = await first.put([1, 2])
    first.close()
    copy = pickle.loads(pickle.dumps(first))  # as a worker process gets it
    assert await copy.get(ref) == ([1, 2], "data")
    copy.close()


@pytest.mark.asyncio
async def test_unknown_blob_and_bad_type(tmp_path: Path) -> None:
    store = SqliteBlobStore(tmp_path / "pb.db")
    with pytest.raises(ComponentError) as info:
        await store.get("f" * 64)
    assert (info.value.code, info.value.message) == (
        "COMPONENT_FAILED",
        f"Blob not found: {'f' * 64}",
    )
    with pytest.raises(ComponentError) as bad:
        await store.put(1, "text")  # type: ignore[arg-type]
    assert bad.value.code == "INVALID_INPUT"
    store.close()


@pytest.mark.asyncio
async def test_concurrent_puts_from_one_loop(tmp_path: Path) -> None:
    store = SqliteBlobStore(tmp_path / "pb.db")
    refs = await asyncio.gather(*(store.put({"n": n}) for n in range(50)))
    assert len(set(refs)) == 50
    values = await asyncio.gather(*(store.get(r) for r in refs))
    assert [v for v, _ in values] == [{"n": n} for n in range(50)]
    store.close()


FLOW = """
steps:
  - id: put
    component: /builtin/put_blob
    input: {data: {$input: $}}
  - id: store_flow
    component: /builtin/put_blob
    input: {blob_type: flow, data: {$literal: {output: {seen: {$input: n}}}}}
  - id: run
    component: /builtin/eval
    input: {flow_id: {$step: store_flow, path: blob_id}, input: {$input: $}}
output: {id: {$step: put, path: blob_id}, ran: {$step: run, path: result.result}}
"""


def test_a_remote_batchs_blobs_are_in_the_servers_database(tmp_path: Path) -> None:
    db = tmp_path / "pb.db"
    server = ServerProcess(tmp_path, "--db", str(db))
    try:
        r = server.client.post("/batches", json={"flow": FLOW, "inputs": [{"n": 1}, {"n": 2}]})
        assert r.status_code == 201, r.text
        records = server.outputs(r.json()["batch_id"])
    finally:
        server.stop()
    assert [rec["result"] for rec in records] == [
        {"id": blob_id({"n": n}), "ran": {"seen": n}} for n in (1, 2)
    ]
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT id, type FROM blobs").fetchall())
    flow_id = blob_id({"output": {"seen": {"$input": "n"}}})
    assert rows == {blob_id({"n": 1}): "data", blob_id({"n": 2}): "data", flow_id: "flow"}
