"""The step cache through ``pocketbatch run-batch`` (issue 12), as real subprocesses.

The flow's first step (``cache: true``) appends its input to a calls file each time
it is really called; the second step (not cached) can hold one item until a release
file exists. What is promised: a ``--resume`` after a SIGKILL makes no call twice,
even for items whose answer had arrived but whose record was not yet written; a rerun
after changing a later step calls the cached step zero times; ``--no-cache`` and
``--refresh-cache`` call again; worker processes share the file.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _support import records, write_lines

TIMEOUT = 120
N = 10

MODULE = """
import asyncio, os
from pathlib import Path

def ask(data):
    with open(os.environ["PB_CALLS"], "a", encoding="utf-8") as f:
        f.write(f"{data['n']}\\n")
    return {"answer": data["n"] * 10}

async def hold(data):
    if data["n"] == int(os.environ.get("PB_HOLD", "-1")):
        while not Path(os.environ["PB_RELEASE"]).exists():
            await asyncio.sleep(0.02)
    return data
"""

FLOW = """
steps:
  - id: ask
    component: /python/stepcache_mod.ask
    input: {n: {$input: n}}
    cache: true
  - id: hold
    component: /python/stepcache_mod.hold
    input: {n: {$input: n}, answer: {$step: ask, path: answer}}
output: {$step: hold, path: answer}
"""


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "stepcache_mod.py").write_text(MODULE, encoding="utf-8")
        self.flow = root / "flow.yaml"
        self.flow.write_text(FLOW, encoding="utf-8")
        self.inputs = write_lines(root / "in.jsonl", [{"n": n} for n in range(N)])
        self.calls = root / "calls.txt"
        self.release = root / "release"
        self.env = {
            **os.environ,
            "PB_CALLS": str(self.calls),
            "PB_RELEASE": str(self.release),
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
        }

    def args(self, output: str, *more: str) -> list[str]:
        return [
            sys.executable, "-m", "pocketbatch", "run-batch", "--flow", str(self.flow),
            "--inputs", str(self.inputs), "--output", str(self.root / output),
            "--no-progress", *more,
        ]  # fmt: skip

    def run(self, output: str, *more: str, hold: int = -1) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.args(output, *more),
            cwd=self.root,
            env={**self.env, "PB_HOLD": str(hold)},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def call_counts(self) -> collections.Counter[int]:
        if not self.calls.exists():
            return collections.Counter()
        return collections.Counter(int(x) for x in self.calls.read_text().split())

    def results(self, output: str) -> list[object]:
        return [r["result"] for r in records(self.root / output)]


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def wait_for(condition: object, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TIMEOUT  # a guard against hanging, not a timing assertion
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.02)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_kill_then_resume_makes_no_call_twice(setup: Setup) -> None:
    out = setup.root / "out.jsonl"
    proc = subprocess.Popen(
        setup.args("out.jsonl"),
        cwd=setup.root,
        env={**setup.env, "PB_HOLD": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Every answer has arrived; items 0-2 are written, 3 is held, 4-9 wait behind it.
        wait_for(lambda: sum(setup.call_counts().values()) == N and lines(out) == 3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        if proc.stderr is not None:
            proc.stderr.close()
    assert lines(out) == 3  # seven items were in flight: answered, not recorded
    setup.release.touch()
    resumed = setup.run("out.jsonl", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert setup.results("out.jsonl") == [n * 10 for n in range(N)]
    assert setup.call_counts() == dict.fromkeys(range(N), 1)  # every input paid for once
    assert "7 answers reused, 0 stored" in resumed.stderr


def test_rerun_after_changing_a_later_step_and_the_flags(setup: Setup) -> None:
    first = setup.run("a.jsonl")
    assert first.returncode == 0, first.stderr
    assert (setup.root / ".pocketbatch-cache.sqlite").is_file()  # the default: flow's folder
    assert "0 answers reused, 10 stored" in first.stderr
    setup.flow.write_text(FLOW.replace("path: answer}\n", "path: n}\n"), encoding="utf-8")
    second = setup.run("b.jsonl")
    assert second.returncode == 0, second.stderr
    assert setup.results("b.jsonl") == list(range(N))  # the changed later step ran...
    assert setup.call_counts() == dict.fromkeys(range(N), 1)  # ...the cached one did not
    assert "10 answers reused, 0 stored" in second.stderr

    assert setup.run("c.jsonl", "--no-cache").returncode == 0
    assert setup.call_counts() == dict.fromkeys(range(N), 2)
    assert setup.run("d.jsonl", "--refresh-cache").returncode == 0
    assert setup.call_counts() == dict.fromkeys(range(N), 3)
    assert setup.run("e.jsonl").returncode == 0
    assert setup.call_counts() == dict.fromkeys(range(N), 3)


def test_flag_errors_are_usage_errors(setup: Setup) -> None:
    both = setup.run("a.jsonl", "--no-cache", "--refresh-cache")
    assert both.returncode == 2
    assert "--refresh-cache stores answers: it cannot go with --no-cache" in both.stderr
    (setup.root / "bad.sqlite").write_text("not sqlite" * 100)
    bad = setup.run("a.jsonl", "--cache", str(setup.root / "bad.sqlite"))
    assert bad.returncode == 2
    assert "cannot open it" in bad.stderr
    assert "--cache PATH, or --no-cache" in bad.stderr
    assert setup.call_counts() == {}


def test_worker_processes_share_the_file(setup: Setup) -> None:
    cache = str(setup.root / "shared.sqlite")
    more = ("--executor", "process", "--workers", "2", "--cache", cache)
    first = setup.run("a.jsonl", *more)
    assert first.returncode == 0, first.stderr
    assert "10 new answers stored" in first.stderr
    second = setup.run("b.jsonl", *more)
    assert second.returncode == 0, second.stderr
    assert "0 new answers stored" in second.stderr
    assert setup.call_counts() == dict.fromkeys(range(N), 1)
    assert not (setup.root / ".pocketbatch-cache.sqlite").exists()


def test_pocketbatch_run_uses_the_cache_too(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pocketbatch.cli import main

    monkeypatch.syspath_prepend(str(setup.root))
    for name in ("PB_CALLS", "PB_RELEASE"):
        monkeypatch.setenv(name, setup.env[name])
    argv = ["run", "--flow", str(setup.flow), "--input", '{"n": 4}']
    assert [main(argv), main(argv), main([*argv, "--no-cache"])] == [0, 0, 0]
    assert capsys.readouterr().out.splitlines() == ['{"outcome":"success","result":40}'] * 3
    assert setup.call_counts() == {4: 2}  # once, then the file, then --no-cache
