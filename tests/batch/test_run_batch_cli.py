"""``pocketbatch run-batch`` end to end, as real subprocesses (``python -m pocketbatch``).

The contract (DESIGN.md §3, issue 4): one output line per input, in input order,
``{"index", "outcome", "result" | "error"}``, on stdout without ``--output``; a bad
input line fails only its own record, naming its line number; exit 0 when all
succeeded, 1 when some failed, 2 for usage and load errors (with ``file:line:column``),
130 when interrupted; after a SIGKILL or Ctrl-C, ``--resume`` completes the output
with every input exactly once (repairing a torn last line); Ctrl-C once finishes the
items in flight, twice cancels them; progress and a summary go to stderr.

Flows and the component module are in ``tests/batch/data``. ``/batchtest/gated`` holds
every item from ``PB_GATE_FROM`` on until the file ``PB_GATE_FILE`` exists, which makes
"kill it after exactly K records" deterministic. Every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support import line_count, records, run_cli, wait_until, write_lines

DATA = Path(__file__).parent / "data"
CHECK = DATA / "check.yaml"  # input_schema {n: integer}; {"fail": true} raises
GATED = DATA / "gated.yaml"
SLEEP = DATA / "sleep.yaml"
NOOP = DATA / "noop.yaml"
CPU = DATA / "cpu.yaml"
TIMEOUT = 120
SUMMARY = re.compile(
    r"^pocketbatch: total (\d+), succeeded (\d+), failed (\d+), wall [\d.]+ s, [\d.]+ items/s$"
)


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def summary(self) -> tuple[int, int, int]:
        """(total, succeeded, failed) from the summary line on stderr."""
        found = [SUMMARY.match(line) for line in self.err.splitlines()]
        matches = [m for m in found if m]
        assert len(matches) == 1, self.err
        total, ok, failed = matches[0].groups()
        return int(total), int(ok), int(failed)


def cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    proc = run_cli(*args, cwd=cwd, env=env, timeout=TIMEOUT)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def batch(
    flow: Path, inputs: Path, *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> Ran:
    """``pocketbatch run-batch --flow FLOW --inputs INPUTS ARGS...``, to its end."""
    return cli("run-batch", "--flow", flow, "--inputs", inputs, *args, cwd=cwd, env=env)


def start(
    flow: Path,
    inputs: Path,
    *args: str | Path,
    cwd: Path,
    stderr: Path,
    env: dict[str, str] | None = None,
    group: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``run-batch --flow FLOW --inputs INPUTS ARGS...`` in the background, its
    stderr going to the file ``stderr`` (``group``: in a process group of its own, as a
    terminal's foreground job is)."""
    command = ["run-batch", "--flow", flow, "--inputs", inputs, *args]
    with open(stderr, "wb") as err:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "pocketbatch", *map(str, command)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **(env or {})},
            start_new_session=group,
        )


def finish(proc: subprocess.Popen[Any]) -> int:
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        raise


@pytest.fixture
def reap() -> Any:
    """Processes (and process groups) to SIGKILL if a test leaves them running."""
    procs: list[tuple[subprocess.Popen[Any], bool]] = []
    yield lambda proc, group=False: procs.append((proc, group)) or proc
    for proc, group in procs:
        if proc.poll() is None:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait(timeout=TIMEOUT)


def assert_complete(out: Path, n: int, expected: Callable[[int], Any]) -> None:
    """Every index 0..n-1 exactly once, in order, each with its right result."""
    got = records(out)
    assert [r["index"] for r in got] == list(range(n))
    for r in got:
        assert r["outcome"] == "success", r
        assert r["result"] == expected(r["index"]), r


def assert_prefix(out: Path) -> int:
    """The output is a clean prefix: indexes 0..k-1, no torn line. Returns k."""
    got = records(out)
    assert [r["index"] for r in got] == list(range(len(got)))
    return len(got)


def square(i: int) -> dict[str, int]:
    return {"i": i, "square": i * i}


# -- output, order, exit codes --------------------------------------------------------------


