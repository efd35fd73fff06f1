"""Blobs and nested runs as in Stepflow 0.13: ``/builtin/put_blob``, ``/builtin/get_blob``,
``/builtin/eval`` by ``flow_id``, ``/builtin/iterate``; and the did-you-mean of an
unknown builtin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _builtin_support import fails, make_ctx

from pocketbatch import LoadError, load_flow
from pocketbatch.loader._blobs import MemoryBlobStore, blob_id
from pocketbatch.loader._builtin_blobs import GetBlob, PutBlob
from pocketbatch.loader._services import RunServices

# Stepflow's own expected ids (tests/builtins/blob_test.yaml).
STEPFLOW_DATA = {
    "message": "Hello, blobs!",
    "number": 42,
    "nested": {"array": [1, 2, 3], "boolean": True},
}
STEPFLOW_ID = "868591347a854ba1d0f4875b2dd44e1e8335052af03725a9819f89e0142318b0"

PUT_GET = """
steps:
  - id: put
    component: /builtin/put_blob
    input: {data: {$input: data}, blob_type: data}
  - id: get
    component: /builtin/get_blob
    input: {blob_id: {$step: put, path: blob_id}}
output: {id: {$step: put, path: blob_id}, back: {$step: get, path: data}}
"""


def test_put_then_get_gives_stepflows_id_and_the_value_back() -> None:
    result = load_flow(PUT_GET).run({"data": STEPFLOW_DATA})
    assert result.to_dict() == {
        "outcome": "success",
        "result": {"id": STEPFLOW_ID, "back": STEPFLOW_DATA},
    }


@pytest.mark.asyncio
async def test_blobs_go_to_the_runs_store() -> None:
    store = MemoryBlobStore()
    async with RunServices(blobs=store) as services:
        result = await load_flow(PUT_GET).run_async({"data": [1]}, services=services)
    assert result.ok
    assert len(store) == 1
    assert await store.get(blob_id([1])) == ([1], "data")


@pytest.mark.asyncio
async def test_put_blob_without_services_uses_a_store_for_the_call() -> None:
    out = await PutBlob()({"data": {"a": 1}}, make_ctx())
    assert out == {"blob_id": blob_id({"a": 1})}


@pytest.mark.asyncio
async def test_get_blob_of_an_unknown_id_fails_as_stepflow_says() -> None:
    error = await fails(GetBlob(), {"blob_id": "0" * 64})
    assert (error.code, error.message, error.data) == (
        "COMPONENT_FAILED",
        f"Blob not found: {'0' * 64}",
        {"blob_id": "0" * 64},
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("component", "input", "message"),
    [
        (PutBlob(), {"blob_type": "data"}, "/builtin/put_blob: 'data' is required"),
        (PutBlob(), {"data": 1, "blob_type": "text"}, "'blob_type' must be one of data, flow"),
        (GetBlob(), {}, "/builtin/get_blob: 'blob_id' is required"),
        (GetBlob(), {"blob_id": 3}, "'blob_id' must be a string, got int"),
    ],
)
async def test_bad_blob_inputs_are_invalid_input(component: Any, input: Any, message: str) -> None:
    error = await fails(component, input)
    assert error.code == "INVALID_INPUT"
    assert message in error.message


EVAL_BY_ID = """
steps:
  - id: store
    component: /builtin/put_blob
    input:
      blob_type: flow
      data:
        $literal:
          steps:
            - id: msg
              component: /builtin/create_messages
              input: {user_prompt: {$input: text}}
          output: {$step: msg, path: messages}
  - id: run
    component: /builtin/eval
    input:
      flow_id: {$step: store, path: blob_id}
      input: {text: {$input: text}}
output: {$step: run}
"""


def test_eval_runs_a_stored_flow_by_its_blob_id() -> None:
    result = load_flow(EVAL_BY_ID).run({"text": "hi"})
    assert result.ok, result
    assert result.result["result"] == {
        "outcome": "success",
        "result": [{"role": "user", "content": "hi"}],
    }
    assert isinstance(result.result["run_id"], str)


def test_eval_of_an_unknown_flow_id_fails_with_blob_not_found() -> None:
    flow = load_flow(
        "steps:\n  - id: run\n    component: /builtin/eval\n"
        f"    input: {{flow_id: '{'a' * 64}', input: {{}}}}\n"
        "output: {$step: run}\n"
    )
    error = flow.run({}).error
    assert error is not None
    assert (error.code, error.message) == ("COMPONENT_FAILED", f"Blob not found: {'a' * 64}")


def test_eval_of_a_data_blob_that_is_no_flow_is_invalid_input() -> None:
    flow = load_flow(
        "steps:\n  - id: put\n    component: /builtin/put_blob\n"
        "    input: {data: [1, 2]}\n"
        "  - id: run\n    component: /builtin/eval\n"
        "    input: {flow_id: {$step: put, path: blob_id}, input: {}}\n"
        "output: {$step: run}\n"
    )
    error = flow.run({}).error
    assert error is not None
    assert error.code == "INVALID_INPUT"
    assert "holds list, not a flow" in error.message


def test_eval_flow_id_as_a_path_still_works(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text("output: {twice: {$input: x}}\n", encoding="utf-8")
    flow_file = tmp_path / "outer.yaml"
    flow_file.write_text(
        "steps:\n  - id: run\n    component: /builtin/eval\n"
        "    input: {flow_id: inner.yaml, input: {x: 4}}\n"
        "output: {$step: run, path: result.result}\n",
        encoding="utf-8",
    )
    assert load_flow(flow_file).run({}).result == {"twice": 4}


# --------------------------------------------------------------------------- iterate

COUNTER = """
steps:
  - id: loop
    component: /builtin/iterate
    input:
      flow:
        steps:
          - id: count
            component: /count/step
            input: {$input: $}
        output: {$step: count}
      initial_input: {current: {$input: current}, target: {$input: target}}
      max_iterations: {$input: max}
