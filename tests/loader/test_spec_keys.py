"""Keys Stepflow ignores (issue 13): loaded, with a LoadWarning at file:line:column."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pocketbatch import LoadWarning, PocketbatchWarning, load_flow
from pocketbatch._errors import LoadError

# A flow Stepflow 0.13 runs: 'input' at the top and 'depends_on' on a step are not
# fields of its Flow and Step structs (serde, no deny_unknown_fields), so it ignores them.
LENIENT = """\
schema: https://stepflow.org/schemas/v1/flow.json
input: {name: Ada}
steps:
  - id: a
    component: /builtin/noop
    input: {n: {$input: n}}
  - id: b
    component: /builtin/noop
    depends_on: [a]
    input: {from: {$step: a, path: n}}
    onError: {action: retry, maxRetires: 2}
output: {$step: b, path: from}
"""


def test_keys_stepflow_ignores_load_with_warnings_at_their_position(tmp_path: Path) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(LENIENT, encoding="utf-8")
    flow = load_flow(path)
    assert flow.run({"n": 3}).result == 3
    got = [(w.file, w.line, w.column, w.step, w.message) for w in flow.warnings]
    assert got == [
        (
            str(path),
            2,
            1,
            None,
            "unknown key 'input' in the flow (did you mean 'inputSchema'?), which Stepflow ignores",
        ),
        (str(path), 9, 5, "b", "unknown key 'depends_on' in a step, which Stepflow ignores"),
        (
            str(path),
            11,
            30,
            "b",
            "unknown key 'maxRetires' in on_error (did you mean 'maxRetries'?), "
            "which Stepflow ignores",
        ),
    ]
    assert str(flow.warnings[1]) == (
        f"{path}:9:5: step 'b': unknown key 'depends_on' in a step, which Stepflow ignores"
    )


def test_strict_makes_the_first_warning_an_error() -> None:
    with pytest.raises(LoadError) as info:
        load_flow(LENIENT, strict=True)
    error = info.value
    assert (error.file, error.line, error.column, error.step) == ("<string>", 2, 1, None)
    assert error.message.startswith("unknown key 'input' in the flow")


def test_warnings_of_a_subflow_written_in_the_file() -> None:
    flow = load_flow(
        "steps:\n"
        "  - id: m\n"
        "    component: /builtin/eval\n"
        "    input: {flow: {ouput: 1}, input: 1}\n"
        "output: {$step: m}\n"
    )
    assert [str(w) for w in flow.warnings] == [
        "<string>:4:20: unknown key 'ouput' in the flow (did you mean 'output'?), "
        "which Stepflow ignores"
    ]


def test_wrong_types_and_pocketbatch_keys_stay_errors() -> None:
    with pytest.raises(LoadError, match="steps must be a list"):
        load_flow("steps: {a: 1}\noutput: 1\n")
    with pytest.raises(LoadError, match="unknown key 'colour' in cache"):
        load_flow("steps:\n- {id: a, component: /builtin/noop, cache: {colour: red}}\noutput: 1\n")
    with pytest.raises(LoadError, match="unknown expression"):
        load_flow("output: {$inptu: x}\n")


def test_load_warning_is_a_pocketbatch_warning_and_pickles() -> None:
    warning = load_flow(LENIENT).warnings[0]
    assert isinstance(warning, LoadWarning)
    assert isinstance(warning, PocketbatchWarning)
    assert isinstance(warning, UserWarning)
    copy = pickle.loads(pickle.dumps(warning))
    assert (str(copy), copy.line, copy.column) == (str(warning), 2, 1)
    assert str(warning.to_error()) == str(warning)


def test_no_warnings_for_a_clean_flow() -> None:
    assert load_flow("output: 1\n").warnings == ()


# ----------------------------------------------------------------- input-schema enforcement

SCHEMA = """\
schemas:
  type: object
  properties:
    input: {type: object, properties: {x: {type: string}}, required: [x]}
output: {$input: x}
"""


def test_input_schema_is_enforced_by_default() -> None:
    result = load_flow(SCHEMA).run({"x": 1})
    assert result.to_dict()["error"]["code"] == "INVALID_INPUT"


def test_check_input_schema_false_runs_as_stepflow() -> None:
    """Stepflow does not check inputs: {x: 1} against x: string succeeds, and a
    missing field fails only where an expression reads it."""
    flow = load_flow(SCHEMA, check_input_schema=False)
    assert flow.options.check_input_schema is False
    assert flow.run({"x": 1}).to_dict() == {"outcome": "success", "result": 1}
    assert flow.run({}).to_dict()["error"] == {
        "code": "EXPRESSION_FAILURE",
        "message": "Input path $.x not found",
    }
    assert flow.recipe is not None
    assert flow.recipe.load().run({"x": 1}).ok


def test_loader_options_turn_input_schema_checks_off() -> None:
    from pocketbatch.loader import LoaderOptions

    flow = load_flow(SCHEMA, options=LoaderOptions(check_input_schema=False))
    assert flow.run({"x": 1}).ok