def test_one_line_per_input_in_order_exit_0(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(25)))
    out = tmp_path / "out.jsonl"
    ran = batch(CHECK, inputs, "--output", out, "--max-concurrent", "4", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert ran.out == ""
    assert records(out) == [{"index": i, "outcome": "success", "result": 2 * i} for i in range(25)]
    assert ran.summary() == (25, 25, 0)


def test_some_failed_exit_1_and_records_say_why(tmp_path: Path) -> None:
    items = [{"n": n, "fail": n in (3, 8)} for n in range(10)]
    inputs = write_lines(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    ran = batch(CHECK, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 1, ran.err
    got = records(out)
    assert [r["index"] for r in got] == list(range(10))
    for r in got:
        if r["index"] in (3, 8):
            # (issue 14: a failed record names its input line; no blank lines here)
            assert set(r) == {"index", "line", "outcome", "error"}
            assert r["line"] == r["index"] + 1
            assert r["outcome"] == "failed"
            assert r["error"]["code"] == "COMPONENT_FAILED"
            assert f"item {r['index']} asked to fail" in r["error"]["message"]
        else:
            assert r == {"index": r["index"], "outcome": "success", "result": 2 * r["index"]}
    assert ran.summary() == (10, 8, 2)


def test_stdout_when_no_output(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}, {"n": 2, "fail": True}, {"n": 3}])
    ran = batch(CHECK, inputs, cwd=tmp_path)
    assert ran.code == 1
    lines = ran.out.splitlines()
    assert ran.out.endswith("\n")
    got = [json.loads(line) for line in lines]
    assert [r["index"] for r in got] == [0, 1, 2]
    assert [r["outcome"] for r in got] == ["success", "failed", "success"]
    assert "pocketbatch:" not in ran.out  # diagnostics stay on stderr
    assert ran.summary() == (3, 2, 1)


def test_empty_inputs(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ["", "  "])
    out = tmp_path / "out.jsonl"
    ran = batch(CHECK, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert out.read_text() == ""
    assert ran.summary() == (0, 0, 0)


def test_an_existing_output_is_replaced_without_resume(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 5}])
    out = write_lines(tmp_path / "out.jsonl", [{"index": 0, "outcome": "success", "result": 0}] * 3)
    ran = batch(CHECK, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert records(out) == [{"index": 0, "outcome": "success", "result": 10}]


def test_var_and_config(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(4)))
    ran = batch(SLEEP, inputs, "--var", "duration_ms=1", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert [json.loads(x)["result"] for x in ran.out.splitlines()] == [0, 1, 2, 3]
    # a flow away from its pocketbatch.yaml loads only with --config
    flow = tmp_path / "check.yaml"
    flow.write_text(CHECK.read_text())
    inputs = write_lines(tmp_path / "n.jsonl", [{"n": 4}])
    alone = batch(flow, inputs, cwd=tmp_path)
    assert alone.code == 2
    configured = batch(flow, inputs, "--config", DATA / "pocketbatch.yaml", cwd=tmp_path)
    assert configured.code == 0, configured.err
    assert json.loads(configured.out) == {"index": 0, "outcome": "success", "result": 8}


def test_stdout_closed_early_stops_without_a_traceback(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(5000)))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pocketbatch",
            "run-batch",
            "--flow",
            str(NOOP),
            "--inputs",
            str(inputs),
            "--no-progress",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()  # like `head -1`: read one line, then hang up
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        proc.stderr.close()  # type: ignore[union-attr]
    assert json.loads(first)["index"] == 0
    assert "Traceback" not in err, err


# -- bad input lines ------------------------------------------------------------------------


