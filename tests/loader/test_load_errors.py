"""LoadError for flows given as text, for malformed structure, for keys spelt twice,
and for component config files handed to ``load_flow(config=...)``.

Every message is compared whole: ``file:line:column: [step 'id': ]message``. Flows
given as text are reported against ``<string>``; config files against the path as
given to ``load_flow``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from pocketbatch import ComponentRegistry, PocketbatchError, load_flow
from pocketbatch._errors import LoadError


def load_error(text: str, **kw: Any) -> LoadError:
    with pytest.raises(LoadError) as caught:
        load_flow(text, **kw)
    return caught.value


def where(error: LoadError) -> tuple[Any, ...]:
    return (error.file, error.line, error.column, error.step)


# --------------------------------------------------------------------------- text and shape


def test_yaml_syntax_error_in_text() -> None:
    error = load_error("steps:\n  - id: a\n    component: /builtin/noop\n    input: {x: [1, 2}\n")
    assert str(error) == (
        "<string>:4:21: invalid YAML: while parsing a flow sequence "
        "did not find expected ',' or ']'"
    )
    assert where(error) == ("<string>", 4, 21, None)


def test_json_syntax_error_in_text() -> None:
    error = load_error('{"steps": [ {"id": "a",, }]}')
    assert str(error) == (
        "<string>:1:24: invalid YAML: while parsing a flow node did not find expected node content"
    )


def test_duplicate_yaml_key_in_text() -> None:
    error = load_error("output: 1\nname: x\noutput: 2\n")
    assert (
        str(error) == "<string>:3:1: invalid YAML: while reading a mapping duplicate key 'output'"
    )


@pytest.mark.parametrize("text", ["\n\n", "# only a comment\n"])
def test_empty_document(text: str) -> None:
    assert str(load_error(text)) == "<string>:1:1: the document is empty"


def test_explicit_null_document() -> None:
    assert str(load_error("---\n")) == "<string>:2:1: the flow must be a mapping, got null"


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("just text\nmore text\n", "str"), ("5\n", "int")],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    error = load_error(text)
    assert str(error) == f"<string>:1:1: the flow must be a mapping, got {kind}"
    assert where(error) == ("<string>", 1, 1, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: {a: 1}\n", "<string>:1:1: steps must be a list, got dict"),
        ("steps: a step\nname: x\n", "<string>:1:1: steps must be a list, got str"),
        ("name: x\nsteps: null\n", "<string>:2:1: steps must be a list, got null"),
        ("steps:\n  - just text\n", "<string>:2:5: a step must be a mapping, got str"),
        ("steps:\n  - [a, b]\n", "<string>:2:5: a step must be a mapping, got list"),
    ],
)
def test_steps_must_be_a_list_of_mappings(text: str, message: str) -> None:
    assert str(load_error(text)) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps:\n  - component: /builtin/noop\n",
            "<string>:2:5: a step needs an id: a name of letters, digits, '_' or '-', "
            "not starting with a digit (got None)",
        ),
        (
            "steps:\n  - id: 1abc\n    component: /builtin/noop\n",
            "<string>:2:5: a step needs an id: a name of letters, digits, '_' or '-', "
            "not starting with a digit (got '1abc')",
        ),
        (
            "steps:\n  - id: a\n",
            "<string>:2:5: step 'a': a step needs a component path starting with '/', "
            "such as /builtin/openai (got None)",
        ),
        (
            "steps:\n  - id: a\n    component: builtin/noop\n",
            "<string>:3:5: step 'a': a step needs a component path starting with '/', "
            "such as /builtin/openai (got 'builtin/noop')",
        ),
        ("name: 5\n", "<string>:1:1: name must be a string"),
    ],
)
def test_step_ids_and_components(text: str, message: str) -> None:
    assert str(load_error(text)) == message


# --------------------------------------------------------------------------- spelt twice


def test_on_error_and_onerror_together() -> None:
    error = load_error(
        "steps:\n"
        "  - id: a\n"
        "    component: /builtin/noop\n"
        "    on_error: {action: fail}\n"
        "    onError: {action: retry}\n"
    )
    assert (
        str(error)
        == "<string>:5:5: step 'a': 'onError' and 'on_error' mean the same thing; keep one"
    )
    assert where(error) == ("<string>", 5, 5, "a")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("max_retries: 1", "maxRetries: 2"),
        ("maxRetries: 1", "max_retries: 2"),
    ],
)
def test_max_retries_spelt_twice(first: str, second: str) -> None:
    error = load_error(
        "steps:\n"
        "  - id: a\n"
        "    component: /builtin/noop\n"
        "    on_error:\n"
        "      action: retry\n"
        f"      {first}\n"
        f"      {second}\n"
    )
    a, b = first.split(":")[0], second.split(":")[0]
    assert str(error) == f"<string>:7:7: step 'a': {b!r} and {a!r} mean the same thing; keep one"


@pytest.mark.parametrize(
    ("keys", "line"),
    [
        (("skip: true", "skipIf: true"), 5),
        (("skip_if: true", "skip: false"), 5),
        (("must_execute: true", "mustExecute: true"), 5),
        (("for_each: []", "forEach: []"), 5),
    ],
)
def test_step_keys_spelt_twice(keys: tuple[str, str], line: int) -> None:
    error = load_error(
        "steps:\n  - id: a\n    component: /builtin/noop\n" + "".join(f"    {k}\n" for k in keys)
    )
    a, b = keys[0].split(":")[0], keys[1].split(":")[0]
    assert (
        str(error) == f"<string>:{line}:5: step 'a': {b!r} and {a!r} mean the same thing; keep one"
    )


def test_input_schema_spelt_twice() -> None:
    error = load_error("input_schema: {type: object}\ninputSchema: {type: object}\n")
    assert (
        str(error) == "<string>:2:1: 'inputSchema' and 'input_schema' mean the same thing; keep one"
    )


def test_input_schema_given_twice_with_schemas() -> None:
    error = load_error(
        "input_schema: {type: object}\nschemas: {properties: {input: {type: object}}}\n"
    )
    assert str(error) == (
        "<string>:1:1: the input schema is given twice: as input_schema and under "
        "schemas.properties.input; keep one"
    )


def test_on_skip_spelt_twice() -> None:
    error = load_error(
        "steps:\n"
        "  - {id: a, component: /builtin/noop, skip: true}\n"
        "output:\n"
        "  $step: a\n"
        "  on_skip: {action: skip}\n"
        "  onSkip: {action: use_default, default_value: 1}\n"
    )
    assert "mean the same thing" in error.message


def test_on_skip_default_value_spelt_twice() -> None:
    error = load_error(
        "steps:\n"
        "  - {id: a, component: /builtin/noop, skip: true}\n"
        "output:\n"
        "  $step: a\n"
        "  on_skip: {action: use_default, default_value: 1, defaultValue: 2}\n"
    )
    assert "mean the same thing" in error.message


# --------------------------------------------------------------------------- other checks


@pytest.mark.parametrize(
    ("step", "message", "column"),
    [
        (
            "next: [b]",
            "next takes a step id, or a mapping from actions to step ids "
            "({approve: publish, revise: draft})",
            39,
        ),
        ("for_each: [], max_concurrency: 0", "max_concurrency must be a whole number >= 1", 53),
        ("as: x", "as only applies to a step with for_each", 39),
        (
            "for_each: [], on_item_error: skip",
            "on_item_error must be raise or collect, got 'skip'",
            53,
        ),
        ("must_execute: yes", "must_execute must be true or false", 39),
        ("on_error: 5", "on_error must be a mapping, got int", 39),
        (
            "on_error: {action: retry, max_retries: -1}",
            "max_retries must be a whole number >= 0",
            65,
        ),
        ("on_error: {action: retry, wait: -1}", "wait must be a number >= 0", 65),
        (
            "on_error: {action: retry, default_value: 1}",
            "default_value only applies to action use_default",
            65,
        ),
        (
            "on_error: {action: use_default, maxRetries: 1}",
            "maxRetries only applies to action retry",
            71,
        ),
        (
            "on_error: {action: skip}",
            "on_error action must be fail, retry or use_default, got 'skip'",
            50,
        ),
        (
            "on_error: {action: retyr}",
            "on_error action must be fail, retry or use_default, got 'retyr' "
            "(did you mean 'retry'?)",
            50,
        ),
    ],
)
def test_step_field_checks(step: str, message: str, column: int) -> None:
    error = load_error(f"steps:\n  - {{id: a, component: /builtin/noop, {step}}}\n")
    assert str(error) == f"<string>:2:{column}: step 'a': {message}"


def test_start_without_next() -> None:
    error = load_error("start: a\nsteps:\n  - {id: a, component: /builtin/noop}\n")
    assert str(error) == "<string>:1:1: start only applies to flows whose steps use next"


def test_self_reference_is_a_cycle() -> None:
    error = load_error(
        "steps:\n  - {id: a, component: /builtin/noop}\n"
        "  - {id: b, component: /builtin/noop, input: {$step: b}}\n"
    )
    assert str(error) == (
        "<string>:3:47: step 'b': reference cycle: b -> b; a step cannot depend on its own "
        "output (use next for loops)"
    )


def test_next_graphs_may_loop_and_refer_forward() -> None:
    flow = load_flow(
        "steps:\n"
        "  - id: a\n"
        "    component: /builtin/noop\n"
        "    input: {b: {$step: b, on_skip: {action: use_default}}}\n"
        "    next: b\n"
        "  - {id: b, component: /builtin/noop, input: {a: {$step: a}}}\n"
        "output: {$step: b}\n"
    )
    assert flow.run({}).result == {"a": {"b": None}}


@pytest.mark.parametrize(
    ("test", "message"),
    [
        (
            "  cases:\n    - {name: x, output: {result: 1}}\n",
            "<string>:4:17: a test case's output is {outcome: success, result: ...} or "
            "{outcome: failed, error: {code, message}}",
        ),
        ("  cases: {}\n", "<string>:3:3: test.cases must be a list"),
        (
            "  config: {}\n  configFile: x.yml\n",
            "<string>:3:3: test.config and test.config_file exclude each other; keep one",
        ),
        (
            "  case: []\n",
            "<string>:3:3: unknown key 'case' in test (did you mean 'cases'?), "
            "which Stepflow ignores",
        ),
    ],
)
def test_test_section_checks(test: str, message: str) -> None:
    # strict: an unknown key (a warning by default) is an error too
    assert str(load_error("output: 1\ntest:\n" + test, strict=True)) == message


def test_missing_file() -> None:
    error = load_error("no-such-flow.yaml")
    assert str(error) == "no-such-flow.yaml: no such file"
    assert where(error) == ("no-such-flow.yaml", None, None, None)


def test_file_errors_name_the_path_as_given(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("output: 1\nstpes: []\n")
    error = load_error(str(flow), strict=True)
    assert str(error) == (
        f"{flow}:2:1: unknown key 'stpes' in the flow (did you mean 'steps'?), "
        "which Stepflow ignores"
    )
    # A Path works too, and is reported the same way.
    with pytest.raises(LoadError) as caught:
        load_flow(flow, strict=True)
    assert str(caught.value) == str(error)


def test_unsafe_scalar_tags_are_refused() -> None:
    error = load_error("output: !!python/name:os.system x\n")
    assert str(error) == (
        "<string>:1:9: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/name:os.system'"
    )


def test_unsafe_collection_tags_are_refused() -> None:
    error = load_error("output: !!python/object/apply:os.system ['true']\n")
    assert "invalid YAML" in error.message


def test_unquoted_dates_are_strings_as_in_yaml_1_2() -> None:
    flow = load_flow("output: {when: 2024-05-01, also: {$input: d}}\n")
    assert flow.run({"d": 1}).result == {"when": "2024-05-01", "also": 1}


def test_yaml_1_2_scalars() -> None:
    flow = load_flow("output: [yes, no, on, off, 0755, 0x1f, 1e3, true, null, ~]\n")
    assert flow.run({}).result == ["yes", "no", "on", "off", 755, 31, 1000.0, True, None, None]


def test_load_error_is_a_value_error_and_pickles() -> None:
    error = load_error(
        "steps:\n  - id: a\n    component: /builtin/noop\n    inptu: {}\n", strict=True
    )
    assert isinstance(error, ValueError)
    assert isinstance(error, PocketbatchError)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert where(copy) == where(error) == ("<string>", 4, 5, "a")


# --------------------------------------------------------------------------- config files

FLOW = "steps:\n  - {id: a, component: /mock/x, input: {in: 1}}\noutput: {$step: a}\n"

MOCK_PLUGIN = """\
plugins:
  mock:
    type: mock
    components:
      /x:
        behaviors:
          { in: 1 }:
            outcome: %s
            result: {out: 1}
