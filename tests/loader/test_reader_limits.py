"""The flow reader's limits: YAML alias bombs, nesting depth, nested flows, deep inputs.

Every refusal is a :class:`LoadError` (or an ``INVALID_INPUT`` result for run-time
data) naming the file and the line:column, never a ``RecursionError`` and never a
blow-up: the alias check counts the composed graph before any Python object is
built, which the tests show by counting the builder's calls, not by timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import ComponentRegistry, load_flow
from pocketbatch._errors import LoadError
from pocketbatch.loader import LoaderOptions, _source
from pocketbatch.loader._load import MAX_NESTED_FLOWS
from pocketbatch.loader._source import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    nesting_depth,
    parse_data_yaml,
    parse_document,
)


def laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" document: each anchor holds ``width`` aliases of the one before."""
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def nested_yaml(levels: int) -> str:
    """Block-style mappings nested ``levels`` deep: ``k:`` ... ``k: 1``."""
    return "".join(" " * i + "k:\n" for i in range(levels - 1)) + " " * (levels - 1) + "k: 1\n"


def nested_value(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# --------------------------------------------------------------------------- aliases


def test_alias_bomb_is_refused_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4-billion-node bomb in a few hundred bytes: refused with the file and the
    position of the biggest aliased anchor, and not one value is constructed."""
    built = 0
    original = _source._Builder.build

    def counting(self: Any, node: Any, where: Any) -> Any:
        nonlocal built
        built += 1
        return original(self, node, where)

    monkeypatch.setattr(_source._Builder, "build", counting)
    flow = tmp_path / "bomb.yaml"
    flow.write_text(laughs())
    assert len(flow.read_bytes()) < 600
    with pytest.raises(LoadError) as caught:
        load_flow(flow)
    error = caught.value
    assert (error.file, error.line, error.column) == (str(flow), 9, 5)  # the &a8 anchor
    assert f"more than the limit of {MAX_ALIAS_NODES}" in error.message
    assert "4412961486 nodes" in error.message
    assert built == 0


def test_alias_limit_counts_the_nodes_aliases_add() -> None:
    """Three aliases of a 4-node list add 12 nodes: allowed at 12, refused at 11."""
    text = "a: &x [1, 2, 3]\nb: [*x, *x, *x]\n"
    assert parse_document(text, max_alias_nodes=12).data["b"] == [[1, 2, 3]] * 3
    with pytest.raises(LoadError) as caught:
        parse_document(text, max_alias_nodes=11)
    assert str(caught.value) == (
        "<string>:1:4: YAML aliases would expand the document by 12 nodes, more than "
        "the limit of 11; the largest aliased value is the anchor here"
    )


def test_ordinary_aliases_and_merge_keys_still_load() -> None:
    doc = parse_document(
        "base: &b {x: 1, y: 2}\ncopy: *b\nmerged: {<<: *b, z: 3}\nname: &n joe\nagain: *n\n"
    )
    assert doc.data == {
        "base": {"x": 1, "y": 2},
        "copy": {"x": 1, "y": 2},
        "merged": {"x": 1, "y": 2, "z": 3},
        "name": "joe",
        "again": "joe",
    }
    assert doc.position(("merged", "z")) == _source.Position(3, 18)


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    """``&a [1, *a]`` is an endless list: a LoadError, not a RecursionError."""
    with pytest.raises(LoadError) as caught:
        load_flow("steps: []\noutput: &a [1, *a]\n")
    assert str(caught.value) == (
        "<string>:2:9: an alias refers to its own anchor here: the value would contain "
        "itself without end"
    )


# --------------------------------------------------------------------------- depth


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), (1, MAX_DEPTH + 1)),
        ('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), (1, 5 * MAX_DEPTH + 1)),
        (nested_yaml(MAX_DEPTH + 1), (MAX_DEPTH + 1, MAX_DEPTH + 1)),
    ],
    ids=["yaml-flow", "json", "yaml-block"],
)
def test_one_level_too_deep_is_refused_where_it_starts(
    text: str, position: tuple[int, int]
) -> None:
    with pytest.raises(LoadError) as caught:
        parse_document(text, name="deep.yaml")
    error = caught.value
    assert (error.file, error.line, error.column) == ("deep.yaml", *position)
    assert error.message == (
        f"nested more than {MAX_DEPTH} levels deep here (mappings and lists may nest {MAX_DEPTH})"
    )


def test_the_deepest_allowed_document_loads() -> None:
    assert nesting_depth(parse_document(nested_yaml(MAX_DEPTH)).data) == MAX_DEPTH
    assert nesting_depth(parse_document("[" * MAX_DEPTH + "]" * MAX_DEPTH).data) == MAX_DEPTH


def test_depth_counts_through_aliases() -> None:
    """Two 60-level halves joined by an alias make 120 levels."""
    half = MAX_DEPTH * 6 // 10
    text = "a: &a " + "[" * half + "]" * half + "\nb: " + "[" * half + "*a" + "]" * half + "\n"
    with pytest.raises(LoadError, match="nested more than"):
        parse_document(text)


@pytest.mark.parametrize("levels", [500, 990])
def test_a_deeply_nested_flow_is_a_load_error(levels: int) -> None:
    """It used to fail with a RecursionError from deep inside the reader."""
    text = "steps: []\noutput: " + "[" * levels + "]" * levels + "\n"
    with pytest.raises(LoadError) as caught:
        load_flow(text)
    assert (caught.value.line, caught.value.column) == (2, 8 + MAX_DEPTH)


def test_deep_expressions_stop_at_the_depth_limit() -> None:
    """An $if chain deep enough to exhaust the compiler's recursion is refused first."""
    text = "steps: []\noutput: " + "{$if: true, then: " * 400 + "1" + "}" * 400 + "\n"
    with pytest.raises(LoadError, match="nested more than"):
        load_flow(text)


def test_nesting_depth_is_iterative_and_stops_early() -> None:
    deep: list[Any] = []
    for _ in range(50_000):
        deep = [deep]
    assert nesting_depth(deep, limit=10) == 11
    assert nesting_depth({"a": [1, {"b": {}}], "c": 2}) == 4
    assert nesting_depth(7) == 0


# --------------------------------------------------------------------------- nested flows


def test_a_flow_file_that_runs_itself_is_a_load_error(tmp_path: Path) -> None:
    flow = tmp_path / "again.yaml"
    flow.write_text(
        "steps:\n"
        "  - id: again\n"
        "    component: /builtin/eval\n"
        "    input:\n"
        "      flow: again.yaml\n"
        "      input: {}\n"
        "output: {$step: again}\n"
    )
    with pytest.raises(LoadError) as caught:
        load_flow(flow)
    error = caught.value
    assert (error.file, error.line, error.column, error.step) == (str(flow), 5, 7, None)
    assert error.message == (
        f"nested flows go more than {MAX_NESTED_FLOWS} deep (does a flow run itself?)"
    )


def test_nested_flows_up_to_the_limit_run(tmp_path: Path) -> None:
    for i in range(MAX_NESTED_FLOWS):
        (tmp_path / f"f{i}.yaml").write_text(
            "steps:\n  - id: s\n    component: /builtin/eval\n    input:\n"
            f"      flow: f{i + 1}.yaml\n      input: {{n: {{$input: n}}}}\n"
            "output: {$step: s, path: result.result}\n"
        )
    (tmp_path / f"f{MAX_NESTED_FLOWS}.yaml").write_text("output: {$input: n}\n")
    assert load_flow(tmp_path / "f0.yaml").run({"n": 5}).result == 5


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 2000])
def test_a_flow_made_at_run_time_too_deep_fails_its_step(levels: int) -> None:
    """A nested flow built while running (here by a component) is checked for depth,
    as one read from a file: the step fails INVALID_INPUT, no RecursionError."""
    components = ComponentRegistry()

    @components.component("/test/deep_flow")
    def deep_flow(input: Any) -> Any:
        value: Any = 1
        for _ in range(levels - 2):
            value = [value]
        return {"output": {"$literal": value}}

    flow = load_flow(
        "steps:\n  - id: make\n    component: /test/deep_flow\n    input: {}\n"
        "  - id: inner\n    component: /builtin/eval\n"
        "    input: {flow: {$step: make}, input: {}}\n"
        "output: {$step: inner}\n",
        registry=components,
    )
    result = flow.run({})
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.code == "INVALID_INPUT"
    assert result.error.message.endswith(
        f"nested flow: the flow nests more than {MAX_DEPTH} levels deep"
    )