def test_bad_lines_fail_their_own_record_naming_the_line(tmp_path: Path) -> None:
    inputs = write_lines(
        tmp_path / "in.jsonl",
        [
            '{"n": 1}',  # line 1 -> index 0
            "",  # line 2: blank, no record
            "{not json",  # line 3 -> index 1
            "[1, 2, 3]",  # line 4 -> index 2
            '{"n": "seven"}',  # line 5 -> index 3: fails input_schema
            "{}",  # line 6 -> index 4: fails input_schema
            '"just a string"',  # line 7 -> index 5
            '{"n": 2, "fail": true}',  # line 8 -> index 6: the component raises
            '{"n": 3}',  # line 9 -> index 7
        ],
    )
    out = tmp_path / "out.jsonl"
    ran = batch(CHECK, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 1
    got = records(out)
    assert [r["index"] for r in got] == list(range(8))
    assert got[0] == {"index": 0, "outcome": "success", "result": 2}
    assert got[7] == {"index": 7, "outcome": "success", "result": 6}
    expected = {
        1: ("INVALID_JSON", 3),
        2: ("INVALID_INPUT", 4),
        3: ("INVALID_INPUT", 5),
        4: ("INVALID_INPUT", 6),
        5: ("INVALID_INPUT", 7),
    }
    for index, (code, line) in expected.items():
        record = got[index]
        assert record["outcome"] == "failed", record
        assert record["error"]["code"] == code, record
        assert record["error"]["message"].startswith(f"line {line}:"), record
    assert "array" in got[2]["error"]["message"]
    assert "n" in got[3]["error"]["message"]
    assert got[6]["error"]["code"] == "COMPONENT_FAILED"
    assert ran.summary() == (8, 2, 6)


def test_every_failed_record_names_its_input_line(tmp_path: Path) -> None:
    """Issue 14: component failures, input-schema failures, bad lines and results JSON
    cannot hold all name their line (top-level ``line``: 1-based, blank lines counted),
    while ``index`` counts the non-blank lines from 0. Successes carry no ``line``."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "input_schema: {type: object, required: [n]}\n"
        "steps:\n"
        "  - id: work\n"
        "    component: /batchtest/check\n"
        "    input: {$input: $}\n"
        "output: {$step: work, path: n}\n",
        encoding="utf-8",
    )
    (tmp_path / "pocketbatch.yaml").write_text(
        "routes: {/batchtest: {module: pb_batch_test_components}}\n", encoding="utf-8"
    )
    shutil.copy(DATA / "pb_batch_test_components.py", tmp_path)
    inputs = write_lines(
        tmp_path / "in.jsonl",
        [
            "",  # line 1: blank
            '{"n": 1}',  # line 2 -> index 0: succeeds
            "",  # line 3: blank
            "   ",  # line 4: blank
            '{"n": 2, "fail": true}',  # line 5 -> index 1: the component raises
            "{}",  # line 6 -> index 2: fails the input schema
            "{oops",  # line 7 -> index 3: not JSON
            '{"n": 3}',  # line 8 -> index 4: succeeds
        ],
    )
    out = tmp_path / "out.jsonl"
    ran = batch(flow, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 1, ran.err
    got = records(out)
    assert got[0] == {"index": 0, "outcome": "success", "result": 2}
    assert got[4] == {"index": 4, "outcome": "success", "result": 6}
    failed = {r["index"]: (r["line"], r["error"]["code"]) for r in got if r["outcome"] == "failed"}
    assert failed == {
        1: (5, "COMPONENT_FAILED"),
        2: (6, "INVALID_INPUT"),
        3: (7, "INVALID_JSON"),
    }
    # The record's keys, in order: index, line, outcome, error.
    assert list(got[1]) == ["index", "line", "outcome", "error"]
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith('{"index":1,"line":5,')


def test_a_result_json_cannot_hold_names_its_line(tmp_path: Path) -> None:
    """An INVALID_OUTPUT record (NaN in the result) names its line too."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "steps:\n"
        "  - id: f\n"
        "    component: /python/pb_nan_component.to_float\n"
        "    input: {$input: x}\n"
        "output: {$step: f}\n",
        encoding="utf-8",
    )
    inputs = tmp_path / "in.jsonl"
    (tmp_path / "pb_nan_component.py").write_text(
        "def to_float(text):\n    return float(text)\n", encoding="utf-8"
    )
    inputs.write_bytes(b'{"x": "1.5"}\n\n{"x": "nan"}\n')
    out = tmp_path / "out.jsonl"
    ran = batch(flow, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 1, ran.err
    got = records(out)
    assert got[0] == {"index": 0, "outcome": "success", "result": 1.5}
    assert got[1]["error"]["code"] == "INVALID_OUTPUT"
    assert (got[1]["index"], got[1]["line"]) == (1, 3), got


def test_a_bom_at_the_start_of_the_inputs_is_accepted(tmp_path: Path) -> None:
    """Issue 14: a UTF-8 BOM (as Windows editors write) used to fail line 1."""
    flow = tmp_path / "flow.yaml"
    flow.write_text("output: {$input: x}\n", encoding="utf-8")
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b'\xef\xbb\xbf{"x": 1}\r\n{"x": 2}\r\n')
    ran = batch(flow, inputs, cwd=tmp_path)
    assert ran.code == 0, ran.out + ran.err
    assert [json.loads(x) for x in ran.out.splitlines()] == [
        {"index": 0, "outcome": "success", "result": 1},
        {"index": 1, "outcome": "success", "result": 2},
    ]


