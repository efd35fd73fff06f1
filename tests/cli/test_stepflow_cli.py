"""Stepflow's documented CLI spellings, as real subprocesses (issue 14): ``run``'s
input forms, stdin and ``--output``, ``run --inputs`` as a batch, variables,
``test DIR``/``--case``/``--update``/``--diff``, ``validate --flow``,
``visualize --format dot``, ``list-components``, ``--version``, stdin batches, and
a did-you-mean for a typo'd flag."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _support import run_cli, write_lines

from pocketbatch import __version__
from pocketbatch.cli._dot import mermaid_to_dot

DATA = Path(__file__).parent.parent / "cli_data"
GREET = DATA / "greet.yaml"
FAILING = DATA / "tests_failing.yaml"
REVIEW_LOOP = DATA / "review_loop.yaml"


def name_of(stdout: str) -> str:
    return str(json.loads(stdout)["result"]["name"])


# ================================================================== run: inputs and output


def test_run_input_names_a_file_as_stepflow_does(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text("name: Ada\n", encoding="utf-8")
    ran = run_cli("run", "--flow", GREET, "--input", "in.yaml", cwd=tmp_path)
    assert (ran.returncode, name_of(ran.stdout)) == (0, "Ada"), ran.stderr


def test_run_input_that_is_no_file_is_json_text() -> None:
    ran = run_cli("run", "--flow", GREET, "--input", '{"name": "Bo"}')
    assert (ran.returncode, name_of(ran.stdout)) == (0, "Bo"), ran.stderr


def test_run_input_neither_file_nor_json_says_both() -> None:
    ran = run_cli("run", "--flow", GREET, "--input", "missing.json")
    assert (ran.returncode, ran.stdout) == (2, "")
    assert "--input is not valid JSON" in ran.stderr
    assert "nor a file: --input takes a file or JSON text" in ran.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--input-json", '{"name": "Cy"}'), ("--input-yaml", "name: Cy")]
)
def test_run_input_json_and_yaml_text(flag: str, value: str) -> None:
    ran = run_cli("run", "--flow", GREET, flag, value)
    assert (ran.returncode, name_of(ran.stdout)) == (0, "Cy"), ran.stderr


def test_run_reads_stdin_when_no_input_is_given() -> None:
    ran = run_cli("run", "--flow", GREET, input='{"name": "Di"}')
    assert (ran.returncode, name_of(ran.stdout)) == (0, "Di"), ran.stderr


def test_run_stdin_format_yaml() -> None:
    ran = run_cli("run", "--flow", GREET, "--stdin-format", "yaml", input="name: Ed\n")
    assert (ran.returncode, name_of(ran.stdout)) == (0, "Ed"), ran.stderr


def test_run_with_a_terminal_on_stdin_and_no_input_is_a_usage_error() -> None:
    """A terminal is never read: a run with no input flag says what to give."""
    leader, follower = pty.openpty()
    try:
        ran = subprocess.run(
            [sys.executable, "-m", "pocketbatch", "run", "--flow", str(GREET)],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert (ran.returncode, ran.stdout) == (2, "")
    assert ran.stderr.startswith("pocketbatch: no input: give --input FILE|JSON"), ran.stderr


def test_run_output_writes_the_result_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    ran = run_cli("run", "--flow", GREET, "--input-json", '{"name": "Fa"}', "--output", out)
    assert (ran.returncode, ran.stdout) == (0, ""), ran.stderr
    assert name_of(out.read_text(encoding="utf-8")) == "Fa"


def test_run_inputs_is_a_batch_with_max_concurrency_and_output(tmp_path: Path) -> None:
    inputs = write_lines(tmp_path / "in.jsonl", [{"name": "a"}, {"name": "b"}])
    out = tmp_path / "out.jsonl"
    ran = run_cli(
        "run",
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
    assert ran.returncode == 0, ran.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["index"], r["result"]["name"]) for r in records] == [(0, "a"), (1, "b")]


def test_max_concurrency_without_inputs_is_a_usage_error() -> None:
    ran = run_cli("run", "--flow", GREET, "--input-json", "{}", "--max-concurrency", "2")
    assert ran.returncode == 2
    assert "--max-concurrency applies to a batch: give --inputs FILE too" in ran.stderr


# ================================================================== run-batch from a pipe


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_run_batch_reads_its_inputs_from_a_pipe(name: str) -> None:
    ran = run_cli(
        "run-batch",
        "--flow",
        GREET,
        "--inputs",
        name,
        "--no-progress",
        input='{"name": "a"}\n{"name": "b"}\n',
    )
    assert ran.returncode == 0, ran.stderr
    assert [json.loads(line)["result"]["name"] for line in ran.stdout.splitlines()] == ["a", "b"]


def test_run_batch_resume_from_a_pipe_needs_an_output_and_says_why() -> None:
    ran = run_cli("run-batch", "--flow", GREET, "--inputs", "-", "--resume", input="")
    assert (ran.returncode, ran.stdout) == (2, "")
    assert "--resume needs --output" in ran.stderr
    assert "stdin" in ran.stderr


def test_run_batch_resume_from_a_pipe_with_an_output_continues(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lines = "".join(json.dumps({"name": n}) + "\n" for n in "abc")
    first = run_cli(
        "run-batch",
        "--flow",
        GREET,
        "--inputs",
        "-",
        "--output",
        out,
        "--no-progress",
        input=lines[: lines.index("\n") + 1],
    )
    assert first.returncode == 0, first.stderr
    again = run_cli(
        "run-batch",
        "--flow",
        GREET,
        "--inputs",
        "-",
        "--output",
        out,
        "--resume",
        "--no-progress",
        input=lines,
    )
    assert again.returncode == 0, again.stderr
    assert "1 of 3 inputs already in" in again.stderr
    names = [json.loads(line)["result"]["name"] for line in out.read_text().splitlines()]
    assert names == ["a", "b", "c"]


# ================================================================== variables


VARIABLES_FLOW = """\
schemas:
  type: object
  properties:
    variables:
      type: object
      properties:
        greeting: {type: string}
        count: {type: integer}
        key: {type: string, env_var: MY_API_KEY}
