"""Benchmark of ``pocketbatch serve``: a batch submitted over HTTP against ``run-batch``.

Usage: ``python benchmarks/server.py [--scale S]`` (from the repository root or
anywhere). One invocation:

1. starts ``pocketbatch serve`` in a subprocess (127.0.0.1, a free port, a database
   in a temporary directory, ``--config batch_data/pocketbatch.yaml`` so that the
   flow's ``/bench/...`` components resolve) and waits for ``/api/v1/health``;
2. submits a 10,000-item batch of the 3-step trivial flow (``batch_data/pipeline.yaml``,
   its text as ``flow``, the inputs as ``inputs_jsonl``, ``max_concurrent`` 64) and
   reads its outputs with ``GET .../outputs?wait=true``: the time from submitting to
   the last output record received (the server's start-up is not counted);
3. runs ``pocketbatch run-batch`` on the same flow and inputs (``--max-concurrent
   64``) as a subprocess: its wall time, interpreter start-up included (also
   reported: the time of a 1-line ``run-batch``, its fixed cost).

Both are checked (one ``success`` record per input, in input order) and the best of
``--repeats`` is reported: items/s for both and the ratio server time / run-batch
time. No target is set: the figures are reported and the exit status is 0 unless a
run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
DATA = HERE / "batch_data"
PIPELINE = DATA / "pipeline.yaml"
CONFIG = DATA / "pocketbatch.yaml"
CONCURRENCY = 64


def write_inputs(path: Path, lines: int) -> Path:
    """``lines`` small JSON objects, one per line (as ``benchmarks/batch.py`` makes)."""
    with open(path, "w", encoding="ascii") as out:
        out.write(
            "".join(
                f'{{"id":{i},"name":"i{i}","qty":{i % 9 + 1},"price":{i % 50}.5}}\n'
                for i in range(lines)
            )
        )
    return path


def _check(records: list[bytes], lines: int, what: str) -> None:
    if len(records) != lines:
        raise SystemExit(f"{what}: {len(records)} records, expected {lines}")
    for position, raw in enumerate(records):
        record = json.loads(raw)
        if record.get("index") != position or record.get("outcome") != "success":
            raise SystemExit(f"{what}: record {position} is {raw[:300]!r}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``pocketbatch serve`` in a subprocess, for the ``with`` block."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "server.log"

    def __enter__(self) -> Server:
        env = {k: v for k, v in os.environ.items() if k != "POCKETBATCH_TOKEN"}
        command = [sys.executable, "-m", "pocketbatch", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--db", str(self.tmp / "bench.db")]
        command += ["--config", str(CONFIG), "--max-concurrent", str(CONCURRENCY)]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            command,
            cwd=self.tmp,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited {self.proc.returncode}: {self._tail()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not come up: {self._tail()}")
            time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def _tail(self) -> str:
        return self.log_path.read_bytes()[-3000:].decode(errors="replace")


def time_server(url: str, flow_text: str, inputs_text: str, lines: int) -> float:
    """Submit the batch and receive every output record: wall seconds."""
    body = {"flow": flow_text, "inputs_jsonl": inputs_text, "max_concurrent": CONCURRENCY}
    with httpx.Client(base_url=f"{url}/api/v1", timeout=600) as client:
        start = time.perf_counter()
        submitted = client.post("/batches", json=body)
        if submitted.status_code != 201:
            raise SystemExit(f"submit: {submitted.status_code} {submitted.text[:1000]}")
        batch = submitted.json()["batch_id"]
        with client.stream("GET", f"/batches/{batch}/outputs", params={"wait": "true"}) as out:
            if out.status_code != 200:
                raise SystemExit(f"outputs: {out.status_code} {out.read()[:1000]!r}")
            records = [line.encode() for line in out.iter_lines() if line]
        wall = time.perf_counter() - start
    _check(records, lines, f"server batch {batch}")
    return wall


def time_run_batch(inputs: Path, output: Path, lines: int) -> float:
    """``pocketbatch run-batch`` on the same flow and inputs: wall seconds."""
    command = [sys.executable, "-m", "pocketbatch", "run-batch", "--flow", str(PIPELINE)]
    command += ["--inputs", str(inputs), "--output", str(output), "--no-progress"]
    command += ["--max-concurrent", str(CONCURRENCY)]
    start = time.perf_counter()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run-batch exited {done.returncode}: {done.stderr[-2000:]}")
    _check(output.read_bytes().splitlines(), lines, "run-batch")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the batch size by this (default 1)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args(argv)
    lines = max(100, int(10_000 * args.scale))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, scale {args.scale}", flush=True)

    with tempfile.TemporaryDirectory(prefix="pocketbatch-bench-server-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = write_inputs(tmp / "inputs.jsonl", lines)
        one = write_inputs(tmp / "one.jsonl", 1)
        flow_text, inputs_text = PIPELINE.read_text(), inputs.read_text()
        walls: dict[str, list[float]] = {"server": [], "cli": [], "startup": []}
        with Server(tmp) as server:
            time_server(server.url, flow_text, inputs_text, lines)  # warm-up: flow cache
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                walls["server"].append(time_server(server.url, flow_text, inputs_text, lines))
                walls["cli"].append(time_run_batch(inputs, tmp / "out.jsonl", lines))
                walls["startup"].append(time_run_batch(one, tmp / "one-out.jsonl", 1))
        best = {name: min(values) for name, values in walls.items()}

    server, cli, startup = best["server"], best["cli"], best["startup"]
    print(
        f"server: {lines:,}-item batch of the 3-step flow, submit -> all outputs received "
        f"(--max-concurrent {CONCURRENCY}): {server:.2f} s, {lines / server:,.0f} items/s",
        flush=True,
    )
    print(
        f"run-batch, same flow and inputs: {cli:.2f} s, {lines / cli:,.0f} items/s "
        f"(of which the fixed cost of a 1-line run-batch, start-up included: {startup:.2f} s)",
        flush=True,
    )
    print(
        f"ratio server time / run-batch time: {server / cli:.2f} "
        f"(without run-batch's fixed cost: {server / max(cli - startup, 1e-9):.2f}) "
        f"(best of {args.repeats}; no target)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