def test_a_result_nested_too_deep_to_write_fails_its_record_only(tmp_path: Path) -> None:
    """An input orjson reads (1000 levels), echoed back, used to stop the batch with a
    RecursionError. Now the line fails alone: with INVALID_INPUT, since inputs may nest
    at most 100 levels (a result too deep to write is INVALID_OUTPUT: see
    tests/batch/test_deep_values.py); the batch goes on."""
    flow = tmp_path / "echo.yaml"
    flow.write_text("output: {$input: d}\n")
    inputs = tmp_path / "in.jsonl"
    deep = b"[" * 1000 + b"]" * 1000
    inputs.write_bytes(b'{"d": 1}\n{"d": ' + deep + b'}\n{"d": 3}\n')
    out = tmp_path / "out.jsonl"
    ran = batch(flow, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 1, ran.err
    assert "Traceback" not in ran.err
    got = records(out)
    assert got[0] == {"index": 0, "outcome": "success", "result": 1}
    assert got[1]["outcome"] == "failed"
    assert got[1]["error"]["code"] == "INVALID_INPUT"
    assert got[2] == {"index": 2, "outcome": "success", "result": 3}
    assert ran.summary() == (3, 2, 1)


def test_bad_lines_on_the_process_executor(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ['{"n": 1}', "nope", '{"n": "x"}', '{"n": 2}'])
    out = tmp_path / "out.jsonl"
    ran = batch(
        CHECK, inputs, "--output", out, "--executor", "process", "--workers", "1", cwd=tmp_path
    )
    assert ran.code == 1, ran.err
    got = records(out)
    assert [r["outcome"] for r in got] == ["success", "failed", "failed", "success"]
    assert got[1]["error"]["message"].startswith("line 2:")
    assert got[2]["error"]["code"] == "INVALID_INPUT"
    assert got[2]["error"]["message"].startswith("line 3:")


# -- usage and load errors: exit 2 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inputs", "missing.jsonl"], "missing.jsonl"),
        (["--inputs", "in.jsonl", "--resume"], "--resume"),
        (["--inputs", "in.jsonl", "--max-concurrent", "0"], "max-concurrent"),
        (["--inputs", "in.jsonl", "--max-concurrent", "-3"], "max-concurrent"),
        (["--inputs", "in.jsonl", "--max-concurrent", "many"], "max-concurrent"),
        (["--inputs", "in.jsonl", "--executor", "fiber"], "executor"),
        (["--inputs", "in.jsonl", "--executor", "process", "--workers", "0"], "workers"),
        (["--inputs", "in.jsonl", "--output", "in.jsonl"], "--output"),
        (["--inputs", "in.jsonl", "--var", "novalue"], "--var"),
        ([], "--inputs"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    ran = cli("run-batch", "--flow", CHECK, *args, cwd=tmp_path)
    assert ran.code == 2, (ran.code, ran.err)
    assert message in ran.err
    assert ran.out == ""
    assert (tmp_path / "in.jsonl").read_text() == '{"n": 1}\n'


def test_missing_flow_argument_exit_2(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    ran = cli("run-batch", "--inputs", "in.jsonl", cwd=tmp_path)
    assert ran.code == 2
    assert "--flow" in ran.err


@pytest.mark.parametrize(
    ("flow_text", "name"),
    [
        ("steps:\n  - id: a\n    component: /no/such/thing\noutput: {$step: a}\n", "unknown"),
        ("steps: [\n  oops\n", "syntax"),
        ("output: {$step: missing}\n", "reference"),
    ],
)
def test_load_errors_exit_2_with_file_line_column(
    tmp_path: Path, flow_text: str, name: str
) -> None:
    flow = tmp_path / f"{name}.yaml"
    flow.write_text(flow_text)
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    out = write_lines(tmp_path / "out.jsonl", ["precious"])
    ran = batch(flow, inputs, "--output", out, cwd=tmp_path)
    assert ran.code == 2, ran.err
    assert re.search(rf"{name}\.yaml:\d+:\d+: ", ran.err), ran.err
    assert out.read_text() == "precious\n"  # a flow that does not load touches no output


def test_load_error_of_a_routed_component(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    ran = batch(DATA / "bad_component.yaml", inputs, cwd=tmp_path)
    assert ran.code == 2
    assert re.search(r"bad_component\.yaml:\d+:\d+: .*no_such_function", ran.err), ran.err


def test_missing_flow_file_exit_2(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    ran = batch("nowhere.yaml", inputs, cwd=tmp_path)
    assert ran.code == 2
    assert "nowhere.yaml" in ran.err


def test_resume_of_a_file_that_is_not_this_batchs_output_exit_2(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(5)))
    content = '{"index": 0, "outcome": "success"}\n{"index": 2, "outcome": "success"}\n'
    out = tmp_path / "out.jsonl"
    out.write_text(content)
    ran = batch(CHECK, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 2
    assert "out.jsonl" in ran.err
    assert out.read_text() == content


def test_resume_with_more_records_than_inputs_is_refused(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}])
    out = write_lines(
        tmp_path / "out.jsonl",
        ({"index": i, "outcome": "success", "result": 2} for i in range(3)),
    )
    ran = batch(CHECK, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 2, ran.err


# -- resume ---------------------------------------------------------------------------------


def test_resume_without_an_output_yet_runs_everything(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(6)))
    out = tmp_path / "out.jsonl"
    ran = batch(CHECK, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert [r["result"] for r in records(out)] == [0, 2, 4, 6, 8, 10]


def test_resume_of_a_complete_output_changes_nothing(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(6)))
    out = tmp_path / "out.jsonl"
    first = batch(CHECK, inputs, "--output", out, cwd=tmp_path)
    assert first.code == 0
    before = out.read_bytes()
    again = batch(CHECK, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert again.code == 0, again.err
    assert out.read_bytes() == before
    assert "resuming: 6 of 6" in again.err


def test_resume_continues_after_the_last_record_and_repairs_a_torn_line(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(10)))
    out = tmp_path / "out.jsonl"
    done = [{"index": i, "outcome": "success", "result": 2 * i} for i in range(4)]
    out.write_text("".join(json.dumps(r) + "\n" for r in done) + '{"index": 4, "outco')
    ran = batch(CHECK, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert "resuming: 4 of 10" in ran.err
    assert [(r["index"], r["result"]) for r in records(out)] == [(i, 2 * i) for i in range(10)]
    assert ran.summary()[0] == 6  # only the rest ran


def test_resume_exit_code_counts_failures_already_in_the_output(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}, {"n": 2, "fail": True}, {"n": 3}])
    out = tmp_path / "out.jsonl"
    first = batch(CHECK, inputs, "--output", out, cwd=tmp_path)
    assert first.code == 1
    out.write_text("".join(out.read_text().splitlines(keepends=True)[:2]))  # lose the last
    ran = batch(CHECK, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert [r["outcome"] for r in records(out)] == ["success", "failed", "success"]
    assert ran.code == 1  # the batch has a failed item


# -- SIGKILL + resume -----------------------------------------------------------------------


N_KILL = 400


@pytest.mark.parametrize(("kill_at", "torn"), [(50, False), (50, True), (237, True), (399, False)])
def test_sigkill_then_resume_exactly_once_gated(
    tmp_path: Path, reap: Any, kill_at: int, torn: bool
) -> None:
    """Items from ``kill_at`` on are held, so the output stops at exactly ``kill_at``
    records; SIGKILL there (plus, optionally, a torn line as if cut mid-write)."""
    inputs = write_lines(
        tmp_path / "in.jsonl", ({"i": i, "sleep_ms": i % 3} for i in range(N_KILL))
    )
    out = tmp_path / "out.jsonl"
    gate = {"PB_GATE_FILE": str(tmp_path / "gate"), "PB_GATE_FROM": str(kill_at)}
    proc = reap(
        start(
            GATED,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "8",
            cwd=tmp_path,
            stderr=tmp_path / "err1",
            env=gate,
        )
    )
    wait_until(lambda: line_count(out) >= kill_at, proc, f"{kill_at} records")
    proc.kill()
    assert finish(proc) == -signal.SIGKILL
    assert assert_prefix(out) == kill_at
    if torn:
        with open(out, "ab") as f:
            f.write(b'{"index": %d, "outcome": "succ' % kill_at)

    ran = batch(GATED, inputs, "--output", out, "--resume", "--max-concurrent", "8", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert f"resuming: {kill_at} of {N_KILL}" in ran.err
    assert ran.summary() == (N_KILL - kill_at, N_KILL - kill_at, 0)
    assert_complete(out, N_KILL, square)


@pytest.mark.parametrize(("kill_at", "torn"), [(50, False), (150, True)])
def test_sigkill_mid_batch_then_resume_exactly_once(
    tmp_path: Path, reap: Any, kill_at: int, torn: bool
) -> None:
    """A real kill while items are being written (/builtin/sleep, 25 ms per item)."""
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(N_KILL)))
    out = tmp_path / "out.jsonl"
    proc = reap(
        start(
            SLEEP,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "8",
            "--var",
            "duration_ms=25",
            cwd=tmp_path,
            stderr=tmp_path / "err1",
        )
    )
    wait_until(lambda: line_count(out) >= kill_at, proc, f"{kill_at} records")
    proc.kill()
    assert finish(proc) == -signal.SIGKILL  # killed, not finished
    content = out.read_bytes()
    done = content.count(b"\n")
    assert kill_at <= done < N_KILL
    if torn and content.endswith(b"\n"):
        with open(out, "ab") as f:
            f.write(b'{"index": %d, "out' % done)

    ran = batch(
        SLEEP,
        inputs,
        "--output",
        out,
        "--resume",
        "--max-concurrent",
        "8",
        "--var",
        "duration_ms=1",
        cwd=tmp_path,
    )
    assert ran.code == 0, ran.err
    assert f"resuming: {done} of {N_KILL}" in ran.err
    assert_complete(out, N_KILL, lambda i: i)


def test_sigkill_twice_then_resume(tmp_path: Path, reap: Any) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(300)))
    out = tmp_path / "out.jsonl"
    for kill_at in (40, 160):
        gate = {"PB_GATE_FILE": str(tmp_path / "gate"), "PB_GATE_FROM": str(kill_at)}
        args: list[str | Path] = ["--output", out, "--max-concurrent", "8"]
        if kill_at != 40:
            args.append("--resume")
        proc = reap(start(GATED, inputs, *args, cwd=tmp_path, stderr=tmp_path / "err", env=gate))
        wait_until(lambda k=kill_at: line_count(out) >= k, proc, f"{kill_at} records")
        proc.kill()
        finish(proc)
        assert assert_prefix(out) == kill_at
    ran = batch(GATED, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert_complete(out, 300, square)


# -- Ctrl-C ---------------------------------------------------------------------------------


def test_ctrl_c_once_finishes_in_flight_exits_130_then_resume(tmp_path: Path, reap: Any) -> None:
    hold = 100
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(N_KILL)))
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err"
    gate_file = tmp_path / "gate"
    gate = {"PB_GATE_FILE": str(gate_file), "PB_GATE_FROM": str(hold)}
    proc = reap(
        start(
            GATED,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "8",
            cwd=tmp_path,
            stderr=err,
            env=gate,
        )
    )
    wait_until(lambda: line_count(out) >= hold, proc, f"{hold} records")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: b"interrupted" in err.read_bytes(), proc, "the interrupt message")
    gate_file.touch()  # let the items in flight finish
    assert finish(proc) == 130
    done = assert_prefix(out)
    # the items in flight finished and were written; nothing new was started
    assert hold + 1 <= done <= hold + 4 * 8
    assert all(r["outcome"] == "success" for r in records(out))
    text = err.read_text()
    assert "--resume" in text
    assert f"stopped after {done} of {N_KILL}" in text

    ran = batch(GATED, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert ran.summary()[0] == N_KILL - done
    assert_complete(out, N_KILL, square)


def test_ctrl_c_twice_cancels_in_flight_exits_130_quickly(tmp_path: Path, reap: Any) -> None:
    """The held items never finish by themselves: only a working second Ctrl-C ends
    the run (else the wait times out)."""
    hold = 60
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(N_KILL)))
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err"
    gate = {"PB_GATE_FILE": str(tmp_path / "gate"), "PB_GATE_FROM": str(hold)}
    proc = reap(
        start(
            GATED,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "8",
            cwd=tmp_path,
            stderr=err,
            env=gate,
        )
    )
    wait_until(lambda: line_count(out) >= hold, proc, f"{hold} records")
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: b"interrupted" in err.read_bytes(), proc, "the interrupt message")
    proc.send_signal(signal.SIGINT)
    assert finish(proc) == 130
    assert assert_prefix(out) == hold
    assert "--resume" in err.read_text()
    assert "Traceback" not in err.read_text()

    ran = batch(GATED, inputs, "--output", out, "--resume", cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert_complete(out, N_KILL, square)


def test_ctrl_c_to_the_process_group_with_the_process_executor(tmp_path: Path, reap: Any) -> None:
    """A terminal's Ctrl-C reaches the worker processes too; the run still stops with
    130 and a clean, resumable prefix."""
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i, "n": 200_000} for i in range(200)))
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err"
    proc = reap(
        start(
            CPU,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "4",
            "--executor",
            "process",
            "--workers",
            "2",
            "--no-progress",
            cwd=tmp_path,
            stderr=err,
            group=True,
        ),
        group=True,
    )
    wait_until(lambda: line_count(out) >= 10, proc, "10 records")
    os.killpg(proc.pid, signal.SIGINT)
    assert finish(proc) == 130
    done = assert_prefix(out)
    assert done < 200
    assert all(r["outcome"] == "success" for r in records(out))  # no WORKER_CRASHED
    ran = batch(
        CPU,
        inputs,
        "--output",
        out,
        "--resume",
        "--executor",
        "process",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert ran.code == 0, ran.err
    assert [r["index"] for r in records(out)] == list(range(200))


def test_ctrl_c_once_to_the_process_group_finishes_in_flight(tmp_path: Path, reap: Any) -> None:
    hold = 20
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(100)))
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err"
    gate_file = tmp_path / "gate"
    gate = {"PB_GATE_FILE": str(gate_file), "PB_GATE_FROM": str(hold)}
    proc = reap(
        start(
            GATED,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "4",
            "--executor",
            "process",
            "--workers",
            "2",
            "--no-progress",
            cwd=tmp_path,
            stderr=err,
            env=gate,
            group=True,
        ),
        group=True,
    )
    wait_until(lambda: line_count(out) >= hold, proc, f"{hold} records")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
    wait_until(lambda: b"interrupted" in err.read_bytes(), proc, "the interrupt message")
    gate_file.touch()
    assert finish(proc) == 130
    assert assert_prefix(out) > hold  # the items in flight were finished, not cancelled


