"""``run-batch`` leaves its output alone until it can run (pocketbatch/batch/_command.py,
issue 10): nothing is written to the output before the executor is up, so a run whose
executor cannot start leaves an existing output byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support import write_lines

from pocketbatch import FlowResult, PocketbatchError, load_flow
from pocketbatch.batch._command import run_batch_command

DATA = Path(__file__).parent / "data"
TIMEOUT = 120


@dataclass
class Ran:
    code: int
    out: str
    err: str


def batch(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """``pocketbatch run-batch ARGS...``, to its end."""
    proc = subprocess.run(
        [sys.executable, "-m", "pocketbatch", "run-batch", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


# -- nothing written before the executor is up -------------------------------------------------


def command(inputs: Path, out: Path, executor: Any, *, resume: bool = False) -> int:
    return run_batch_command(
        load_flow("output: 1\n"),
        inputs,
        out,
        max_concurrent=4,
        resume=resume,
        executor=executor,
        workers=None,
        progress=False,
    )


class Unreachable:
    """An executor that cannot start, like a Ray cluster out of reach."""

    async def __aenter__(self) -> Unreachable:
        await asyncio.sleep(0)
        raise PocketbatchError("cannot reach the Ray cluster at ray://127.0.0.1:1")

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def run(self, index: int, item: Any) -> FlowResult:
        raise AssertionError("never started")


@pytest.mark.parametrize("resume", [False, True])
def test_an_executor_that_cannot_start_leaves_the_output_as_it_was(
    tmp_path: Path, resume: bool
) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": i} for i in range(5)))
    out = tmp_path / "out.jsonl"
    assert command(inputs, out, "async") == 0
    with open(out, "ab") as f:
        f.write(b'{"index": 5, "outc')  # a torn line: a resume would cut it, later
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(PocketbatchError, match="cannot reach"):
        command(inputs, out, Unreachable(), resume=resume)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_no_output_file_is_created_when_the_executor_cannot_start(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    with pytest.raises(PocketbatchError, match="cannot reach"):
        command(inputs, tmp_path / "out.jsonl", Unreachable())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_without_the_ray_extra_an_existing_output_is_left_alone(tmp_path: Path) -> None:
    """Through the CLI: ``--executor ray`` where Ray cannot be imported."""
    no_ray = tmp_path / "no_ray"
    no_ray.mkdir()
    (no_ray / "ray.py").write_text("raise ImportError('ray is not installed here')\n")
    path = os.pathsep.join(p for p in (str(no_ray), os.environ.get("PYTHONPATH")) if p)
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": i} for i in range(3)))
    out = tmp_path / "out.jsonl"
    assert (
        batch("--flow", DATA / "check.yaml", "--inputs", inputs, "--output", out, cwd=tmp_path).code
        == 0
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    ran = batch(
        "--flow",
        DATA / "check.yaml",
        "--inputs",
        inputs,
        "--output",
        out,
        "--executor",
        "ray",
        cwd=tmp_path,
        env={"PYTHONPATH": path},
    )
    assert ran.code == 2, ran.err
    assert "ray" in ran.err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
