"""Stepflow Python components (stepflow-py ``StepflowServer`` modules) run in-process,
routed from pocketbatch.yaml: msgspec inputs and outputs, the worker's error codes, a
``StepflowContext`` served by the run (attempt, blobs, sub-runs).

The components are ``tests/_stepflow_worker.py``'s, which the out-of-process (gRPC)
tests launch as a real worker: both paths must give the same records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support import records, run_cli, write_lines

from pocketbatch import LoadError, load_flow
from pocketbatch.loader._blobs import blob_id

pytest.importorskip("stepflow_py")

CONFIG = "routes:\n  /py: {module: _stepflow_worker}\n"
WORKER = Path(__file__).parent.parent / "_stepflow_worker.py"


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """A folder with the worker module and a pocketbatch.yaml routing /py to it."""
    (tmp_path / "pocketbatch.yaml").write_text(CONFIG, encoding="utf-8")
    shutil.copy(WORKER, tmp_path / WORKER.name)
    return tmp_path


def flow_file(here: Path, text: str, name: str = "flow.yaml") -> Path:
    path = here / name
    path.write_text(text, encoding="utf-8")
    return path


def one_step(here: Path, component: str, extra: str = "") -> Any:
    return load_flow(
        flow_file(
            here,
            f"steps:\n  - id: s\n    component: {component}\n    input: {{$input: $}}\n{extra}"
            "output: {$step: s}\n",
        )
    )


def test_input_becomes_the_struct_and_the_struct_output_json(here: Path) -> None:
    result = one_step(here, "/py/echo").run({"message": "ab", "repeat": 2})
    assert result.to_dict() == {
        "outcome": "success",
        "result": {"attempt": 1, "echo": "abab", "step_id": "s"},
    }


def test_a_bad_input_fails_as_the_worker_fails_it(here: Path) -> None:
    error = one_step(here, "/py/echo").run({"message": 5}).error
    assert error is not None
    assert error.to_dict() == {
        "code": "COMPONENT_FAILED",
        "message": "Expected `str`, got `int` - at `$.message`",
        "data": {"exception_type": "ValidationError"},
    }


@pytest.mark.parametrize(
    ("kind", "code", "message", "data"),
    [
        ("value", "COMPONENT_FAILED", "bad value", {"exception_type": "ValueError"}),
        ("type", "INVALID_INPUT", "bad type", {"exception_type": "TypeError"}),
        ("os", "RESOURCE_UNAVAILABLE", "disk gone", {"exception_type": "OSError"}),
        (
            "stepflow",
            "COMPONENT_FAILED",
            "it broke",
            {"exception_type": "StepflowExecutionError", "details": {"why": "asked"}},
        ),
    ],
)
def test_exceptions_fail_the_step_with_the_workers_codes(
    here: Path, kind: str, code: str, message: str, data: dict[str, Any]
) -> None:
    result = one_step(here, "/py/fail").run({"kind": kind})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {"code": code, "message": message, "data": data},
    }


def test_sync_component_and_whole_numbers_as_the_worker_sees_them(here: Path) -> None:
    # Over gRPC a number is a double: 2 arrives as 2, 4.0 leaves as 4.
    result = one_step(here, "/py/sync_double").run({"value": 2})
    assert result.result == {"result": 4}
    assert isinstance(result.result["result"], int)


def test_attempt_counts_the_retries(here: Path) -> None:
    flow = one_step(here, "/py/flaky", "    on_error: {action: retry, max_retries: 3, wait: 0}\n")
    assert flow.run({"succeed_on": 3}).result == {"attempt": 3}


def test_a_component_that_exits_its_worker_is_run_again_with_the_next_attempt(
    here: Path,
) -> None:
    # Stepflow restarts the worker and retries the task (tests/python/restart_functionality).
    assert one_step(here, "/py/crash").run({"succeed_on": 2}).result == {"attempt": 2}
    assert one_step(here, "/py/crash").run({"succeed_on": 4}).result == {"attempt": 4}


def test_a_component_that_always_exits_fails_unreachable_after_the_transport_retries(
    here: Path,
) -> None:
    error = one_step(here, "/py/crash").run({"succeed_on": 99}).error
    assert error is not None
    assert error.to_dict() == {
        "code": "UNREACHABLE",
        "message": "component '/py/crash' exited its worker (SystemExit: 1) on each of 4 attempts",
        "data": {"exception_type": "SystemExit"},
    }


def test_context_put_blob_gives_stepflows_id(here: Path) -> None:
    # Stepflow's own expected id (tests/python/blob_simple.yaml, case blobs_42): the
    # orchestrator keeps the object with its keys sorted.
    data = {
        "original_message": "Hello, blobs!",
        "number_squared": 1764,
        "processed_by": "python_udf",
    }
    result = one_step(here, "/py/blob_round_trip").run({"data": data})
    assert result.result["blob_id"] == (
        "334218f4b25c36515c313f6c7e23cce968f3dc287eec3064187bd8f0f32379f5"
    )


def test_context_blobs_are_the_runs_blobs(here: Path) -> None:
    flow = load_flow(
        flow_file(
            here,
            "steps:\n"
            "  - id: mine\n    component: /py/blob_round_trip\n    input: {data: {$input: data}}\n"
            "  - id: builtin\n    component: /builtin/get_blob\n"
            "    input: {blob_id: {$step: mine, path: blob_id}}\n"
            "  - id: put\n    component: /builtin/put_blob\n    input: {data: [1, 2]}\n"
            "  - id: theirs\n    component: /py/get_blob\n"
            "    input: {blob_id: {$step: put, path: blob_id}}\n"
            "output: {mine: {$step: mine}, builtin: {$step: builtin}, theirs: {$step: theirs}}\n",
        )
    )
    data = {"z": 1, "a": [1.5, "x"]}
    result = flow.run({"data": data})
    assert result.ok, result
    # Keys arrive sorted, as over the worker protocol; the id is Stepflow's for that.
    wired = {"a": [1.5, "x"], "z": 1}
    assert result.result["mine"] == {"blob_id": blob_id(wired), "data": wired}
    assert result.result["builtin"] == {"data": wired}
    assert result.result["theirs"] == {"data": [1, 2]}


SUB_FLOW = {"output": {"doubled": {"$input": "n"}, "tag": "sub"}}


def test_sub_run_results_in_input_order(here: Path) -> None:
    flow = one_step(here, "/py/sub_run")
    result = flow.run({"flow": SUB_FLOW, "inputs": [{"n": 1}, {"n": 2}, {"n": 3}]})
    # Sub-run outputs come back through MessageToDict, as from the worker's GrpcContext.
    assert result.result == {
        "results": [{"doubled": n, "tag": "sub"} for n in (1.0, 2.0, 3.0)],
    }


def test_a_failed_sub_run_item_fails_the_step_as_stepflow_failed(here: Path) -> None:
    flow = one_step(here, "/py/sub_run")
    result = flow.run({"flow": SUB_FLOW, "inputs": [{"n": 1}, {"m": 2}]})
    assert result.to_dict() == {
        "outcome": "failed",
        "error": {
            "code": "COMPONENT_FAILED",
            "message": "Item at index 1 failed: Input path $.n not found",
            "data": {"exception_type": "StepflowFailed"},
        },
    }


def test_submit_without_wait_then_get_run(here: Path) -> None:
    flow = one_step(here, "/py/sub_run_status")
    result = flow.run({"flow": SUB_FLOW, "inputs": [{"n": 5}, {"m": 1}]})
    assert result.result == {
        "total": 2,
        "completed": 1,
        "failed": 1,
        "outputs": [{"doubled": 5.0, "tag": "sub"}, None],
    }


def test_path_parameters(here: Path) -> None:
    assert one_step(here, "/py/path/a/b").run({}).result == {"rest": "a/b"}


def test_an_unknown_component_of_the_server_is_a_load_error_with_a_hint(here: Path) -> None:
    with pytest.raises(LoadError) as info:
        one_step(here, "/py/ecko")
    message = str(info.value)
    assert "the StepflowServer of module '_stepflow_worker' has no component at '/ecko'" in message
    assert "(did you mean '/py/echo'?)" in message


def test_a_batch_writes_one_record_per_line_with_the_workers_errors(here: Path) -> None:
    flow = flow_file(
        here,
        "steps:\n  - id: s\n    component: /py/echo\n    input: {message: {$input: m}}\n"
        "output: {$step: s, path: echo}\n",
    )
    inputs = write_lines(here / "in.jsonl", [{"m": "a"}, {"m": 1}, {"m": "c"}])
    out = here / "out.jsonl"
    done = run_cli("run-batch", "--flow", flow, "--inputs", inputs, "--output", out, cwd=here)
    assert done.returncode == 1, done.stderr
    got = sorted(records(out), key=lambda r: r["index"])
    assert [r.get("result") for r in got] == ["a", None, "c"]
    failed = got[1]
    assert failed["outcome"] == "failed"
    assert failed["error"]["code"] == "COMPONENT_FAILED"
    assert failed["error"]["message"] == "Expected `str`, got `int` - at `$.message`"
    assert failed["error"]["data"]["exception_type"] == "ValidationError"


def test_import_pocketbatch_imports_neither_msgspec_nor_stepflow_py() -> None:
    code = (
        "import sys, pocketbatch, pocketbatch.loader\n"
        "print(json.dumps([m for m in ('msgspec', 'stepflow_py') if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(
    ("number", "code"), [(0, "WORKER_ERROR"), (99, "WORKER_ERROR"), (5, "UNREACHABLE")]
)
def test_a_stepflow_errors_code_number_reads_as_over_the_worker(number: int, code: str) -> None:
    # The worker sends the number as is; the gRPC path names it with code_name (0 and
    # numbers without a name: WORKER_ERROR). In-process must name it the same way.
    from stepflow_py.worker.exceptions import StepflowError

    from pocketbatch.loader._stepflow_inproc import _classified
    from pocketbatch.loader._worker_convert import code_name

    class Odd(StepflowError):
        @property
        def task_error_code(self) -> int:
            return number

    assert _classified(Odd("odd")).code == code == code_name(number)


@pytest.mark.parametrize(
    ("code", "number"),
    [("TIMEOUT", "TASK_ERROR_CODE_TIMEOUT"), ("RATE_LIMITED", "TASK_ERROR_CODE_COMPONENT_FAILED")],
)
def test_a_sub_run_items_error_code_is_the_one_the_worker_hub_reports(
    code: str, number: str
) -> None:
    # A pocketbatch code TaskErrorCode lacks (RATE_LIMITED, HTTP_ERROR...) reaches a
    # worker's context as COMPONENT_FAILED (the hub's error_code); in-process the same.
    from stepflow_py.proto import common_pb2

    from pocketbatch import FlowResult
    from pocketbatch._result import FlowError
    from pocketbatch.loader._stepflow_context import _status
    from pocketbatch.loader._worker_convert import error_code

    failed = FlowResult("failed", error=FlowError(code, "no"))
    status = _status("run", "flow", {}, 1, [failed], None)
    assert status["results"][0]["error_code"] == number
    assert number == common_pb2.TaskErrorCode.Name(error_code(code))


def test_a_literal_path_wins_over_a_catch_all_registered_before_it(tmp_path: Path) -> None:
    # Stepflow's router (matchit), and so the worker path, prefers /udf to /{*rest}
    # whatever the order of registration.
    (tmp_path / "pocketbatch.yaml").write_text(
        "routes:\n  /w: {module: catch_all_first}\n", encoding="utf-8"
    )
    (tmp_path / "catch_all_first.py").write_text(
        "from stepflow_py.worker import StepflowServer\n"
        "server = StepflowServer(include_builtins=False)\n"
        "@server.component(subpath='{*rest}')\n"
        "def any_path(input: dict, rest: str) -> dict:\n"
        "    return {'any': rest}\n"
        "@server.component\n"
        "def udf(input: dict) -> dict:\n"
        "    return {'udf': True}\n",
        encoding="utf-8",
    )
    assert one_step(tmp_path, "/w/udf").run({}).result == {"udf": True}
    assert one_step(tmp_path, "/w/other/x").run({}).result == {"any": "other/x"}


def test_an_output_is_read_as_the_run_reads_a_workers(tmp_path: Path) -> None:
    # Over gRPC the hub reads a worker's output with from_value: a whole number past
    # 64 bits stays a float, NaN is null. In-process gave the 301-digit int and NaN.
    (tmp_path / "pocketbatch.yaml").write_text(
        "routes:\n  /w: {module: big_numbers}\n", encoding="utf-8"
    )
    (tmp_path / "big_numbers.py").write_text(
        "from stepflow_py.worker import StepflowServer\n"
        "server = StepflowServer(include_builtins=False)\n"
        "@server.component\n"
        "def big(input: dict) -> dict:\n"
        "    return {'big': 1e300, 'nan': float('nan'), 'whole': 3.0}\n",
        encoding="utf-8",
    )
    result = one_step(tmp_path, "/w/big").run({}).result
    assert result == {"big": 1e300, "nan": None, "whole": 3}
    assert isinstance(result["big"], float)
