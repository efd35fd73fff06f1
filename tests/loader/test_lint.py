"""A flow with no ``output:`` runs none of its steps, as in Stepflow 0.13, and says so
at load (issue 14).

Stepflow evaluates lazily (stepflow-rs ``items_state.rs: initialize_item``: the
needed steps are those the output expression needs plus the ``mustExecute`` ones; a
missing ``output`` is ``null`` and needs none), so nothing else runs and each input
succeeds with ``result: null``. pocketbatch matches that and warns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pocketbatch import ComponentRegistry, LoadError, LoadWarning, load_flow

NO_OUTPUT = """\
name: no-output
steps:
  - id: first
    component: /t/count
    input: {n: {$input: n}}
  - id: second
    component: /t/count
    input: {n: {$step: first, path: n}}
"""


def counting() -> tuple[ComponentRegistry, list[Any]]:
    calls: list[Any] = []
    components = ComponentRegistry()

    @components.component("/t/count")
    def count(data: dict[str, Any]) -> dict[str, Any]:
        calls.append(data)
        return data

    return components, calls


def test_no_output_warns_at_load_with_file_line_and_the_steps(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(NO_OUTPUT, encoding="utf-8")
    components, _ = counting()
    [warning] = load_flow(path, registry=components).warnings
    message = str(warning)
    assert message.startswith(f"{path}:2:1: the flow has no 'output:', so none of its steps")
    assert "(first, second)" in message
    assert "output: {$step: second}" in message
    assert isinstance(warning, LoadWarning)
    with pytest.raises(LoadError, match="the flow has no 'output:'"):
        load_flow(path, registry=components, strict=True)  # validate --strict


def test_no_output_runs_no_step_and_succeeds_with_null_as_stepflow() -> None:
    components, calls = counting()
    flow = load_flow(NO_OUTPUT, registry=components)
    assert len(flow.warnings) == 1
    result = flow.run({"n": 1})
    assert (result.outcome, result.result) == ("success", None)
    assert calls == []


def test_must_execute_steps_run_and_the_warning_names_only_the_others() -> None:
    text = NO_OUTPUT.replace("  - id: second\n", "  - id: second\n    mustExecute: true\n")
    text += "  - id: third\n    component: /t/count\n    input: {n: 3}\n"
    components, calls = counting()
    flow = load_flow(text, registry=components)
    [warning] = flow.warnings
    assert "so its step third will not run: " in str(warning)
    assert flow.run({"n": 1}).outcome == "success"
    assert calls == [{"n": 1}, {"n": 1}]  # first (needed by second), second


@pytest.mark.parametrize(
    "text",
    [
        NO_OUTPUT + "output: {$step: second}\n",  # an output
        NO_OUTPUT.replace("  - id: second\n", "  - id: second\n    mustExecute: true\n"),
        "output: {$input: n}\n",  # no steps
        "steps:\n  - {id: a, component: /t/count, input: {}, next: {default: a}}\nmax_steps: 2\n",
    ],
    ids=["output", "all-must-execute", "no-steps", "control-flow"],
)
def test_no_warning_when_every_step_can_run(text: str) -> None:
    components, _ = counting()
    assert load_flow(text, registry=components).warnings == ()