output:
  greeting: {$variable: greeting}
  count: {$variable: count}
  key: {$variable: key}
"""


@pytest.fixture
def variables_flow(tmp_path: Path) -> Path:
    flow = tmp_path / "vars.yaml"
    flow.write_text(VARIABLES_FLOW, encoding="utf-8")
    return flow


def result_of(ran: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert ran.returncode == 0, ran.stderr
    value: dict[str, object] = json.loads(ran.stdout)["result"]
    return value


@pytest.mark.parametrize("flag", ["--variables", "--variables-file"])
def test_variables_file(variables_flow: Path, tmp_path: Path, flag: str) -> None:
    (tmp_path / "vars.yml").write_text("greeting: hi\ncount: 3\n", encoding="utf-8")
    ran = run_cli(
        "run", "--flow", variables_flow, "--input-json", "{}", flag, "vars.yml", cwd=tmp_path
    )
    assert result_of(ran) == {"greeting": "hi", "count": 3, "key": ""}


def test_variables_json_and_yaml_with_var_over_them(variables_flow: Path) -> None:
    as_json = run_cli(
        "run",
        "--flow",
        variables_flow,
        "--input-json",
        "{}",
        "--variables-json",
        '{"greeting": "yo", "count": 1}',
        "--var",
        "count=2",
    )
    assert result_of(as_json) == {"greeting": "yo", "count": 2, "key": ""}
    as_yaml = run_cli(
        "run", "--flow", variables_flow, "--input-json", "{}", "--variables-yaml", "greeting: hey"
    )
    assert result_of(as_yaml)["greeting"] == "hey"


def test_variables_that_are_not_an_object_are_a_usage_error(variables_flow: Path) -> None:
    ran = run_cli("run", "--flow", variables_flow, "--input-json", "{}", "--variables-json", "[1]")
    assert ran.returncode == 2
    assert "--variables-json must hold an object" in ran.stderr


def test_env_variables_read_stepflow_var_and_env_var_annotations(variables_flow: Path) -> None:
    env = {"STEPFLOW_VAR_GREETING": "from env", "STEPFLOW_VAR_COUNT": "7", "MY_API_KEY": "k"}
    ran = run_cli(
        "run",
        "--flow",
        variables_flow,
        "--input-json",
        "{}",
        "--env-variables",
        "--var",
        "greeting=given",
        env=env,
    )
    assert result_of(ran) == {"greeting": "given", "count": 7, "key": "k"}
    without = run_cli("run", "--flow", variables_flow, "--input-json", "{}", env=env)
    assert result_of(without) == {"greeting": "", "count": 0, "key": ""}


# ================================================================== validate, visualize, version


def test_validate_takes_stepflows_flow_flag() -> None:
    ran = run_cli("validate", "--flow", GREET)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"{GREET}: ok (greet:")


def test_visualize_dot_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "flow.dot"
    ran = run_cli("visualize", REVIEW_LOOP, "--format", "dot", "--output", out)
    assert (ran.returncode, ran.stdout) == (0, ""), ran.stderr
    dot = out.read_text(encoding="utf-8")
    assert dot.startswith("digraph flow {")
    assert 'n1 -> n2 [label="approve"];' in dot
    assert '    n0 [label="draft"];' in dot


def test_mermaid_to_dot_keeps_nested_flows_as_clusters() -> None:
    mermaid = "\n".join(
        [
            "flowchart TD",
            '    n0["outer step"]',
            '    subgraph n1["inner"]',
            '        n2["say #quot;hi#quot;<br/>/builtin/noop"]',
            "    end",
            "    n0 --> n1",
        ]
    )
    assert mermaid_to_dot(mermaid).splitlines()[3:] == [
        '    n0 [label="outer step"];',
        "    subgraph cluster_n1 {",
        '        label="inner";',
        '        n1 [label="inner", style=dashed];',
        '        n2 [label="say \\"hi\\"\\n/builtin/noop"];',
        "    }",
        "    n0 -> n1;",
        "}",
    ]


def test_version() -> None:
    ran = run_cli("--version")
    assert (ran.returncode, ran.stdout) == (0, f"pocketbatch {__version__}\n")


# ================================================================== test


def test_test_a_folder_runs_every_flow_with_cases_under_it(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "greet.yaml").write_bytes(GREET.read_bytes())
    (tmp_path / "failing.yaml").write_bytes(FAILING.read_bytes())
    (tmp_path / "not-a-flow.yaml").write_text("just: data\n", encoding="utf-8")
    (tmp_path / "stepflow-config.yml").write_text("plugins: {}\n", encoding="utf-8")
    # A flow without test cases, and a manifest beside them (as in Stepflow's
    # examples/): passed over without loading, so no warning and no error.
    (tmp_path / "no-tests.yaml").write_text("steps:\n  - {id: a}\n", encoding="utf-8")
    (tmp_path / "deploy.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n", encoding="utf-8")
    ran = run_cli("test", tmp_path)
    assert ran.returncode == 1, ran.stderr
    lines = ran.stdout.splitlines()
    assert f"== {tmp_path / 'failing.yaml'}" in lines
    assert f"== {tmp_path / 'sub' / 'greet.yaml'}" in lines
    assert lines[-1] == "total: 5 passed, 2 failed (2 files)"
    assert "warning" not in ran.stderr
    assert "ERROR" not in ran.stdout


def test_test_a_folder_without_cases_is_an_error(tmp_path: Path) -> None:
    ran = run_cli("test", tmp_path)
    assert ran.returncode == 2
    assert "no flow file with test cases" in ran.stderr


def test_test_case_runs_only_the_named_cases() -> None:
    ran = run_cli("test", FAILING, "--case", "matches", "--case", "also matches")
    assert (ran.returncode, ran.stdout) == (
        0,
        "PASS matches\nPASS also matches\n2 passed, 0 failed\n",
    )


def test_test_unknown_case_suggests_the_closest() -> None:
    ran = run_cli("test", FAILING, "--case", "wrng text")
    assert ran.returncode == 2
    assert "--case 'wrng text': no such test case (did you mean 'wrong text'?)" in ran.stderr


def test_test_diff_shows_expected_against_actual() -> None:
    ran = run_cli("test", FAILING, "--case", "wrong text", "--diff")
    assert ran.returncode == 1
    lines = ran.stdout.splitlines()
    assert "    --- expected" in lines
    assert '    -    "text": "B",' in lines
    assert '    +    "text": "b",' in lines


UPDATABLE = """\
# a comment at the top stays
name: upd
steps:
  - id: echo
    component: /builtin/noop   # and this one
    input: {text: {$input: text}}
