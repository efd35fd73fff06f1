"""pocketbatch._client_parts: what the two clients share apart from I/O (the clients
against a real server are in test_client.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pocketbatch._client_parts import AtomicFile, Backoff, Records, poll_intervals, submission


def test_records_resume_after_the_last_index() -> None:
    records = Records()
    got = records.feed(b'{"index":0}\n{"index":1}\n{"ind')
    records.restart()  # a new stream from the start
    got += records.feed(b'{"index":0}\n{"index":1}\n{"index":2}')
    got += records.end()
    assert [json.loads(line)["index"] for line in got] == [0, 1, 2]


def test_backoff_doubles_within_its_budget() -> None:
    backoff = Backoff(60, first=0.25, cap=1.0)
    assert [backoff.next_delay() for _ in range(4)] == [0.25, 0.5, 1.0, 1.0]
    assert Backoff(0).next_delay() is None


def test_polls_start_fast() -> None:
    intervals = poll_intervals(0.3)
    assert [next(intervals) for _ in range(4)] == [0.05, 0.1, 0.2, 0.3]


def test_a_jsonl_file_is_submitted_byte_for_byte(tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b'{"a": 1}\r\n\xff\n')
    request = submission("output: 1\n", inputs, 2)
    head, _, rest = request["content"].partition(b"\n")
    assert json.loads(head) == {"flow": "output: 1\n", "max_concurrent": 2}
    assert rest == inputs.read_bytes()
    assert submission("output: 1\n", [1], 2) == {
        "json": {"flow": "output: 1\n", "max_concurrent": 2, "inputs": [1]}
    }


def test_an_atomic_file_appears_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"

    def fail_midway() -> None:
        with AtomicFile(path) as out:
            out.write(b"1\n")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_midway()
    assert list(tmp_path.iterdir()) == []
    with AtomicFile(path) as out:
        out.write(b"1\n")
    assert (path.read_bytes(), out.count) == (b"1\n", 1)