def test_sigint_to_a_worker_alone_does_not_interrupt_the_batch(tmp_path: Path, reap: Any) -> None:
    hold = 10
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i} for i in range(40)))
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err"
    gate_file = tmp_path / "gate"
    gate = {"PB_GATE_FILE": str(gate_file), "PB_GATE_FROM": str(hold)}
    proc = reap(
        start(
            GATED,
            inputs,
            "--output",
            out,
            "--max-concurrent",
            "2",
            "--executor",
            "process",
            "--workers",
            "2",
            "--no-progress",
            cwd=tmp_path,
            stderr=err,
            env=gate,
            group=True,
        ),
        group=True,
    )
    wait_until(lambda: line_count(out) >= hold, proc, f"{hold} records")
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert children  # the pool's workers
    os.kill(int(children[0]), signal.SIGINT)
    gate_file.touch()  # the held items finish; the batch should just complete
    code = finish(proc)
    assert b"interrupted" not in err.read_bytes()
    assert code != 130


# -- executors through the CLI --------------------------------------------------------------


def test_process_executor_gives_the_same_output_as_async(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i, "n": 30_000 + i * 97} for i in range(40)))
    outputs = {}
    for executor in ("async", "process"):
        out = tmp_path / f"{executor}.jsonl"
        ran = batch(
            CPU,
            inputs,
            "--output",
            out,
            "--executor",
            executor,
            "--workers",
            "2",
            "--max-concurrent",
            "4",
            "--no-progress",
            cwd=tmp_path,
        )
        assert ran.code == 0, ran.err
        outputs[executor] = out.read_bytes()
    assert outputs["process"] == outputs["async"]
    assert len(outputs["async"].splitlines()) == 40


