"""The README's Python blocks run, in order, in one namespace, as a reader would paste them."""

from __future__ import annotations

import re
import warnings
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
