"""The ``pocketbatch`` command line: ``run``, ``validate``, ``visualize`` and ``test``.

End-to-end checks start the CLI as a real subprocess (``python -m pocketbatch``);
the many small cases call :func:`pocketbatch.cli.main` in-process with ``capsys``.

The contract under test: results on stdout (one line of JSON for ``run``),
diagnostics on stderr, and exit codes 0 (success), 1 (the flow or a test case
failed), 2 (bad usage, or a flow or config that does not load).

Fixture flows, configs and inputs live in ``tests/cli_data/``.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support import run_cli

from pocketbatch.cli import main

DATA = Path(__file__).parent.parent / "cli_data"
REPO = Path(__file__).parent.parent.parent

GREET = DATA / "greet.yaml"
LOOP = DATA / "review_loop.yaml"
VARIABLE = DATA / "variable.yaml"
ECHO = DATA / "echo.yaml"
CLASSIFY = DATA / "mocked" / "classify.yaml"  # no config beside it
AUTO_CLASSIFY = DATA / "autoconfig" / "classify.yaml"  # pocketbatch.yaml beside it
POCKETBATCH_CONFIG = DATA / "configs" / "classify.pocketbatch.yaml"
STEPFLOW_CONFIG = DATA / "configs" / "stepflow-config.yml"

LOCATED = r":\d+:\d+: "  # the ``:line:column: `` after a file name


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        """stdout as exactly one line of JSON."""
        assert self.out.endswith("\n"), self.out
        assert self.out.count("\n") == 1, f"expected one line, got {self.out!r}"
        return json.loads(self.out)


def cli(*args: str | Path, cwd: Path = REPO, stdin: str | None = None) -> Ran:
    """Run ``python -m pocketbatch`` as a real subprocess."""
    proc = run_cli(*args, cwd=cwd, input=stdin, env={"PYTHONIOENCODING": "utf-8"})
    return Ran(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def call(capsys: pytest.CaptureFixture[str]) -> Any:
    """``call(*args)``: run :func:`main` in-process; usage errors raised by argparse
    (``SystemExit``) give their exit code like any other."""

    def call(*args: str | Path) -> Ran:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return call


def strict_json(text: str) -> Any:
    """JSON as RFC 8259 has it: no NaN, Infinity or -Infinity."""

    def reject(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=reject)


# ================================================================== run: success


def test_run_subprocess_prints_one_line_of_json_and_exits_0() -> None:
    ran = cli("run", "--flow", GREET, "--input", '{"name": "Ada"}')
    assert ran.code == 0, ran.err
    assert ran.err == ""
    assert ran.json == {
        "outcome": "success",
        "result": {
            "greeting": "Hello",
            "name": "Ada",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello to Ada"},
            ],
        },
    }


def test_run_subprocess_from_another_directory_with_a_relative_flow_path(tmp_path: Path) -> None:
    shutil.copy(GREET, tmp_path / "flow.yaml")
    ran = cli("run", "--flow", "flow.yaml", "--input", '{"name": "Ada"}', cwd=tmp_path)
    assert (ran.code, ran.err) == (0, "")
    assert ran.json["result"]["name"] == "Ada"


def test_run_keeps_non_ascii_text_as_utf8(call: Any) -> None:
    ran = call("run", "--flow", GREET, "--input", '{"name": "Zoë ✓"}')
    assert ran.code == 0
    assert '"name":"Zoë ✓"' in ran.out
    assert ran.json["result"]["messages"][1]["content"] == "Say hello to Zoë ✓"


def test_run_subprocess_non_ascii_survives_the_pipe() -> None:
    ran = cli("run", "--flow", GREET, "--input", '{"name": "Zoë ✓"}')
    assert ran.code == 0
    assert ran.json["result"]["name"] == "Zoë ✓"


def test_run_input_file_json(call: Any) -> None:
    ran = call("run", "--flow", GREET, "--input-file", DATA / "inputs" / "ada.json")
    assert (ran.code, ran.err) == (0, "")
    assert ran.json["result"]["name"] == "Ada"


def test_run_input_file_yaml(call: Any) -> None:
    ran = call("run", "--flow", GREET, "--input-file", DATA / "inputs" / "grace.yaml")
    assert ran.code == 0
    assert ran.json["result"]["name"] == "Grace"


def test_run_input_file_dash_reads_stdin_in_process(
    call: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "Stdin"}'))
    ran = call("run", "--flow", GREET, "--input-file", "-")
    assert (ran.code, ran.err) == (0, "")
    assert ran.json["result"]["name"] == "Stdin"


def test_run_input_file_dash_reads_stdin_subprocess() -> None:
    ran = cli("run", "--flow", GREET, "--input-file", "-", stdin='{"name": "Piped"}\n')
    assert (ran.code, ran.err) == (0, "")
    assert ran.json["result"]["name"] == "Piped"


@pytest.mark.parametrize(
    ("given", "value"),
    [
        ("v=3", 3),
        ("v=-2.5", -2.5),
        ("v=true", True),
        ("v=null", None),
        ('v={"a": [1, true, null]}', {"a": [1, True, None]}),
        ("v=[1, 2]", [1, 2]),
        ('v="007"', "007"),  # a JSON string: the quotes go
        ("v=007", "007"),  # not JSON: taken as the plain string
        ("v=hello world", "hello world"),
        ("v=a=b", "a=b"),  # only the first '=' splits
        ("v=", ""),
        ("v={not json", "{not json"),
    ],
)
def test_run_var_is_json_when_it_parses_else_a_string(call: Any, given: str, value: Any) -> None:
    ran = call("run", "--flow", VARIABLE, "--input", "{}", "--var", given)
    assert ran.code == 0, ran.err
    assert ran.json == {"outcome": "success", "result": value}


def test_run_var_repeated_last_one_wins(call: Any) -> None:
    ran = call("run", "--flow", VARIABLE, "--input", "{}", "--var", "v=1", "--var", "v=2")
    assert ran.json["result"] == 2


def test_run_vars_reach_variable_expressions_in_steps_and_output() -> None:
    ran = cli(
        "run",
        "--flow",
        GREET,
        "--input",
        '{"name": "Ada"}',
        "--var",
        "greeting=Hi there",
        "--var",
        "tone=Shout.",
    )
    assert (ran.code, ran.err) == (0, "")
    result = ran.json["result"]
    assert result["greeting"] == "Hi there"
    assert result["messages"][0] == {"role": "system", "content": "Shout."}


def test_run_undefined_variable_fails_the_flow(call: Any) -> None:
    ran = call("run", "--flow", VARIABLE, "--input", "{}")
    assert ran.code == 1
    assert ran.json == {
        "outcome": "failed",
        "error": {"code": "EXPRESSION_FAILURE", "message": "Undefined variable: v"},
    }


def test_run_with_a_pocketbatch_config_of_mocks(call: Any) -> None:
    ran = call(
        "run", "--flow", CLASSIFY, "--config", POCKETBATCH_CONFIG, "--input", '{"text": "bad"}'
    )
    assert (ran.code, ran.err) == (0, "")
    assert ran.json == {"outcome": "success", "result": "negative"}


def test_run_with_a_stepflow_config_subprocess() -> None:
    ran = cli("run", "--flow", CLASSIFY, "--config", STEPFLOW_CONFIG, "--input", '{"text": "good"}')
    assert (ran.code, ran.err) == (0, "")
    assert ran.json == {"outcome": "success", "result": "stepflow-positive"}


def test_run_discovers_the_config_beside_the_flow() -> None:
    ran = cli("run", "--flow", AUTO_CLASSIFY, "--input", '{"text": "good"}')
    assert (ran.code, ran.err) == (0, "")
    assert ran.json == {"outcome": "success", "result": "auto-positive"}


def test_run_explicit_config_beats_the_one_beside_the_flow(call: Any) -> None:
    ran = call(
        "run", "--flow", AUTO_CLASSIFY, "--config", STEPFLOW_CONFIG, "--input", '{"text": "good"}'
    )
    assert ran.json == {"outcome": "success", "result": "stepflow-positive"}


def test_run_does_not_look_for_a_config_in_the_working_directory(tmp_path: Path) -> None:
    shutil.copy(DATA / "autoconfig" / "pocketbatch.yaml", tmp_path / "pocketbatch.yaml")
    ran = cli("run", "--flow", CLASSIFY, "--input", '{"text": "good"}', cwd=tmp_path)
    assert ran.code == 2
    assert ran.out == ""
    assert "unknown component '/mock/classify'" in ran.err


def test_run_control_flow_file(call: Any) -> None:
    ran = call("run", "--flow", LOOP, "--input", '{"text": "t", "ok": true}')
    assert (ran.code, ran.json) == (0, {"outcome": "success", "result": "t"})


def test_run_control_flow_output_on_a_step_not_taken_is_skipped(call: Any) -> None:
    ran = call("run", "--flow", LOOP, "--input", '{"text": "t", "ok": false}')
    assert ran.code == 1
    assert ran.json == {"outcome": "skipped"}
    assert "skipped" in ran.err


# ================================================================== run: the flow fails


def test_run_failing_component_subprocess() -> None:
    ran = cli("run", "--flow", DATA / "load_missing.yaml", "--input", '{"path": "nope.json"}')
    assert ran.code == 1
    assert ran.json == {
        "outcome": "failed",
        "error": {
            "code": "NOT_FOUND",
            "message": f"/builtin/load_file: no such file: {DATA.resolve() / 'nope.json'}",
        },
    }
    assert ran.err.startswith("pocketbatch: the flow failed: /builtin/load_file: no such file")
    assert ran.err.count("\n") == 1


def test_run_failing_mock_keeps_its_code_and_message(call: Any) -> None:
    ran = call(
        "run", "--flow", CLASSIFY, "--config", POCKETBATCH_CONFIG, "--input", '{"text": "boom"}'
    )
    assert ran.code == 1
    assert ran.json == {
        "outcome": "failed",
        "error": {"code": "RATE_LIMITED", "message": "slow down"},
    }
    assert ran.err == "pocketbatch: the flow failed: slow down\n"


def test_run_failing_stepflow_mock_keeps_an_integer_code(call: Any) -> None:
    ran = call(
        "run", "--flow", CLASSIFY, "--config", STEPFLOW_CONFIG, "--input", '{"text": "boom"}'
    )
    assert ran.code == 1
    assert ran.json == {
        "outcome": "failed",
        "error": {"code": 7, "message": "resource unavailable"},
    }


def test_run_mock_without_a_matching_behavior_fails(call: Any) -> None:
    ran = call(
        "run", "--flow", CLASSIFY, "--config", POCKETBATCH_CONFIG, "--input", '{"text": "meh"}'
    )
    assert ran.code == 1
    error = ran.json["error"]
    # As in Stepflow: the mock plugin's own failure, with its error stack as data.
    assert (error["code"], error["message"]) == ("UNREACHABLE", 'step "classify" failed')
    detail = error["data"]["stack"][0]["attachments"][2]
    assert detail == 'No behavior defined for /mock/classify on {"text":"meh"}'


def test_run_no_input_schema_runs_as_stepflow(call: Any) -> None:
    """--no-input-schema: an input the schema refuses runs, as in Stepflow."""
    ran = call("run", "--flow", GREET, "--input", '{"name": 5}', "--no-input-schema")
    assert ran.code == 0, ran.err
    assert ran.json["outcome"] == "success"
    assert call("run", "--flow", GREET, "--input", '{"name": 5}').code == 1


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ("{}", "input $: 'name' is a required property"),
        ('{"name": 5}', "input $.name: 5 is not of type 'string'"),
        ('{"name": ""}', "input $.name: '' should be non-empty"),
        ('"Ada"', "input $: 'Ada' is not of type 'object'"),
    ],
)
def test_run_invalid_input_for_the_schema(call: Any, input: str, message: str) -> None:
    ran = call("run", "--flow", GREET, "--input", input)
    assert ran.code == 1
    assert ran.json == {"outcome": "failed", "error": {"code": "INVALID_INPUT", "message": message}}
    assert ran.err == f"pocketbatch: the flow failed: {message}\n"


def test_run_invalid_input_subprocess() -> None:
    ran = cli("run", "--flow", GREET, "--input", '{"name": "Ada", "extra": 1}')
    assert ran.code == 1
    assert ran.json["outcome"] == "failed"
    assert ran.json["error"]["code"] == "INVALID_INPUT"
    assert "extra" in ran.json["error"]["message"]


# ================================================================== load errors: exit 2


def assert_load_error(ran: Ran, file: str | Path, line: int, column: int, text: str) -> None:
    assert ran.code == 2
    assert ran.out == ""
    assert ran.err.startswith(f"pocketbatch: {file}:{line}:{column}: "), ran.err
    assert text in ran.err


def test_load_error_bad_yaml_subprocess() -> None:
    ran = cli("run", "--flow", "tests/cli_data/bad_yaml.yaml", "--input", "{}")
    assert_load_error(ran, "tests/cli_data/bad_yaml.yaml", 6, 7, "invalid YAML")


@pytest.mark.parametrize("command", ["run", "validate", "visualize", "test"])
def test_unknown_key_is_a_warning_in_every_command(call: Any, command: str) -> None:
    """A key Stepflow ignores loads (as in Stepflow), with a warning at file:line:column."""
    flow = DATA / "unknown_key.yaml"
    args = ["run", "--flow", flow, "--input", "{}"] if command == "run" else [command, flow]
    ran = call(*args)
    assert ran.code == 0
    assert ran.err == (
        f"pocketbatch: warning: {flow}:5:5: step 'shout': unknown key 'inptu' in a step "
        "(did you mean 'input'?), which Stepflow ignores\n"
    )


def test_validate_strict_makes_warnings_errors(call: Any) -> None:
    flow = DATA / "unknown_key.yaml"
    ran = call("validate", "--strict", flow)
    assert_load_error(
        ran, flow, 5, 5, "step 'shout': unknown key 'inptu' in a step (did you mean 'input'?)"
    )
    assert call("validate", "--strict", GREET).code == 0


def test_load_error_unknown_component(call: Any) -> None:
    flow = DATA / "unknown_component.yaml"
    ran = call("run", "--flow", flow, "--input", "{}")
    assert_load_error(
        ran,
        flow,
        7,
        5,
        "step 'second': unknown component '/builtin/create_mesages' "
        "(did you mean '/builtin/create_messages'?)",
    )


def test_load_error_component_only_a_config_provides(call: Any) -> None:
    ran = call("validate", CLASSIFY)
    assert_load_error(ran, CLASSIFY, 5, 5, "unknown component '/mock/classify'")


def test_load_error_unknown_component_subprocess() -> None:
    ran = cli("validate", "tests/cli_data/unknown_component.yaml")
    assert_load_error(ran, "tests/cli_data/unknown_component.yaml", 7, 5, "create_mesages")


def test_load_error_is_reported_before_the_input_is_read(call: Any) -> None:
    ran = call("run", "--flow", DATA / "bad_yaml.yaml", "--input-file", DATA / "no-such-input.json")
    assert ran.code == 2
    assert "invalid YAML" in ran.err


def test_missing_flow_file_subprocess(tmp_path: Path) -> None:
    ran = cli("run", "--flow", "nowhere.yaml", "--input", "{}", cwd=tmp_path)
    assert ran.code == 2
    assert ran.out == ""
    assert ran.err == "pocketbatch: nowhere.yaml: no such file\n"


@pytest.mark.parametrize("command", ["validate", "visualize", "test"])
def test_missing_flow_file_for_other_commands(call: Any, tmp_path: Path, command: str) -> None:
    ran = call(command, tmp_path / "nowhere.yaml")
    assert (ran.code, ran.out) == (2, "")
    assert "no such file" in ran.err


def test_missing_config_file(call: Any, tmp_path: Path) -> None:
    ran = call("validate", GREET, "--config", tmp_path / "nope.yaml")
    assert (ran.code, ran.out) == (2, "")
    assert f"{tmp_path / 'nope.yaml'}: no such file" in ran.err


def test_bad_config_file_points_at_the_config(call: Any, tmp_path: Path) -> None:
    config = tmp_path / "pocketbatch.yaml"
    config.write_text("mocks: {}\nroutez: {}\n", encoding="utf-8")
    ran = call("validate", GREET, "--config", config)
    assert_load_error(ran, config, 2, 1, "unknown key 'routez'")


def test_empty_flow_file(call: Any, tmp_path: Path) -> None:
    flow = tmp_path / "empty.yaml"
    flow.write_text("", encoding="utf-8")
    ran = call("validate", flow)
    assert_load_error(ran, flow, 1, 1, "the document is empty")


# ================================================================== usage errors: exit 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--flow", GREET, "--input", "{}", "--input-file", "x.json"],
            "not allowed with argument",
        ),
        (["run", "--input", "{}"], "the following arguments are required: --flow"),
        (["validate"], "the following arguments are required: flow"),
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate", "x"], "invalid choice: 'frobnicate'"),
        (["run", "--flow", GREET, "--input", "{}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argparse_usage_errors(call: Any, args: list[Any], message: str) -> None:
    ran = call(*args)
    assert (ran.code, ran.out) == (2, "")
    assert "usage: pocketbatch" in ran.err
    assert message in ran.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{bad"], "pocketbatch: --input is not valid JSON: "),
        (["--input", ""], "pocketbatch: --input is not valid JSON: "),
        (
            ["--input", "{}", "--var", "novalue"],
            "pocketbatch: --var takes NAME=VALUE, got 'novalue'",
        ),
        (["--input", "{}", "--var", "=3"], "pocketbatch: --var takes NAME=VALUE, got '=3'"),
        (["--input-file", "does-not-exist.json"], "pocketbatch: --input-file: "),
    ],
)
def test_run_usage_errors(call: Any, args: list[str], message: str) -> None:
    ran = call("run", "--flow", GREET, *args)
    assert (ran.code, ran.out) == (2, "")
    assert ran.err.startswith(message), ran.err


def test_bad_var_is_a_usage_error_for_validate_too(call: Any) -> None:
    ran = call("validate", GREET, "--var", "oops")
    assert (ran.code, ran.out) == (2, "")
    assert "--var takes NAME=VALUE" in ran.err


def test_run_usage_errors_subprocess() -> None:
    no_input = cli("run", "--flow", GREET)
    bad_json = cli("run", "--flow", GREET, "--input", "{bad")
    bad_var = cli("run", "--flow", GREET, "--input", "{}", "--var", "novalue")
    for ran in (no_input, bad_json, bad_var):
        assert (ran.code, ran.out) == (2, ""), ran
        assert ran.err
    assert "--input is not valid JSON" in bad_json.err
    assert "--var takes NAME=VALUE" in bad_var.err


def test_run_input_file_that_does_not_parse_points_at_the_spot(call: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": \n', encoding="utf-8")
    ran = call("run", "--flow", GREET, "--input-file", bad)
    assert_load_error(ran, bad, 2, 1, "")


def test_run_empty_stdin_is_an_error(call: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    ran = call("run", "--flow", GREET, "--input-file", "-")
    assert (ran.code, ran.out) == (2, "")
    assert "<stdin>" in ran.err
    assert "empty" in ran.err


# ================================================================== --no-python-imports


SHOUT_MODULE = """\
def shout(data):
    return {"text": data["text"].upper() + "!"}
