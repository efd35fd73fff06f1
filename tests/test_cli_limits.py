"""The command line meets the reader's limits: one line on stderr and exit 2, no traceback.

``validate``, ``run`` and ``run-batch`` are started as real subprocesses
(``python -m pocketbatch``) on flows that nest too deep, carry a YAML alias bomb, or
run themselves as a nested flow.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from _support import run_cli

from pocketbatch.loader._load import MAX_NESTED_FLOWS
from pocketbatch.loader._source import MAX_ALIAS_NODES, MAX_DEPTH


def pocketbatch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env={"PYTHONIOENCODING": "utf-8"})


def bomb() -> str:
    lines = ["steps: []", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 8) + "]")
    return "\n".join([*lines, "output: *a9"]) + "\n"


FLOWS = {
    "deep.yaml": (
        "steps: []\noutput: " + "[" * 500 + "]" * 500 + "\n",
        f"deep.yaml:2:{8 + MAX_DEPTH}: nested more than {MAX_DEPTH} levels deep here",
    ),
    "bomb.yaml": (
        bomb(),
        "bomb.yaml:11:5: YAML aliases would expand the document by",  # the &a9 anchor
    ),
    "again.yaml": (
        "steps:\n  - id: again\n    component: /builtin/eval\n"
        "    input: {flow: again.yaml, input: {}}\noutput: {$step: again}\n",
        f"again.yaml:4:13: nested flows go more than {MAX_NESTED_FLOWS} deep",
    ),
}


@pytest.mark.parametrize("name", sorted(FLOWS))
@pytest.mark.parametrize("command", ["validate", "run", "run-batch"])
def test_a_flow_over_a_limit_exits_2_with_one_line(tmp_path: Path, name: str, command: str) -> None:
    text, expected = FLOWS[name]
    (tmp_path / name).write_text(text)
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    args: list[str] = {
        "validate": ["validate", name],
        "run": ["run", "--flow", name, "--input", "{}"],
        "run-batch": ["run-batch", "--flow", name, "--inputs", "in.jsonl", "--no-progress"],
    }[command]
    ran = pocketbatch(*args, cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert ran.stdout == ""
    assert ran.stderr.count("\n") == 1, ran.stderr
    # A nested flow file is named by its full path (it was found under the flow's folder).
    assert re.match(rf"pocketbatch: (\S*/)?{re.escape(expected)}", ran.stderr), ran.stderr
    if name == "bomb.yaml":
        assert f"more than the limit of {MAX_ALIAS_NODES}" in ran.stderr


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
@pytest.mark.parametrize("flag", ["--var", "--input"])
def test_a_json_value_on_the_command_line_over_the_depth_limit_exits_2(
    tmp_path: Path, flag: str, depth: int
) -> None:
    """A ``--var`` or ``--input`` value nested deeper than flows may be is refused like
    one; 5000 levels used to end in a RecursionError traceback."""
    (tmp_path / "echo.yaml").write_text("output: {$input: $}\n")
    deep = '{"a":' * depth + "1" + "}" * depth
    value = f"x={deep}" if flag == "--var" else deep
    other = ["--input", "{}"] if flag == "--var" else []
    ran = pocketbatch("run", "--flow", "echo.yaml", flag, value, *other, cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    name = "--var x" if flag == "--var" else "--input"
    limit = f"nests more than {MAX_DEPTH} levels (the limit is {MAX_DEPTH})"
    assert ran.stderr == f"pocketbatch: {name} {limit}\n"
