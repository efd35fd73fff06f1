"""No tracebacks, the right exit codes (issue 14), as real subprocesses: an
``--output`` in a missing folder, a closed stdout (``| head -1``), Ctrl-C (a real
SIGINT), ``serve``'s banner and a port in use, and the client commands with
Stepflow's batch-tracking script (``submit-batch ... --output=/dev/null | jq``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support import ServerProcess, run_cli, write_lines

DATA = Path(__file__).parent.parent / "cli_data"
GREET = DATA / "greet.yaml"
SLOW = (
    "steps:\n  - id: s\n    component: /builtin/sleep\n"
    "    input: {duration_ms: 30000}\noutput: {$step: s}\n"
)


def one_clean_line(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert stderr.count("\n") == 1, stderr


# ================================================================== --output in a missing folder


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["run-batch", "--flow", GREET, "--inputs", "-"], id="run-batch"),
        pytest.param(["run", "--flow", GREET, "--input-json", "{}"], id="run"),
        pytest.param(["visualize", GREET], id="visualize"),
    ],
)
def test_output_in_a_missing_folder_is_one_line_and_exit_2(
    tmp_path: Path, args: list[object]
) -> None:
    out = tmp_path / "no" / "such" / "out.jsonl"
    ran = run_cli(*args, "--output", out)
    assert (ran.returncode, ran.stdout) == (2, "")
    one_clean_line(ran.stderr)
    assert ran.stderr == f"pocketbatch: --output {out}: no such folder {str(out.parent)!r}\n"


# ================================================================== a closed stdout


def closed_stdout_run(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a stdout pipe whose reading end is already closed (what
    ``| head -1`` leaves once head has exited): every write fails with EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pocketbatch", *map(str, args)],
            stdout=write,
            stderr=subprocess.PIPE,
            input=stdin,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["run", "--flow", GREET, "--input-json", '{"name": "a"}'], id="run"),
        pytest.param(["validate", GREET], id="validate"),
        pytest.param(["visualize", GREET], id="visualize"),
        pytest.param(["test", GREET], id="test"),
        pytest.param(["list-components"], id="list-components"),
        pytest.param(
            ["run-batch", "--flow", GREET, "--inputs", "-", "--no-progress"], id="run-batch"
        ),
        pytest.param(["--help"], id="help"),
    ],
)
def test_closed_stdout_is_no_traceback(args: list[object]) -> None:
    ran = closed_stdout_run(*args, stdin='{"name": "a"}\n' * 50)
    assert "Traceback" not in ran.stderr, ran.stderr
    assert "Exception ignored" not in ran.stderr, ran.stderr
    assert ran.returncode == (0 if args == ["--help"] else 141), ran.stderr


# ================================================================== Ctrl-C


def read_stderr_until(proc: subprocess.Popen[str], text: str) -> str:
    """stderr lines up to the one holding ``text`` (the process must say it)."""
    assert proc.stderr is not None
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"the process ended before saying {text!r}:\n{seen}")
        seen += line
    return seen


def test_ctrl_c_of_run_batch_to_stdout_does_not_suggest_resume(tmp_path: Path) -> None:
    flow = tmp_path / "slow.yaml"
    flow.write_text(
        "steps:\n  - id: s\n    component: /builtin/sleep\n"
        "    input: {duration_ms: {$input: ms}}\noutput: {$step: s}\n",
        encoding="utf-8",
    )
    inputs = write_lines(tmp_path / "in.jsonl", [{"ms": 0}, {"ms": 60000}, {"ms": 60000}])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pocketbatch",
            "run-batch",
            "--flow",
            str(flow),
            "--inputs",
            str(inputs),
            "--max-concurrent",
            "1",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the loop runs: SIGINT is its handler's now
        proc.send_signal(signal.SIGINT)
        read_stderr_until(proc, "interrupted: finishing the items in flight")
        proc.send_signal(signal.SIGINT)  # again: cancel the item in flight
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert json.loads(first)["index"] == 0
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "rerun with --resume" not in err
    assert "stopped after 1 of 3 inputs (their records are on stdout)" in err
    assert "run again with --output FILE to be able to --resume" in err


def test_ctrl_c_during_a_single_run_is_one_line_and_130(tmp_path: Path) -> None:
    # The component says "ready" once the run is under way: a Ctrl-C before main()
    # had started (the old "ready" came from the -c script) is Python's own, -2.
    (tmp_path / "waiting.py").write_text(
        "import asyncio, sys\n\n\nasync def wait(data):\n"
        "    print('ready', file=sys.stderr, flush=True)\n"
        "    await asyncio.sleep(30)\n    return data\n",
        encoding="utf-8",
    )
    (tmp_path / "pocketbatch.yaml").write_text("routes:\n  /t: waiting\n", encoding="utf-8")
    flow = tmp_path / "slow.yaml"
    flow.write_text(SLOW.replace("/builtin/sleep", "/t/wait"), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pocketbatch", "run", "--flow", str(flow), "--input-json", "{}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        read_stderr_until(proc, "ready")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (130, "")
    assert err == "pocketbatch: interrupted\n"


# ================================================================== serve


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path, "--db", str(tmp_path / "store.db"))
    try:
        yield srv
    finally:
        srv.stop()


def test_serve_says_where_it_listens_and_how(server: ServerProcess, tmp_path: Path) -> None:
    log = server.log_text()
    assert f"listening on http://127.0.0.1:{server.port} (API: /api/v1)" in log
    assert f"store:    {tmp_path / 'store.db'}" in log
    assert "token:    not required" in log
    assert "executor: async, 64 items in flight" in log


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(
    server: ServerProcess, tmp_path: Path
) -> None:
    ran = run_cli("serve", "--port", str(server.port), "--db", tmp_path / "other.db")
    assert ran.returncode == 2
    one_clean_line(ran.stderr)
    assert f"cannot listen on 127.0.0.1:{server.port}: the port is in use" in ran.stderr


# ================================================================== client commands


def test_stepflows_batch_tracking_script(server: ServerProcess, tmp_path: Path) -> None:
    """``BATCH_ID=$(pocketbatch submit-batch ... --output=/dev/null | jq -r .batch_id)``."""
    inputs = write_lines(tmp_path / "in.jsonl", [{"name": "a"}])
    ran = run_cli(
        "submit-batch",
        f"--url={server.url}",
        f"--flow={GREET}",
        f"--inputs={inputs}",
        "--output=/dev/null",
    )
    assert ran.returncode == 0, ran.stderr
    batch_id = json.loads(ran.stdout)["batch_id"]
    got = run_cli(
        "get-batch", f"--url={server.url}", f"--batch-id={batch_id}", "--wait", "--no-progress"
    )
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["result"]["name"] == "a"


@pytest.mark.parametrize(
    ("batch_id", "message"),
    [
        ("", "pocketbatch: --batch-id is empty: give the id submit-batch printed"),
        ("nope", "pocketbatch: server error: HTTP 404: no batch 'nope'"),
        ("a/b", "pocketbatch: server error: HTTP 404"),
    ],
)
def test_get_batch_with_an_empty_or_unknown_id_is_one_line_and_exit_2(
    server: ServerProcess, batch_id: str, message: str
) -> None:
    ran = run_cli("get-batch", f"--url={server.url}", f"--batch-id={batch_id}")
    assert (ran.returncode, ran.stdout) == (2, "")
    one_clean_line(ran.stderr)
    assert ran.stderr.startswith(message), ran.stderr


def test_submit_is_submit_batch_wait(server: ServerProcess, tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"name": "a"}, {"name": "b"}])
    out = tmp_path / "out.jsonl"
    ran = run_cli(
        "submit",
        "--url",
        server.url,
        "--flow",
        GREET,
        "--inputs",
        inputs,
        "--max-concurrency",
        "2",
        "--output",
        out,
        "--no-progress",
    )
    assert (ran.returncode, ran.stdout) == (0, ""), ran.stderr
    names = [json.loads(line)["result"]["name"] for line in out.read_text().splitlines()]
    assert names == ["a", "b"]


def test_submit_batch_reads_inputs_from_a_pipe(server: ServerProcess) -> None:
    ran = run_cli(
        "submit-batch",
        "--url",
        server.url,
        "--flow",
        GREET,
        "--inputs",
        "-",
        "--wait",
        "--no-progress",
        input='{"name": "p"}\n',
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["result"]["name"] == "p"


def test_ctrl_c_during_submit_batch_wait(server: ServerProcess, tmp_path: Path) -> None:
    flow = tmp_path / "slow.yaml"
    flow.write_text(SLOW, encoding="utf-8")
    inputs = write_lines(tmp_path / "in.jsonl", [{}])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pocketbatch",
            "submit-batch",
            "--url",
            server.url,
            "--flow",
            str(flow),
            "--inputs",
            str(inputs),
            "--wait",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        said = read_stderr_until(proc, "submitted")
        batch_id = said.split("batch ", 1)[1].split()[0]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (130, "")
    assert "Traceback" not in err
    assert "--resume" not in err
    assert f"batch {batch_id} goes on running on the server" in err
    server.client.post(f"/batches/{batch_id}/cancel")


def test_list_batches_into_a_closed_pipe(server: ServerProcess) -> None:
    ran = closed_stdout_run("list-batches", "--url", server.url)
    assert "Traceback" not in ran.stderr, ran.stderr
    assert "Exception ignored" not in ran.stderr, ran.stderr
    assert ran.returncode == 141