def test_process_executor_runs_elsewhere_through_the_cli(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i, "n": 1000} for i in range(12)))
    ran = batch(
        DATA / "cpu_pid.yaml", inputs, "--executor", "process", "--workers", "2", cwd=tmp_path
    )
    assert ran.code == 0, ran.err
    pids = {json.loads(line)["result"]["pid"] for line in ran.out.splitlines()}
    assert 1 <= len(pids) <= 2


def test_worker_crash_through_the_cli(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"i": i, "crash": i == 5} for i in range(12)))
    out = tmp_path / "out.jsonl"
    ran = batch(
        DATA / "crash.yaml",
        inputs,
        "--output",
        out,
        "--executor",
        "process",
        "--workers",
        "2",
        "--max-concurrent",
        "4",
        cwd=tmp_path,
    )
    assert ran.code == 1, ran.err
    got = records(out)
    assert [r["outcome"] for r in got] == ["failed" if i == 5 else "success" for i in range(12)]
    assert got[5]["error"]["code"] == "WORKER_CRASHED"


# -- a big batch ----------------------------------------------------------------------------


@pytest.mark.slow
def test_100_000_lines(tmp_path: Path) -> None:
    n = 100_000
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(f'{{"i":{i}}}\n' for i in range(n)))
    out = tmp_path / "out.jsonl"
    ran = batch(
        NOOP, inputs, "--output", out, "--max-concurrent", "64", "--no-progress", cwd=tmp_path
    )
    assert ran.code == 0, ran.err
    lines = out.read_bytes().splitlines()
    assert len(lines) == n
    for i, line in enumerate(lines):
        # the flow echoes its input; checking the bytes keeps this fast
        assert line == b'{"index":%d,"outcome":"success","result":{"i":%d}}' % (i, i), line
    assert ran.summary() == (n, n, 0)