output: {$step: loop}
"""


def _counter_flow(calls: list[Any]) -> Any:
    from pocketbatch import ComponentRegistry

    registry = ComponentRegistry()

    @registry.component("/count/step")
    def step(value: dict[str, int]) -> dict[str, Any]:
        calls.append(value)
        if value["current"] >= value["target"]:
            return {"result": f"Reached target {value['target']}"}
        return {"next": {"current": value["current"] + 1, "target": value["target"]}}

    return load_flow(COUNTER, registry=registry)


@pytest.mark.parametrize(
    ("current", "target", "iterations"), [(0, 5, 6), (3, 7, 5), (10, 10, 1), (1, 2, 2)]
)
def test_iterate_runs_until_result(current: int, target: int, iterations: int) -> None:
    """Stepflow's examples/loop-components/builtin_iterate.yaml cases."""
    calls: list[Any] = []
    result = _counter_flow(calls).run({"current": current, "target": target, "max": 20})
    assert result.result == {
        "result": f"Reached target {target}",
        "iterations": iterations,
        "terminated": False,
    }
    assert len(calls) == iterations


def test_iterate_stops_at_max_iterations_with_the_last_next_value() -> None:
    calls: list[Any] = []
    result = _counter_flow(calls).run({"current": 0, "target": 100, "max": 3})
    assert result.result == {
        "result": {"current": 3, "target": 100},
        "iterations": 3,
        "terminated": True,
    }
    assert len(calls) == 3


def test_iterate_with_zero_iterations_returns_the_initial_input() -> None:
    calls: list[Any] = []
    result = _counter_flow(calls).run({"current": 0, "target": 1, "max": 0})
    assert result.result == {
        "result": {"current": 0, "target": 1},
        "iterations": 0,
        "terminated": True,
    }
    assert calls == []


def test_iterate_fails_when_the_flow_answers_neither_result_nor_next() -> None:
    flow = load_flow(
        "steps:\n  - id: loop\n    component: /builtin/iterate\n"
        "    input: {flow: {output: {other: 1}}, initial_input: {}}\n"
        "output: {$step: loop}\n"
    )
    error = flow.run({}).error
    assert error is not None
    assert (error.code, error.message) == (
        "INVALID_INPUT",
        "Workflow result must contain either 'result' or 'next' field",
    )


def test_iterate_fails_with_the_iterated_flows_error() -> None:
    flow = load_flow(
        "steps:\n  - id: loop\n    component: /builtin/iterate\n"
        "    input: {flow: {output: {$input: missing}}, initial_input: {}}\n"
        "output: {$step: loop}\n"
    )
    error = flow.run({}).error
    assert error is not None
    assert error.code == "EXPRESSION_FAILURE"
    assert "missing" in error.message


def test_iterate_by_flow_id_and_its_input_checks() -> None:
    flow = load_flow(
        "steps:\n  - id: put\n    component: /builtin/put_blob\n"
        "    input: {blob_type: flow, data: {$literal: {output: {result: {$input: v}}}}}\n"
        "  - id: loop\n    component: /builtin/iterate\n"
        "    input: {flow_id: {$step: put, path: blob_id}, initial_input: {v: 9}}\n"
        "output: {$step: loop}\n"
    )
    assert flow.run({}).result == {"result": 9, "iterations": 1, "terminated": False}
    bad = load_flow(
        "steps:\n  - id: loop\n    component: /builtin/iterate\n"
        "    input: {flow: {output: 1}, initial_input: {}, max_iterations: -1}\n"
        "output: {$step: loop}\n"
    ).run({})
    assert bad.error is not None
    assert "'max_iterations'" in bad.error.message


def test_iterate_flow_mistakes_are_load_errors_at_their_line() -> None:
    with pytest.raises(LoadError) as info:
        load_flow(
            "steps:\n  - id: loop\n    component: /builtin/iterate\n"
            "    input:\n      flow: {steps: [{id: x, component: /no/such}]}\n"
            "      initial_input: {}\n"
            "output: {$step: loop}\n"
        )
    assert str(info.value).startswith("<string>:5:")


# --------------------------------------------------------------------------- did you mean


@pytest.mark.parametrize(
    ("path", "hint"),
    [
        ("/builtin/udf", None),  # suggested '/builtin/map' before
        ("/builtin/unknown", None),  # suggested '/builtin/noop' before
        ("/builtin/iterat", "/builtin/iterate"),
        ("/builtin/get_blb", "/builtin/get_blob"),
    ],
)
def test_unknown_builtin_suggests_only_a_close_name(path: str, hint: str | None) -> None:
    with pytest.raises(LoadError) as info:
        load_flow(f"steps:\n  - {{id: a, component: {path}, input: {{}}}}\noutput: {{$step: a}}\n")
    message = str(info.value)
    if hint is None:
        assert "did you mean" not in message
    else:
        assert f"(did you mean {hint!r}?)" in message