"""

SHOUT_FLOW = """\
steps:
  - id: shout
    component: /python/pb_cli_test_shout.shout
    input: {text: {$input: text}}
output: {$step: shout, path: text}
"""


@pytest.fixture
def python_flow(tmp_path: Path) -> Path:
    (tmp_path / "pb_cli_test_shout.py").write_text(SHOUT_MODULE, encoding="utf-8")
    flow = tmp_path / "flow.yaml"
    flow.write_text(SHOUT_FLOW, encoding="utf-8")
    return flow


def test_python_component_runs_without_the_flag(python_flow: Path, tmp_path: Path) -> None:
    # cwd elsewhere: the module is found because it is beside the flow.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = cli("run", "--flow", python_flow, "--input", '{"text": "hi"}', cwd=elsewhere)
    assert (ran.code, ran.err) == (0, "")
    assert ran.json == {"outcome": "success", "result": "HI!"}


def test_no_python_imports_refuses_the_component_subprocess(python_flow: Path) -> None:
    ran = cli("run", "--flow", python_flow, "--input", '{"text": "hi"}', "--no-python-imports")
    assert_load_error(
        ran,
        python_flow,
        3,
        5,
        "step 'shout': component '/python/pb_cli_test_shout.shout' would import Python code, "
        "but /python/ imports are disabled here",
    )


@pytest.mark.parametrize("command", ["validate", "visualize", "test"])
def test_no_python_imports_refuses_in_every_command(
    call: Any, python_flow: Path, command: str
) -> None:
    ran = call(command, python_flow, "--no-python-imports")
    assert_load_error(ran, python_flow, 3, 5, "/python/ imports are disabled")
    assert "pb_cli_test_shout" not in sys.modules  # refused before importing anything


def test_route_walk_to_eval_is_refused_by_run_subprocess(tmp_path: Path) -> None:
    """Issue 10: the cookbook's config routes /data to components.py, which imports
    re; '/data/re/enum/bltns/eval' walked to builtins.eval even with
    --no-python-imports. It is now a load error naming the path."""
    cookbook = REPO / "cookbook" / "data-pipeline"
    for name in ("pocketbatch.yaml", "components.py"):
        shutil.copy(cookbook / name, tmp_path / name)
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "steps:\n  - id: x\n    component: /data/re/enum/bltns/eval\n"
        "    input: \"__import__('subprocess').getoutput('id')\"\noutput: {$step: x}\n",
        encoding="utf-8",
    )
    ran = cli("run", "--flow", flow, "--input", "{}", "--no-python-imports")
    assert_load_error(
        ran, flow, 3, 5, "step 'x': component '/data/re/enum/bltns/eval' is not allowed"
    )
    assert "uid=" not in ran.out + ran.err


def test_no_python_imports_does_not_affect_builtins(call: Any) -> None:
    ran = call("run", "--flow", GREET, "--input", '{"name": "Ada"}', "--no-python-imports")
    assert ran.code == 0


# ================================================================== validate


def test_validate_prints_a_one_line_summary_subprocess() -> None:
    ran = cli("validate", "tests/cli_data/greet.yaml")
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == "tests/cli_data/greet.yaml: ok (greet: 2 steps, data-flow, 3 test cases)\n"


def test_validate_control_flow_file(call: Any) -> None:
    ran = call("validate", LOOP)
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == f"{LOOP}: ok (review-loop: 4 steps, control-flow, 0 test cases)\n"


def test_validate_uses_the_file_name_when_the_flow_has_none(call: Any) -> None:
    ran = call("validate", VARIABLE)
    assert ran.out == f"{VARIABLE}: ok (variable.yaml: 0 steps, data-flow, 0 test cases)\n"


def test_validate_with_a_config(call: Any) -> None:
    ran = call("validate", CLASSIFY, "--config", STEPFLOW_CONFIG)
    assert ran.code == 0
    assert ran.out.startswith(f"{CLASSIFY}: ok (classify: ")


def test_validate_says_1_step_not_1_steps(call: Any) -> None:
    ran = call("validate", DATA / "load_missing.yaml")
    assert "(load-missing: 1 step, data-flow, 0 test cases)" in ran.out


def test_validate_does_not_run_anything(call: Any) -> None:
    # load_missing's step would fail if run; validate only loads.
    ran = call("validate", DATA / "load_missing.yaml")
    assert ran.code == 0


def test_validate_invalid_flow_exits_2_subprocess() -> None:
    ran = cli("validate", "--strict", "tests/cli_data/unknown_key.yaml")
    assert_load_error(ran, "tests/cli_data/unknown_key.yaml", 5, 5, "unknown key 'inptu'")


# ================================================================== visualize


def mermaid(text: str) -> tuple[dict[str, str], set[tuple[str, str | None, str]]]:
    """Nodes ``{id: label}`` and edges ``{(from label, edge label, to label)}``."""
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str | None, str]] = []
    for line in text.splitlines()[1:]:
        line = line.strip()
        edge = re.fullmatch(r'(\w+) -->(?:\|"([^"]*)"\|)? (\w+)', line)
        if edge:
            edges.append((edge[1], edge[2], edge[3]))
            continue
        node = re.fullmatch(r'(\w+)(?:\["|\(\[")([^"<]*)(?:<br/>[^"]*)?(?:"\]|"\]\))', line)
        assert node, f"not a node or an edge: {line!r}"
        nodes[node[1]] = node[2]
    return nodes, {(nodes[a], label, nodes[b]) for a, label, b in edges}


def test_visualize_data_flow_subprocess() -> None:
    ran = cli("visualize", GREET)
    assert (ran.code, ran.err) == (0, "")
    assert ran.out.splitlines()[0] == "flowchart TD"
    nodes, edges = mermaid(ran.out)
    assert set(nodes.values()) == {"input", "prompt", "unused", "output"}
    assert ("input", None, "prompt") in edges
    assert ("prompt", None, "output") in edges
    assert not any("unused" in (a, b) for a, _, b in edges)  # nothing needs it
    assert '"prompt<br/>/builtin/create_messages"' in ran.out


def test_visualize_next_based_file_has_labelled_edges(call: Any) -> None:
    ran = call("visualize", LOOP)
    assert (ran.code, ran.err) == (0, "")
    lines = ran.out.splitlines()
    assert lines[0] == "flowchart TD"
    assert all(line.startswith("    ") for line in lines[1:])
    nodes, edges = mermaid(ran.out)
    assert set(nodes.values()) == {"draft", "review", "redraft", "publish"}
    assert edges == {
        ("draft", None, "review"),
        ("review", "approve", "publish"),
        ("review", "revise", "redraft"),
    }


def test_visualize_invalid_flow_exits_2(call: Any) -> None:
    ran = call("visualize", DATA / "bad_yaml.yaml")
    assert_load_error(ran, DATA / "bad_yaml.yaml", 6, 7, "invalid YAML")


# ================================================================== test


def test_test_all_cases_pass_subprocess() -> None:
    ran = cli("test", GREET)
    assert (ran.code, ran.err) == (0, "")
    assert ran.out.splitlines() == [
        "PASS ada",
        "PASS a name is required",
        "PASS no expected output, the run just must not fail",
        "3 passed, 0 failed",
    ]


def test_test_failing_cases_show_the_mismatch_indented(call: Any) -> None:
    ran = call("test", DATA / "tests_failing.yaml")
    assert ran.code == 1
    assert ran.out.splitlines() == [
        "PASS matches",
        "FAIL wrong text",
        '    $.result.text: expected "B", got "b"',
        "FAIL expects a failure",
        '    $.outcome: expected "failed", got "success"',
        '    $.error: missing (expected {"code": "INVALID_INPUT", "message": "nope"})',
        "PASS also matches",
        "2 passed, 2 failed",
    ]


def test_test_failing_cases_subprocess() -> None:
    ran = cli("test", DATA / "tests_failing.yaml")
    assert ran.code == 1
    assert ran.out.splitlines()[-1] == "2 passed, 2 failed"
    assert "FAIL wrong text" in ran.out.splitlines()


def test_test_case_without_expected_output_fails_when_the_run_fails(
    call: Any, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "steps:\n"
        "  - id: load\n"
        "    component: /builtin/load_file\n"
        "    input: {path: missing.json}\n"
        "output: {$step: load}\n"
        "test:\n"
        "  cases:\n"
        "    - name: just runs\n"
        "      input: {}\n",
        encoding="utf-8",
    )
    ran = call("test", flow)
    assert ran.code == 1
    lines = ran.out.splitlines()
    assert lines[0] == "FAIL just runs"
    assert lines[1].startswith("    the run failed: /builtin/load_file: no such file")
    assert lines[-1] == "0 passed, 1 failed"


def classify_flow(folder: Path, test_section: str) -> Path:
    """``mocked/classify.yaml`` copied into ``folder`` with ``test_section`` appended."""
    flow = folder / "flow.yaml"
    text = (DATA / "mocked" / "classify.yaml").read_text(encoding="utf-8")
    flow.write_text(text + test_section, encoding="utf-8")
    return flow


GOOD_CASE = """\
  cases:
    - name: good
      input: {text: good}
      output: {outcome: success, result: stepflow-positive}