# -- progress -------------------------------------------------------------------------------


def test_no_progress_leaves_only_the_summary(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(30)))
    ran = batch(CHECK, inputs, "--output", tmp_path / "o.jsonl", "--no-progress", cwd=tmp_path)
    assert ran.code == 0
    lines = ran.err.splitlines()
    assert len(lines) == 1, ran.err
    assert SUMMARY.match(lines[0]), ran.err


def test_progress_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", ({"n": n} for n in range(30)))
    ran = batch(CHECK, inputs, "--output", tmp_path / "o.jsonl", cwd=tmp_path)
    assert ran.code == 0
    assert "\r" not in ran.err  # no tqdm bar when stderr is a pipe
    assert ran.summary() == (30, 30, 0)
    for line in ran.err.splitlines():  # plain lines (every 5 s) and the summary only
        assert line.startswith("pocketbatch: "), ran.err


def test_a_flow_with_no_output_warns_once_and_runs_no_step(tmp_path: Path) -> None:
    """Issue 14: as in Stepflow, no output means no step runs (result null); say so."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "steps:\n  - id: boom\n    component: /batchtest/check\n    input: {fail: true}\n",
        encoding="utf-8",
    )
    shutil.copy(DATA / "pb_batch_test_components.py", tmp_path)
    (tmp_path / "pocketbatch.yaml").write_text(
        "routes: {/batchtest: pb_batch_test_components}\n", encoding="utf-8"
    )
    inputs = write_lines(tmp_path / "in.jsonl", [{"n": 1}, {"n": 2}])
    ran = batch(flow, inputs, cwd=tmp_path)
    assert ran.code == 0, ran.err
    assert [json.loads(x) for x in ran.out.splitlines()] == [
        {"index": 0, "outcome": "success", "result": None},
        {"index": 1, "outcome": "success", "result": None},
    ]
    warned = [x for x in ran.err.splitlines() if x.startswith("pocketbatch: warning: ")]
    assert warned == [
        f"pocketbatch: warning: {flow}:1:1: the flow has no 'output:', so none of its steps "
        "(boom) will run: as in Stepflow, only the steps the output needs run (and those "
        "with 'mustExecute: true'), and each input succeeds with the result null. Add an "
        "output, e.g. 'output: {$step: boom}'"
    ]
