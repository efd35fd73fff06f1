"""next loops read their own last output, stop at max_steps; variables meet their schema;
flows in one process keep their own routed modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketbatch import LoadError, load_flow

LAP = """
start: lap
steps:
  - id: lap
    component: /builtin/noop
    input:
      prev: {$step: lap, path: me, on_skip: {action: use_default, default_value: null}}
      me: {$coalesce: [{$step: count, path: n}, 0]}
    next: count
  - id: count
    component: /builtin/noop
    input: {n: {$template: "{step.lap.me}1"}}
    action: {$if: {$step: lap, path: prev}, then: stop, else: again}
    next: {again: lap, stop: done}
  - id: done
    component: /builtin/noop
    input: {}
output: {prev: {$step: lap, path: prev}, me: {$step: lap, path: me}}
"""


def test_a_step_in_a_loop_reads_its_own_previous_output() -> None:
    """On its second lap, a step's input sees what it produced on the first."""
    result = load_flow(LAP).run({})
    assert result.to_dict() == {"outcome": "success", "result": {"prev": 0, "me": "01"}}


def test_a_loop_that_never_ends_fails_at_max_steps() -> None:
    """A next loop with no way out fails with STEP_LIMIT instead of spinning forever."""
    flow = load_flow(
        "max_steps: 25\n"
        "steps:\n"
        "  - {id: a, component: /builtin/noop, input: {}, next: b}\n"
        "  - {id: b, component: /builtin/noop, input: {}, next: a}\n"
        "output: 1\n"
    )
    result = flow.run({})
    assert result.error is not None
    assert result.error.code == "STEP_LIMIT"
    assert "25 steps" in result.error.message


@pytest.mark.parametrize("bad", [0, -1, "many", True])
def test_max_steps_must_be_a_positive_whole_number(bad: object) -> None:
    """max_steps is checked at load time."""
    with pytest.raises(LoadError, match="max_steps must be a whole number >= 1"):
        load_flow(f"max_steps: {bad!r}\noutput: 1\n".replace("'", ""))


VARIABLES = """
variables_schema:
  type: object
  properties:
    budget: {type: integer, minimum: 1}
  required: [budget]
output: {$variable: budget, default: 3}
"""


def test_variables_are_checked_against_their_schema() -> None:
    """A supplied variable that breaks variables_schema fails the run with INVALID_INPUT."""
    flow = load_flow(VARIABLES)
    assert flow.run({}, variables={"budget": 2}).result == 2
    result = flow.run({}, variables={"budget": "abc"})
    assert result.error is not None
    assert result.error.code == "INVALID_INPUT"
    assert result.error.message == "variables.budget: 'abc' is not of type 'integer'"


def test_unsupplied_variables_are_not_required() -> None:
    """'required' in variables_schema does not fail a run that relies on a default."""
    assert load_flow(VARIABLES).run({}).result == 3


def _flow_with_components(folder: Path, answer: str) -> Path:
    folder.mkdir()
    (folder / "pocketbatch.yaml").write_text("routes:\n  /x: components\n")
    (folder / "components.py").write_text(f"def who(data):\n    return {{'who': {answer!r}}}\n")
    flow = folder / "flow.yaml"
    flow.write_text(
        "steps: [{id: w, component: /x/who, input: {}}]\noutput: {$step: w, path: who}\n"
    )
    return flow


def test_two_flows_keep_their_own_components_module(tmp_path: Path) -> None:
    """Flows in different folders each routing to a 'components' module get their own."""
    a = load_flow(_flow_with_components(tmp_path / "a", "a"))
    b = load_flow(_flow_with_components(tmp_path / "b", "b"))
    assert (a.run({}).result, b.run({}).result) == ("a", "b")
