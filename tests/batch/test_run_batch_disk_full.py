"""``pocketbatch run-batch`` on a full disk: one line, exit 3, and a resumable output.

Issue 10: on a full disk run-batch died with two tracebacks and exit code 1, which
means "some items failed". Now it says ``pocketbatch: error: no space left on device
writing OUT; free space and rerun with --resume`` and exits 3; the records written
are a prefix of the full output (a torn last line is repaired by ``--resume``), so
``--resume`` with space completes it with each input exactly once.

The disk is full for real: ``/dev/full`` (every write fails with ENOSPC), a file
size limit (``RLIMIT_FSIZE``, with SIGXFSZ ignored, so a write past it fails with
EFBIG mid-output), and where this process may mount one, a tiny tmpfs filled up.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import mounted_tmpfs, records, write_lines

DATA = Path(__file__).parent / "data"
NOOP = DATA / "noop.yaml"
TIMEOUT = 120
N = 300

needs_dev_full = pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")


def run_batch(
    *args: str | Path, cwd: Path, stdout: int | None = None, file_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``pocketbatch run-batch ARGS``; with ``file_limit``, under RLIMIT_FSIZE (the
    limit and an ignored SIGXFSZ are set in a launcher and survive its exec)."""
    command = [sys.executable, "-m", "pocketbatch", "run-batch", *map(str, args), "--no-progress"]
    if file_limit is not None:
        launcher = (
            "import os, resource, signal, sys; "
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_limit}, {file_limit})); "
            "os.execv(sys.executable, sys.argv[1:])"
        )
        command = [sys.executable, "-c", launcher, *command]
    return subprocess.run(
        command,
        cwd=cwd,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def inputs(tmp_path: Path, n: int = N) -> Path:
    return write_lines(tmp_path / "in.jsonl", [{"n": i, "text": f"item {i}"} for i in range(n)])


def assert_complete(out: Path, n: int = N) -> None:
    got = records(out)
    assert [r["index"] for r in got] == list(range(n))  # each input exactly once, in order
    assert [r["result"]["n"] for r in got] == list(range(n))
    assert all(r["outcome"] == "success" for r in got)


@needs_dev_full
def test_output_on_a_full_device_says_so_in_one_line_and_exits_3(tmp_path: Path) -> None:
    done = run_batch(
        "--flow", NOOP, "--inputs", inputs(tmp_path), "--output", "/dev/full", cwd=tmp_path
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        "pocketbatch: error: no space left on device writing /dev/full; "
        "free space and rerun with --resume\n"
    )


@needs_dev_full
def test_stdout_on_a_full_device_says_so_in_one_line_and_exits_3(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        done = run_batch(
            "--flow", NOOP, "--inputs", inputs(tmp_path), cwd=tmp_path, stdout=full.fileno()
        )
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        "pocketbatch: error: no space left on device writing stdout; free space and run again\n"
    )


def test_a_file_size_limit_mid_output_then_resume_completes_it_exactly_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    source = inputs(tmp_path)
    limit = 5000  # about 60 records of the 300: the last one written is torn
    done = run_batch(
        "--flow", NOOP, "--inputs", source, "--output", out, cwd=tmp_path, file_limit=limit
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        f"pocketbatch: error: file too large writing {out}; free space and rerun with --resume\n"
    )
    assert out.stat().st_size == limit  # written up to the limit, then refused
    assert not out.read_bytes().endswith(b"\n")  # a torn last line, for --resume to repair

    again = run_batch("--flow", NOOP, "--inputs", source, "--output", out, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resuming: " in again.stderr
    assert_complete(out)


# -- a real full filesystem --------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (needs the right to mount: skipped where there is none)."""
    yield from mounted_tmpfs(tmp_path / "disk", "1m")


def test_a_real_full_filesystem_then_resume(tmp_path: Path, tiny_disk: Path) -> None:
    out = tiny_disk / "out.jsonl"
    filler = tiny_disk / "filler"
    # Leave 48 KB: the fingerprint sidecar takes 3 pages, leaving room for about 700
    # records (16 KB left room for one record at most, or none: a flaky test).
    filler.write_bytes(b"\0" * (1024 * 1024 - 48 * 1024))
    source = inputs(tmp_path, 2000)
    done = run_batch("--flow", NOOP, "--inputs", source, "--output", out, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr == (
        f"pocketbatch: error: no space left on device writing {out}; "
        "free space and rerun with --resume\n"
    )
    assert 0 < out.stat().st_size < 2000 * 20

    filler.unlink()  # space returns
    again = run_batch("--flow", NOOP, "--inputs", source, "--output", out, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_complete(out, 2000)