output: {$step: echo}
test:
  cases:
    - name: right          # untouched
      input: {text: a}
      output: {outcome: success, result: {text: a}}
    - name: wrong
      input: {text: b}
      output:
        outcome: success
        result:
          text: B
    - name: none yet
      input: {text: c}
    - {name: flow style, input: {text: d}}
    - name: empty
      input: {text: e}
      output:
# the end
"""


def test_test_update_writes_actual_outputs_and_keeps_the_rest(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(UPDATABLE, encoding="utf-8")
    ran = run_cli("test", flow, "--update")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert [line for line in ran.stdout.splitlines() if line.startswith("UPDATED")] == [
        "UPDATED wrong",
        "UPDATED none yet",
        "UPDATED flow style",
        "UPDATED empty",
    ]
    text = flow.read_text(encoding="utf-8")
    for kept in (
        "# a comment at the top stays\n",
        "    component: /builtin/noop   # and this one\n",
        "    - name: right          # untouched\n"
        "      input: {text: a}\n"
        "      output: {outcome: success, result: {text: a}}\n",
        "# the end\n",
    ):
        assert kept in text
    cases = yaml.safe_load(text)["test"]["cases"]
    assert [c["output"]["result"]["text"] for c in cases] == ["a", "b", "c", "d", "e"]
    assert "      output:\n        outcome: success\n        result:\n          text: b\n" in text
    again = run_cli("test", flow)
    assert again.returncode == 0, again.stdout
    assert again.stdout.splitlines()[-1] == "5 passed, 0 failed"


def test_test_update_of_a_json_flow(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    doc = {
        "output": {"$input": "x"},
        "test": {
            "cases": [
                {"name": "c", "input": {"x": 1}, "output": {"outcome": "success", "result": 2}}
            ]
        },
    }
    flow.write_text(json.dumps(doc), encoding="utf-8")
    assert run_cli("test", flow, "--update").returncode == 0
    assert json.loads(flow.read_text())["test"]["cases"][0]["output"]["result"] == 1


# ================================================================== list-components


def test_list_components_shows_builtins_and_what_the_config_routes(tmp_path: Path) -> None:
    (tmp_path / "pocketbatch.yaml").write_text(
        "routes:\n  /data: my_components\n  /tools: {module: tools, components: [clean]}\n"
        "mocks:\n  /mock/x:\n    behaviors: [{input: {}, outcome: success, result: 1}]\n",
        encoding="utf-8",
    )
    ran = run_cli("list-components", "--format", "json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    listing = json.loads(ran.stdout)
    assert listing["config"].endswith("pocketbatch.yaml")
    kinds = {(e["path"], e["kind"]) for e in listing["components"]}
    assert {
        ("/builtin/openai", "builtin"),
        ("/builtin/map", "builtin"),
        ("/http/request", "builtin"),
        ("/data/*", "module"),
        ("/tools/clean", "route"),
        ("/mock/x", "mock"),
        ("/python/<module>.<function>", "python"),
    } <= kinds
    pretty = run_cli("list-components", cwd=tmp_path)
    assert pretty.returncode == 0
    assert pretty.stdout.startswith("config: ")
    assert any(line.split()[:2] == ["/tools/clean", "route"] for line in pretty.stdout.splitlines())


def test_list_components_of_a_stepflow_config() -> None:
    ran = run_cli(
        "list-components", "--config", DATA / "configs" / "stepflow-config.yml", "--format", "yaml"
    )
    assert ran.returncode == 0, ran.stderr
    listing = yaml.safe_load(ran.stdout)
    assert any(e["kind"] == "plugin" for e in listing["components"]), listing


# ================================================================== a typo'd flag


def test_typod_flag_shows_the_commands_usage_and_a_did_you_mean() -> None:
    ran = run_cli("run-batch", "--flow", GREET, "--inputs", "x.jsonl", "--max-concurent", "4")
    assert (ran.returncode, ran.stdout) == (2, "")
    assert ran.stderr.startswith("usage: pocketbatch run-batch ")
    assert (
        "error: unrecognized arguments: --max-concurent 4 (did you mean '--max-concurrent'?)"
        in ran.stderr
    )


def test_typod_command_gets_a_did_you_mean() -> None:
    ran = run_cli("valdate", GREET)
    assert ran.returncode == 2
    assert "(did you mean 'validate'?)" in ran.stderr
