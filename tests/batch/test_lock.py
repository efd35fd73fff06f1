"""The output lock (pocketbatch/batch/_lock.py; moved from tests/batch/test_sidecar.py).

The contract (issue 10): one run per output at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketbatch import PocketbatchError
from pocketbatch.batch._lock import lock_output, lock_path

# -- the lock -------------------------------------------------------------------------------


def test_one_lock_per_output_released_and_removed_after(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lock = lock_output(out)
    assert lock_path(out).read_text().strip().isdigit()
    with pytest.raises(
        PocketbatchError, match=r"out.jsonl is in use by another pocketbatch run \(pid \d+\)"
    ):
        lock_output(tmp_path / "." / "out.jsonl")  # the same file, however it is named
    lock.release()
    assert not lock_path(out).exists()
    with lock_output(out):  # free again
        pass


def test_a_lock_file_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lock_path(out).write_text("999999999\n")  # what a SIGKILL leaves: the file, no lock
    with lock_output(out):
        assert lock_path(out).read_text().strip() != "999999999"


def test_locks_of_other_outputs_are_independent(tmp_path: Path) -> None:
    with lock_output(tmp_path / "a.jsonl"), lock_output(tmp_path / "b.jsonl"):
        pass


def test_an_output_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PocketbatchError, match=r"cannot lock --output .*: No such file"):
        lock_output(tmp_path / "nowhere" / "out.jsonl")
