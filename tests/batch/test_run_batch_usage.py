"""run-batch with LLM steps: one connection pool, limits from the command line, and
the usage (requests, tokens, 429s, retries, cache hits) in the progress and summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _fake_llm import CHAT_FLOW, fake_llm
from _support import write_lines

from pocketbatch.batch._progress import Progress
from pocketbatch.core import Usage


def run_batch(tmp_path: Path, *args: str, base_url: str) -> subprocess.CompletedProcess[str]:
    flow = tmp_path / "flow.yaml"
    flow.write_text(CHAT_FLOW, encoding="utf-8")
    inputs = write_lines(tmp_path / "in.jsonl", [{"q": str(i)} for i in range(8)])
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, "-m", "pocketbatch", "run-batch", "--flow", str(flow),
         "--inputs", str(inputs), "--var", f"openai_base_url={base_url}", *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def test_summary_line_shows_usage_and_the_pool_is_shared(tmp_path: Path) -> None:
    with fake_llm() as fake:
        fake.fail(429, retry_after_ms="1")
        proc = run_batch(
            tmp_path,
            "--max-concurrent", "2", "--requests-per-minute", "6000",
            "--tokens-per-minute", "1000000",
            base_url=fake.base_url,
        )  # fmt: skip
        connections = fake.connections
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["result"] for line in proc.stdout.splitlines()] == [
        f"echo: {i}" for i in range(8)
    ]
    summary = [line for line in proc.stderr.splitlines() if "total 8" in line]
    assert len(summary) == 1, proc.stderr
    assert summary[0].endswith(
        "; requests 9, tokens in 56 / out 24, 429s 1, retries 1, cache hits 0"
    )
    assert 1 <= connections <= 2


def test_a_limit_must_be_a_positive_number(tmp_path: Path) -> None:
    proc = run_batch(tmp_path, "--requests-per-minute", "0", base_url="http://127.0.0.1:9/v1")
    assert proc.returncode == 2
    assert "--requests-per-minute: must be a number > 0, got 0" in proc.stderr


def test_progress_shows_usage_only_when_something_was_spent() -> None:
    ticks = iter([0.0, 2.0, 2.0])
    usage = Usage()
    progress = Progress(2, enabled=False, clock=lambda: next(ticks), usage=usage)
    progress.update(ok=True)
    assert progress.line() == "1/2 done, 0 failed, 0.5 items/s, ETA 2s"
    usage.add(Usage(requests=3, tokens_in=10, tokens_out=4, rate_limited=1, retries=1))
    assert progress.summary() == (
        "total 1, succeeded 1, failed 0, wall 2.0 s, 0.5 items/s; "
        "requests 3, tokens in 10 / out 4, 429s 1, retries 1, cache hits 0"
    )