"""


def test_test_with_a_config(call: Any, tmp_path: Path) -> None:
    flow = classify_flow(tmp_path, "test:\n" + GOOD_CASE)
    ran = call("test", flow, "--config", STEPFLOW_CONFIG)
    assert (ran.code, ran.out) == (0, "PASS good\n1 passed, 0 failed\n")


def test_test_vars_reach_the_cases(call: Any, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "output: {$variable: v}\n"
        "test:\n"
        "  cases:\n"
        "    - name: sees v\n"
        "      input: {}\n"
        "      output: {outcome: success, result: {a: 1}}\n",
        encoding="utf-8",
    )
    ran = call("test", flow, "--var", 'v={"a": 1}')
    assert (ran.code, ran.out.splitlines()[-1]) == (0, "1 passed, 0 failed")


def test_test_file_without_cases(call: Any) -> None:
    ran = call("test", LOOP)
    assert (ran.code, ran.out) == (0, "0 passed, 0 failed\n")


def test_test_uses_test_config_file_when_nothing_is_beside_the_flow(
    call: Any, tmp_path: Path
) -> None:
    shutil.copy(STEPFLOW_CONFIG, tmp_path / "special-config.yml")
    flow = classify_flow(tmp_path, "test:\n  configFile: special-config.yml\n" + GOOD_CASE)
    ran = call("test", flow)
    assert (ran.code, ran.out) == (0, "PASS good\n1 passed, 0 failed\n"), ran.err


def test_test_uses_an_inline_test_config(call: Any) -> None:
    ran = call("test", DATA / "stepflow_inline_test_config.yaml")
    assert (ran.code, ran.out, ran.err) == (0, "PASS good\n1 passed, 0 failed\n", "")


def test_test_config_file_beats_the_config_beside_the_flow(call: Any, tmp_path: Path) -> None:
    shutil.copy(STEPFLOW_CONFIG, tmp_path / "special-config.yml")
    shutil.copy(DATA / "autoconfig" / "pocketbatch.yaml", tmp_path / "pocketbatch.yaml")
    flow = classify_flow(tmp_path, "test:\n  configFile: special-config.yml\n" + GOOD_CASE)
    ran = call("test", flow)
    assert (ran.code, ran.out) == (0, "PASS good\n1 passed, 0 failed\n")


# ================================================================== stdout is JSON


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--flow", VARIABLE, "--input", "{}", "--var", "v=NaN"], id="var-NaN"),
        pytest.param(["--flow", VARIABLE, "--input", "{}", "--var", "v=-Infinity"], id="var-inf"),
        pytest.param(["--flow", ECHO, "--input", '{"x": NaN}'], id="input-NaN"),
        pytest.param(["--flow", ECHO, "--input-file", "-"], id="yaml-stdin-nan"),
    ],
)
def test_run_stdout_is_always_strict_json(
    call: Any, monkeypatch: pytest.MonkeyPatch, args: Sequence[Any]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("x: .nan\n"))  # YAML's NaN, for "-"
    ran = call("run", *args)
    if ran.out:  # refusing the value as a usage error (exit 2, no stdout) would be fine too
        strict_json(ran.out)
    else:
        assert ran.code == 2


# ================================================================== help and entry points


def test_module_help_exits_0() -> None:
    ran = cli("--help")
    assert ran.code == 0
    assert ran.out.startswith("usage: pocketbatch")
    for command in ("run", "validate", "visualize", "test"):
        assert command in ran.out


@pytest.mark.parametrize("command", ["run", "validate", "visualize", "test"])
def test_command_help_exits_0(call: Any, command: str) -> None:
    ran = call(command, "--help")
    assert ran.code == 0
    assert ran.out.startswith(f"usage: pocketbatch {command}")
    assert "--no-python-imports" in ran.out


def test_main_returns_the_exit_code_without_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(GREET)]) == 0
    assert main(["run", "--flow", str(VARIABLE), "--input", "{}"]) == 1
    assert main(["validate", "no/such/flow.yaml"]) == 2
    capsys.readouterr()


def test_installed_console_script() -> None:
    script = shutil.which("pocketbatch", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip(
            f"no `pocketbatch` console script in {Path(sys.executable).parent}: the "
            "installed distribution has no entry point (reinstall with `pip install -e .`)"
        )
    help_run = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert help_run.returncode == 0
    assert help_run.stdout.startswith("usage: pocketbatch")
    proc = subprocess.run(
        [script, "run", "--flow", str(GREET), "--input", '{"name": "Ada"}'],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert json.loads(proc.stdout)["result"]["name"] == "Ada"
    failed = subprocess.run(
        [script, "validate", "--strict", str(DATA / "unknown_key.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (failed.returncode, failed.stdout) == (2, "")


def test_validate_warns_when_no_step_will_run(tmp_path: Path) -> None:
    """Issue 14: a flow with no output ran zero steps and validate said ok, silently."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: quiet\nsteps:\n  - id: a\n    component: /builtin/noop\n    input: {}\n",
        encoding="utf-8",
    )
    ran = cli("validate", flow)
    assert ran.code == 0, ran.err
    assert ran.out == f"{flow}: ok (quiet: 1 step, data-flow, 0 test cases, 1 warning)\n"
    assert ran.err.startswith(
        f"pocketbatch: warning: {flow}:2:1: the flow has no 'output:', so none of its "
        "steps (a) will run"
    ), ran.err
    assert "Traceback" not in ran.err
    assert ran.err.count("\n") == 1


