"""The README's Python blocks run, in order, in one namespace, as a reader would paste them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_a_tour() -> None:
    """The README shows enough code to be a tour."""
    assert len(fenced("python")) >= 5


def test_readme_blocks_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Every python block runs without error, sharing names with the blocks before it."""
    namespace: dict[str, object] = {"__name__": "readme"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for block in fenced("python"):
            exec(compile(block, str(README), "exec"), namespace)
    assert len(namespace["book"]["sums"]) == 3  # type: ignore[index]
    assert namespace["shared"]["failed"] == []  # type: ignore[index]
    assert "flowchart TD" in capsys.readouterr().out


def test_readme_opens_with_the_two_commands() -> None:
    """The first two bash blocks are the run and the test commands; CI runs the latter."""
    run, test = fenced("bash")[:2]
    assert "pip install" in run
    assert "pip install" in test
    assert "pytest" in test
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test.strip() in ci


# -- every block on its own ------------------------------------------------------------------

_NO_RUN = re.compile(r"<!--\s*no-run:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced python block of the README: where it starts, its code, and the reason
    given in a ``<!-- no-run: ... -->`` comment right before it, if any."""

    line: int
    code: str
    no_run: str | None


def python_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() != "```python":
            index += 1
            continue
        start = index
        end = lines.index("```", start + 1)
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        marker = _NO_RUN.search(previous)
        code = "\n".join(lines[start + 1 : end]) + "\n"
        blocks.append(Block(start + 1, code, marker.group(1) if marker else None))
        index = end + 1
    return blocks


BLOCKS = python_blocks()
# The blocks the README marks as not runnable on their own, and why. Keep this short.
SKIPPED: dict[int, str] = {}


def test_readme_skips_few_blocks() -> None:
    """The only blocks not run on their own are these (a reason each, in the README)."""
    skipped = {block.line: block.no_run for block in BLOCKS if block.no_run}
    assert skipped == SKIPPED
    assert len(skipped) <= 2
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}" for b in BLOCKS])
def test_readme_block_runs_on_its_own(block: Block, tmp_path: Path) -> None:
    """Each python block runs alone as a script (fresh process, empty temp dir, warnings
    are errors), as a reader pasting only that block would run it."""
    if block.no_run:
        pytest.skip(block.no_run)
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(README.parent)}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"README.md:{block.line}:\n{block.code}\n{done.stderr}"
    if "to_mermaid()" in block.code:  # the diagram shown after it is what it prints
        shown = fenced("mermaid")[0]
        assert done.stdout.strip() == shown.strip()
