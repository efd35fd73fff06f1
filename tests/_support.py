"""Helpers several test modules share (``tests`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from socketserver import BaseServer
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(httpd: BaseServer) -> Iterator[None]:
    """``httpd`` serves in a thread for the block; then it is shut down and closed, and
    its thread must end within 10 s."""
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
        assert not thread.is_alive()


def write_lines(path: Path, items: Iterable[Any]) -> Path:
    """A JSONL file: each item as JSON, or as it is when it is a string (a bad line)."""
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(item if isinstance(item, str) else json.dumps(item))
            f.write("\n")
    return path


def records(path: Path) -> list[dict[str, Any]]:
    """The records of a run-batch output, which must not end with a torn line."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "the output ends with a torn line"
    return [json.loads(line) for line in text.splitlines()]


def line_count(path: Path) -> int:
    """How many whole lines ``path`` holds (0 while it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_until(
    check: Callable[[], bool], proc: subprocess.Popen[Any], what: str, timeout: float = 120
) -> None:
    """Poll ``check`` (a count, not a time); fail if ``proc`` (a run-batch) ends first.
    The deadline only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"run-batch exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m pocketbatch ARGS...`` to its end: UTF-8 text in and out, captured;
    ``env`` is laid over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "pocketbatch", *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def mounted_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``"16m"``) mounted on the new folder ``mount`` for as long
    as the generator runs (a fixture's body: ``yield from mounted_tmpfs(...)``);
    skipped where this process may not mount one (it needs root)."""
    mount.mkdir()
    if shutil.which("mount") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def server_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``POCKETBATCH_TOKEN``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "POCKETBATCH_TOKEN"}
    env.update(extra)
    return env


class ServerProcess:
    """``python -m pocketbatch serve --port PORT ARGS...`` as a subprocess on a free
    port of 127.0.0.1, its stdout and stderr in a log file, and an httpx ``client``
    for its API (``url``). The constructor returns once ``/health`` answers 200 (each
    poll on a connection of its own, so the client holds none), and raises an
    AssertionError with the log's tail when the server exits or does not answer in
    ``up_timeout`` seconds. ``stop`` terminates it (a kill after 15 s)."""

    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        up_timeout: float = 30,
        client_timeout: float = 60,
        headers: Mapping[str, str] | None = None,
        trust_env: bool = True,
        preexec_fn: Callable[[], Any] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self.log_path = log or tmp_path / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 -- closed by stop()
        self.trust_env = trust_env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pocketbatch", "serve", "--port", str(self.port), *args],
            cwd=cwd or tmp_path,
            env=server_env() if env is None else dict(env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        self.client = httpx.Client(
            base_url=self.url, timeout=client_timeout, headers=headers, trust_env=trust_env
        )
        try:
            self.wait_healthy(up_timeout)
        except BaseException:
            self.stop()
            raise

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the server exited ({self.proc.returncode}):\n{self.log_tail()}"
                )
            try:
                health = httpx.get(f"{self.url}/health", timeout=5, trust_env=self.trust_env)
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the server did not answer /health within {timeout} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def batch(self, batch_id: str) -> dict[str, Any]:
        """``GET /batches/ID``, which must answer 200."""
        r = self.client.get(f"/batches/{batch_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def outputs(self, batch_id: str, *, wait: bool = True) -> list[dict[str, Any]]:
        """The records of ``GET /batches/ID/outputs`` (``wait``: once the batch has ended)."""
        r = self.client.get(f"/batches/{batch_id}/outputs", params={"wait": str(wait).lower()})
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.text.splitlines()]

    def log_text(self) -> str:
        """Everything the server has written so far."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_after_banner(self) -> str:
        """The log without ``serve``'s start-up banner (where it listens, the store,
        the token, the executor, the config)."""
        banner = (
            "pocketbatch serve: listening on ",
            "  store:",
            "  token:",
            "  executor:",
            "  config:",
        )
        kept = [
            line
            for line in self.log_text().splitlines(keepends=True)
            if not line.startswith(banner)
        ]
        return "".join(kept)

    def log_tail(self, size: int = 4000) -> str:
        return self.log_text()[-size:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within 15 s; closes the client and log."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if not self.log.closed:
            self.log.close()


class FakeTime:
    """A clock that only the fake ``sleep`` moves; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
        await asyncio.sleep(0)