routes:
  "/mock/{*component}":
    - plugin: %s
"""


def config_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_stepflow_config_works_through_load_flow(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "stepflow-config.yml", MOCK_PLUGIN % ("success", "mock"))
    assert load_flow(FLOW, config=cfg).run({}).to_dict() == {
        "outcome": "success",
        "result": {"out": 1},
    }
    assert load_flow(FLOW, config=str(cfg)).run({}).result == {"out": 1}


def test_stepflow_config_unknown_plugin(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "stepflow-config.yml", MOCK_PLUGIN % ("success", "mokc"))
    error = load_error(FLOW, config=cfg)
    assert str(error) == f"{cfg}:12:7: unknown plugin 'mokc' (did you mean 'mock'?)"
    assert where(error) == (str(cfg), 12, 7, None)


def test_stepflow_config_unknown_outcome(tmp_path: Path) -> None:
    cfg = config_file(tmp_path, "stepflow-config.yml", MOCK_PLUGIN % ("sucess", "mock"))
    error = load_error(FLOW, config=str(cfg))
    assert str(error) == f"{cfg}:8:13: unknown outcome 'sucess' (did you mean 'success'?)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "plugins:\n  mock: {}\n",
            "2:3: plugin 'mock' needs a 'type' (builtin, mock, grpc, mcp, ...)",
        ),
        ("plugins: [1]\n", "1:1: 'plugins' must be a mapping, got a list"),
        (
            "plugins:\n  m: {type: mock}\nroutes:\n  mock: [{plugin: m}]\n",
            "4:3: a route must start with '/', like '/mock/{*component}'; got 'mock'",
        ),
        (
            "plugins:\n  m: {type: mock}\nroutes:\n  /mock/{*c}: {plugin: m}\n",
            "4:3: route '/mock/{*c}' must be a list of rules like [{plugin: name}], got a mapping",
        ),
    ],
)
def test_stepflow_config_structure_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = config_file(tmp_path, "stepflow-config.yml", text)
    assert str(load_error(FLOW, config=cfg)) == f"{cfg}:{message}"


def test_component_routed_to_a_plugin_pocketbatch_cannot_run(tmp_path: Path) -> None:
    cfg = config_file(
        tmp_path,
        "stepflow-config.yml",
        "plugins:\n  python:\n    type: grpc\n    queueName: python\n"
        'routes:\n  "/mock/{*component}":\n    - plugin: python\n',
    )
    error = load_error(FLOW, config=cfg)
    assert str(error) == (
        f"<string>:2:13: step 'a': component '/mock/x' is routed to plugin 'python' of type "
        f"'grpc' ({cfg}:6:3), which pocketbatch cannot run; provide it instead with a "
        "ComponentRegistry (registry.register('/mock/x', function)), a route to a Python "
        "module in pocketbatch.yaml, or a mock (the plugin has no 'command': its worker is "
        "remote, and pocketbatch runs only workers it launches)"
    )
    assert where(error) == ("<string>", 2, 13, "a")
    # A registry wins over the config, so the same flow loads with one.
    reg = ComponentRegistry()
    reg.register("/mock/x", lambda data: {"from": "registry"})
    assert load_flow(FLOW, config=cfg, registry=reg).run({}).result == {"from": "registry"}


def test_mock_plugin_without_the_component(tmp_path: Path) -> None:
    cfg = config_file(
        tmp_path, "stepflow-config.yml", (MOCK_PLUGIN % ("success", "mock")).replace("/x:", "/y:")
    )
    error = load_error(FLOW, config=cfg)
    assert str(error) == (
        "<string>:2:13: step 'a': component '/mock/x' is routed to mock plugin 'mock', which has "
        "no component '/mock/x' or '/x' (did you mean '/mock/y'?); tried: route "
        f"'/mock/{{*component}}' ({cfg}:11:3) -> mock plugin 'mock'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "mocks:\n  /mock/x:\n    behaviours: []\n",
            "3:5: unknown key 'behaviours' in mock '/mock/x' (did you mean 'behaviors'?)",
        ),
        (
            "mock:\n  /mock/x:\n    behaviors: []\n",
            "1:1: unknown key 'mock' (did you mean 'mocks'?)",
        ),
        (
            "mocks:\n"
            "  /mock/x:\n"
            "    behaviors:\n"
            "      - {input: {in: 1}, outcome: failed, error: oops}\n",
            "4:43: 'outcome: failed' needs an 'error' mapping with a 'code' and a 'message', "
            "got a string ('oops')",
        ),
        (
            "routes: [1\n",
            "2:1: invalid YAML: while parsing a flow sequence did not find expected ',' or ']'",
        ),
    ],
)
def test_pocketbatch_config_errors(tmp_path: Path, text: str, message: str) -> None:
    cfg = config_file(tmp_path, "pocketbatch.yaml", text)
    assert str(load_error(FLOW, config=cfg)) == f"{cfg}:{message}"


def test_missing_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "nope.yml"
    assert str(load_error(FLOW, config=cfg)) == f"{cfg}: no such file"


def test_config_beside_the_flow_is_found_and_its_errors_reported(tmp_path: Path) -> None:
    config_file(tmp_path, "stepflow-config.yml", MOCK_PLUGIN % ("success", "mock"))
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    assert load_flow(flow).run({}).result == {"out": 1}
    # pocketbatch.yaml beside the flow wins over stepflow-config.yml.
    bad = config_file(tmp_path, "pocketbatch.yaml", "mock: {}\n")
    assert str(load_error(str(flow))) == f"{bad}:1:1: unknown key 'mock' (did you mean 'mocks'?)"


# --------------------------------------------------------------------------- nested flows


def test_nested_flow_written_in_the_file_is_checked_at_load_time() -> None:
    """A mistake inside an inline sub-flow is a LoadError pointing into the file."""
    with pytest.raises(LoadError) as caught:
        load_flow(
            "steps:\n"
            "  - id: m\n"
            "    component: /builtin/eval\n"
            "    input: {flow: {steps: 1}, input: 1}\n"
            "output: {$step: m}\n"
        )
    assert str(caught.value) == "<string>:4:20: steps must be a list, got int"


def test_nested_flow_computed_at_run_time_fails_as_invalid_input() -> None:
    """A sub-flow that only exists at run time fails its step with INVALID_INPUT."""
    flow = load_flow(
        "steps:\n"
        "  - id: m\n"
        "    component: /builtin/eval\n"
        "    input: {flow: {$input: f}, input: 1}\n"
        "output: {$step: m}\n"
    )
    assert flow.run({"f": {"steps": 1}}).to_dict() == {
        "outcome": "failed",
        "error": {
            "code": "INVALID_INPUT",
            "message": "nested flow: <string> (nested flow): steps must be a list, got int",
        },
    }


def test_missing_subflow_file_is_a_load_error(tmp_path: Path) -> None:
    """A sub-flow path written in the file must exist when the flow loads."""
    flow_path = tmp_path / "flow.yaml"
    flow_path.write_text(
        "steps:\n"
        "  - id: m\n"
        "    component: /builtin/map\n"
        "    input: {workflow: missing.yaml, items: [1]}\n"
        "output: {$step: m}\n"
    )
    with pytest.raises(LoadError, match=r"missing\.yaml: no such file"):
        load_flow(flow_path)