def test_validate_counts_every_warning(tmp_path: Path) -> None:
    """validate's summary counted only the no-output warning, not the keys Stepflow
    ignores that it printed just above."""
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: k\ndepends_on: []\noutput: {$input: n}\n", encoding="utf-8")
    ran = cli("validate", flow)
    assert ran.code == 0, ran.err
    assert ran.out == f"{flow}: ok (k: 0 steps, data-flow, 0 test cases, 1 warning)\n"
    assert "unknown key 'depends_on'" in ran.err


def test_run_writes_its_result_as_run_batch_writes_a_record(tmp_path: Path) -> None:
    """run printed with json.dumps(default=str): a set became a string and a success,
    a float another layout than run-batch's; now the same bytes and INVALID_OUTPUT."""
    (tmp_path / "comps.py").write_text(
        "def tags(data):\n    return {'tags': {1}}\n\n"
        "def tiny(data):\n    return {'x': 1e-07, 'big': 2**70}\n",
        encoding="utf-8",
    )
    (tmp_path / "pocketbatch.yaml").write_text("routes:\n  /c: comps\n", encoding="utf-8")
    for name in ("tags", "tiny"):
        (tmp_path / f"{name}.yaml").write_text(
            f"steps:\n  - {{id: s, component: /c/{name}, input: {{}}}}\noutput: {{$step: s}}\n",
            encoding="utf-8",
        )
    tags = cli("run", "--flow", tmp_path / "tags.yaml", "--input", "{}", cwd=tmp_path)
    assert tags.code == 1, tags.err
    record = json.loads(tags.out)
    assert record["outcome"] == "failed"
    assert record["error"]["code"] == "INVALID_OUTPUT"
    assert "the flow failed: the result is not JSON" in tags.err
    tiny = cli("run", "--flow", tmp_path / "tiny.yaml", "--input", "{}", cwd=tmp_path)
    assert tiny.code == 0, tiny.err
    assert tiny.out == '{"outcome":"success","result":{"x":1e-7,"big":1180591620717411303424}}\n'
