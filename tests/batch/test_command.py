"""``run-batch`` guards its output (pocketbatch/batch/_command.py, issue 10).

* ``--resume`` continues only the same run: a changed flow, config or input under a
  record already written is refused with exit 2, saying what changed (``--force``
  overrides); an output from before fingerprints resumes with a warning;
* one run per output: a second run on it fails at once (exit 2, naming the holder's
  pid) and leaves the first run's output intact; a SIGKILLed run does not leave the
  output locked, even when its process-executor workers outlive it;
* nothing is written to the output before the executor is up: a run whose executor
  cannot start leaves an existing output (and its fingerprint) byte for byte.

Real subprocesses (``python -m pocketbatch``) with the flows of ``tests/batch/data``;
``/batchtest/gated`` holds items from ``PB_GATE_FROM`` on until ``PB_GATE_FILE``
exists, so "the first run has written exactly K records" is deterministic.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support import line_count, records, run_cli, wait_until, write_lines

from pocketbatch import FlowResult, PocketbatchError, load_flow
from pocketbatch.batch._command import run_batch_command
from pocketbatch.batch._lock import lock_output, lock_path
from pocketbatch.batch._sidecar import sidecar_path

DATA = Path(__file__).parent / "data"
GATED = DATA / "gated.yaml"
TIMEOUT = 120
N = 400  # inputs of the gated runs


@dataclass
class Ran:
    code: int
    out: str
    err: str


def batch(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """``pocketbatch run-batch ARGS...``, to its end."""
    proc = run_cli("run-batch", *args, cwd=cwd, env=env, timeout=TIMEOUT)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def start(*args: str | Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pocketbatch", "run-batch", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


@pytest.fixture
def reap() -> Any:
    """Processes to SIGKILL if a test leaves them running."""
    procs: list[subprocess.Popen[Any]] = []
    yield lambda proc: procs.append(proc) or proc
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)


def assert_complete(out: Path, n: int) -> None:
    got = records(out)
    assert [r["index"] for r in got] == list(range(n))
    assert all(r["result"] == {"i": r["index"], "square": r["index"] ** 2} for r in got)


def killed_at(tmp_path: Path, reap: Any, kill_at: int) -> tuple[Path, Path]:
    """A gated run over N inputs SIGKILLed with exactly ``kill_at`` records written."""
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(N)))
    out = tmp_path / "out.jsonl"
    gate = {"PB_GATE_FILE": str(tmp_path / "gate"), "PB_GATE_FROM": str(kill_at)}
    proc = reap(start("--flow", GATED, "--inputs", inputs, "--output", out, cwd=tmp_path, env=gate))
    wait_until(lambda: line_count(out) >= kill_at, proc, f"{kill_at} records")
    proc.kill()
    assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    assert line_count(out) == kill_at
    return inputs, out


def resume(inputs: Path, out: Path, *more: str, flow: Path = GATED) -> Ran:
    return batch(
        "--flow", flow, "--inputs", inputs, "--output", out, "--resume", *more, cwd=out.parent
    )


# -- a resume continues the same run ---------------------------------------------------------


def test_resume_refuses_changed_inputs_naming_the_line(tmp_path: Path, reap: Any) -> None:
    inputs, out = killed_at(tmp_path, reap, 300)
    assert lock_path(out).exists()  # left by the SIGKILL, but not locked
    kept = out.read_bytes()
    original = inputs.read_text().splitlines(keepends=True)

    def with_line(number: int, text: str) -> None:
        lines = list(original)
        lines[number - 1] = text + "\n"
        inputs.write_text("".join(lines))

    with_line(290, '{"i": 290, "new": 1}')  # after the last checkpoint: named exactly
    ran = resume(inputs, out)
    assert ran.code == 2, ran.err
    assert f"input line 290 of {inputs} differs from the one already run" in ran.err
    assert "--force" in ran.err
    assert len(ran.err.splitlines()) == 1, ran.err
    assert out.read_bytes() == kept

    with_line(37, '{"i": 37, "new": 1}')  # inside a checkpoint: its lines named
    ran = resume(inputs, out)
    assert ran.code == 2, ran.err
    assert "an input between line 1 and line 256" in ran.err
    assert out.read_bytes() == kept

    with_line(301, '{"i": 300, "new": 1}')  # not run yet: free to change
    ran = resume(inputs, out)
    assert ran.code == 0, ran.err
    assert "resuming: 300 of 400" in ran.err
    assert_complete(out, N)
    assert not lock_path(out).exists()


def test_resume_force_continues_despite_a_change(tmp_path: Path, reap: Any) -> None:
    inputs, out = killed_at(tmp_path, reap, 50)
    lines = inputs.read_text().splitlines(keepends=True)
    lines[9] = '{"i": 9, "new": 1}\n'
    inputs.write_text("".join(lines))
    ran = resume(inputs, out, "--force")
    assert ran.code == 0, ran.err
    assert "resuming anyway (--force), although input line 10" in ran.err
    assert_complete(out, N)
    # the fingerprint now describes the inputs as they are: a plain resume passes
    assert resume(inputs, out).code == 0


def copied_flow(tmp_path: Path) -> Path:
    """check.yaml with its pocketbatch.yaml and components, where a test may edit them."""
    folder = tmp_path / "flow"
    folder.mkdir()
    for name in ("check.yaml", "pocketbatch.yaml", "pb_batch_test_components.py"):
        shutil.copy(DATA / name, folder / name)
    return folder / "check.yaml"


def first_run(tmp_path: Path, flow: Path, n: int = 6, keep: int = 4) -> tuple[Path, Path]:
    """A complete run of ``flow`` over ``n`` inputs, cut to ``keep`` records."""
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": i} for i in range(n)))
    out = tmp_path / "out.jsonl"
    ran = batch("--flow", flow, "--inputs", inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 0, ran.err
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:keep]))
    return inputs, out


def test_resume_refuses_a_changed_flow(tmp_path: Path) -> None:
    flow = copied_flow(tmp_path)
    inputs, out = first_run(tmp_path, flow)
    kept = out.read_bytes()
    flow.write_text(flow.read_text().replace("path: n", "path: missing"))
    ran = resume(inputs, out, flow=flow)
    assert ran.code == 2, ran.err
    assert "the flow changed since the first run (check.yaml)" in ran.err
    assert out.read_bytes() == kept
    ran = resume(inputs, out, "--force", flow=flow)
    assert ran.code == 1, ran.err  # the new flow fails its items: the records mix
    assert [r["outcome"] for r in records(out)] == ["success"] * 4 + ["failed"] * 2


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    flow = copied_flow(tmp_path)
    inputs, out = first_run(tmp_path, flow)
    folder = flow.parent
    shutil.copy(folder / "pb_batch_test_components.py", folder / "pb_batch_test_v2.py")
    config = folder / "pocketbatch.yaml"
    config.write_text(config.read_text().replace("pb_batch_test_components", "pb_batch_test_v2"))
    ran = resume(inputs, out, flow=flow)
    assert ran.code == 2, ran.err
    assert "the config changed since the first run" in ran.err
    assert "pocketbatch.yaml" in ran.err


def test_a_changed_var_only_warns(tmp_path: Path) -> None:
    flow = copied_flow(tmp_path)
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": i} for i in range(6)))
    out = tmp_path / "out.jsonl"
    args = ("--flow", flow, "--inputs", inputs, "--output", out)
    assert batch(*args, "--var", "rate=5", cwd=tmp_path).code == 0
    ran = batch(*args, "--var", "rate=6", "--resume", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert "--var rate differs from the first run's" in ran.err


def test_an_output_from_before_fingerprints_resumes_with_a_warning(tmp_path: Path) -> None:
    flow = copied_flow(tmp_path)
    inputs, out = first_run(tmp_path, flow)
    sidecar_path(out).unlink()
    ran = resume(inputs, out, flow=flow)
    assert ran.code == 0, ran.err
    assert "has no fingerprint" in ran.err
    assert [r["result"] for r in records(out)] == [0, 2, 4, 6, 8, 10]


def test_force_needs_resume(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    ran = batch(
        "--flow",
        DATA / "check.yaml",
        "--inputs",
        inputs,
        "--output",
        "o.jsonl",
        "--force",
        cwd=tmp_path,
    )
    assert ran.code == 2
    assert "--force only applies with --resume" in ran.err


# -- one run per output -----------------------------------------------------------------------


def test_a_second_run_on_the_same_output_fails_at_once(tmp_path: Path, reap: Any) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(N)))
    out = tmp_path / "out.jsonl"
    gate_file = tmp_path / "gate"
    gate = {"PB_GATE_FILE": str(gate_file), "PB_GATE_FROM": "50"}
    first = reap(
        start("--flow", GATED, "--inputs", inputs, "--output", out, cwd=tmp_path, env=gate)
    )
    wait_until(lambda: line_count(out) >= 50, first, "50 records")
    for extra in ([], ["--resume"]):
        # the same file under another name; its gate is open: it would run to the end
        second = batch(
            "--flow",
            GATED,
            "--inputs",
            inputs,
            "--output",
            Path("..") / tmp_path.name / "out.jsonl",
            *extra,
            cwd=tmp_path,
            env={"PB_GATE_FROM": str(N)},
        )
        assert second.code == 2, second.err
        assert second.err.splitlines() == [
            f"pocketbatch: ../{tmp_path.name}/out.jsonl is in use by another pocketbatch run "
            f"(pid {first.pid}); wait for it to end, or choose another --output"
        ]
        assert line_count(out) == 50
        assert [r["index"] for r in records(out)] == list(range(50))
    gate_file.touch()
    assert first.wait(timeout=TIMEOUT) == 0
    assert_complete(out, N)
    assert not lock_path(out).exists()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_outliving_a_killed_run_do_not_keep_its_output_locked(
    tmp_path: Path, reap: Any
) -> None:
    """Process-executor workers are forked from the run and may outlive its SIGKILL
    (here: held by the gate). A lock they inherited would block the resume."""
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(N)))
    out = tmp_path / "out.jsonl"
    gate_file = tmp_path / "gate"
    gate = {"PB_GATE_FILE": str(gate_file), "PB_GATE_FROM": "50"}
    args = ("--flow", GATED, "--inputs", inputs, "--output", out, "--executor", "process")
    first = reap(start(*args, "--workers", "2", cwd=tmp_path, env=gate))
    wait_until(lambda: line_count(out) >= 50, first, "50 records")
    workers = children(first.pid)
    try:
        first.kill()
        assert first.wait(timeout=TIMEOUT) == -signal.SIGKILL
        assert workers, "no worker processes"
        assert all(alive(pid) for pid in workers)  # orphans now, still running
        gate_file.touch()
        ran = batch(*args, "--resume", cwd=tmp_path)
        assert ran.code == 0, ran.err
        assert_complete(out, N)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_run_holding_the_lock_is_never_entered_twice(tmp_path: Path) -> None:
    """In one process too, and before the executor starts (it is never entered)."""

    class Counting:
        entered = 0

        async def __aenter__(self) -> Counting:
            Counting.entered += 1
            return self

        async def __aexit__(self, *exc_info: object) -> None:
            return None

        async def run(self, index: int, item: Any) -> FlowResult:
            return FlowResult("success", 1)

    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    out = tmp_path / "out.jsonl"
    with lock_output(out), pytest.raises(PocketbatchError, match="in use by another"):
        command(inputs, out, Counting())
    assert Counting.entered == 0
    assert not out.exists()
    assert command(inputs, out, Counting()) == 0
    assert Counting.entered == 1


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