# --------------------------------------------------------------------------- inputs


def test_an_input_too_deep_fails_the_run_without_raising() -> None:
    flow = load_flow("output: {$input: a}\n")
    assert flow.run(nested_value(MAX_DEPTH)).ok
    result = flow.run(nested_value(MAX_DEPTH + 1))
    assert result.outcome == "failed"
    assert result.error is not None
    assert (result.error.code, result.error.message) == (
        "INVALID_INPUT",
        f"the input nests more than {MAX_DEPTH} levels of objects and arrays "
        f"(the limit is {MAX_DEPTH})",
    )


def test_a_recursive_schema_on_a_deep_input_never_raises() -> None:
    """A schema that descends many frames per level: jsonschema's recursion runs out
    before the input's depth limit does; the run fails INVALID_INPUT instead of raising."""
    wrapped: Any = {"$ref": "#/$defs/n"}
    for _ in range(12):
        wrapped = {"allOf": [wrapped]}
    schema = {
        "$defs": {"n": {"anyOf": [{"type": "integer"}, {"additionalProperties": wrapped}]}},
        "$ref": "#/$defs/n",
    }
    flow = load_flow(json.dumps({"input_schema": schema, "output": "ok"}))  # JSON is YAML
    result = flow.run(nested_value(MAX_DEPTH))
    assert result.outcome == "failed"
    assert result.error is not None
    assert result.error.message == (
        "the input is nested too deeply to check against the input schema"
    )
    assert flow.run(nested_value(3)).ok


# --------------------------------------------------------------------------- load_file


def test_load_file_refuses_a_yaml_bomb_and_deep_json(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(laughs())
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    (tmp_path / "ok.yaml").write_text("a: &x [1, 2]\nb: *x\nc: yes\n")
    flow = load_flow(
        "steps:\n  - id: load\n    component: /builtin/load_file\n"
        "    input: {path: {$input: path}}\n"
        "output: {$step: load, path: data}\n",
        options=LoaderOptions(load_file_root=tmp_path),
    )
    bomb = flow.run({"path": "bomb.yaml"})
    assert bomb.error is not None
    assert bomb.error.code == "INVALID_INPUT"
    assert f"more than the limit of {MAX_ALIAS_NODES}" in bomb.error.message
    assert str(tmp_path / "bomb.yaml") + ":9:5:" in bomb.error.message
    deep = flow.run({"path": "deep.json"})
    assert deep.error is not None
    assert deep.error.code == "INVALID_INPUT"
    assert f"nests more than {MAX_DEPTH} levels deep" in deep.error.message
    ok = flow.run({"path": "ok.yaml"})
    assert ok.result == {"a": [1, 2], "b": [1, 2], "c": True}  # YAML 1.1, as safe_load


def test_parse_data_yaml_checks_before_building() -> None:
    with pytest.raises(LoadError, match="YAML aliases would expand"):
        parse_data_yaml(laughs(), name="data.yaml")
    assert parse_data_yaml("") is None
