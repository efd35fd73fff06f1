"""The flow-file corpus: every file under ``valid/`` runs its own ``test.cases``, and
every file under ``invalid/`` fails to load with exactly the message in its ``.error``.

Valid files find their components the way a user's would: builtins, plus the mocks
of the config file beside them (``valid/pocketbatch.yaml`` in pocketbatch's format,
``valid/stepflow/stepflow-config.yml`` in Stepflow's own format; the subfolder is
needed because a ``pocketbatch.yaml`` beside a flow wins over a
``stepflow-config.yml``).

Invalid files: ``<name>.yaml`` is paired with ``<name>.error``, which holds the exact
``str(LoadError)`` followed by one newline. They are loaded with ``strict=True``, so
the ``unknown_*_key`` files (keys Stepflow ignores: a warning by default) fail too.
The message starts with the file path *as given to load_flow*, so the tests change
to the repository root and load each file by its path relative to it
(``tests/flows/invalid/<name>.yaml``); that keeps the ``.error`` files independent
of where the checkout lives and of the directory pytest was started from. The line,
column and step of each error are also checked against the table ``WHERE`` below,
so a message that drifted in position but not in text cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pocketbatch import load_flow
from pocketbatch._errors import LoadError
from pocketbatch.loader._testing import run_cases

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VALID = HERE / "valid"
INVALID = HERE / "invalid"
CONFIG_NAMES = {"pocketbatch.yaml", "pocketbatch.yml", "stepflow-config.yml"}

VALID_FILES = sorted(
    p
    for p in [*VALID.rglob("*.yaml"), *VALID.rglob("*.yml"), *VALID.rglob("*.json")]
    if p.name not in CONFIG_NAMES
)
INVALID_FILES = sorted(INVALID.glob("*.yaml"))

# Files whose cases fail because of a bug in pocketbatch (reported; see the reason).
KNOWN_BUGS: dict[str, str] = {}


def _id(path: Path) -> str:
    return path.relative_to(VALID).as_posix()


def _case_params() -> list[object]:
    params: list[object] = []
    for path in VALID_FILES:
        reason = KNOWN_BUGS.get(_id(path))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, id=_id(path), marks=marks))
    return params


def test_corpus_is_big_enough() -> None:
    assert len(VALID_FILES) >= 12
    assert len(INVALID_FILES) >= 14
    assert any(p.suffix == ".json" for p in VALID_FILES)
    assert (VALID / "stepflow" / "stepflow-config.yml").is_file()
    assert (VALID / "pocketbatch.yaml").is_file()
    assert set(KNOWN_BUGS) <= {_id(p) for p in VALID_FILES}


@pytest.mark.parametrize("path", VALID_FILES, ids=_id)
def test_valid_file_loads_with_cases(path: Path) -> None:
    flow = load_flow(path, strict=True)
    assert flow.warnings == ()
    assert len(flow.tests) >= 1
    for case in flow.tests:
        assert case.expected is not None, f"case {case.name!r} states no expected output"


@pytest.mark.parametrize("path", _case_params())
def test_valid_file_cases_pass(path: Path) -> None:
    flow = load_flow(path)
    outcomes = asyncio.run(run_cases(flow))
    assert len(outcomes) == len(flow.tests)
    failed = {o.name: (o.problems, o.result.to_dict()) for o in outcomes if not o.passed}
    assert not failed


@pytest.mark.parametrize("path", VALID_FILES, ids=_id)
def test_valid_file_draws_as_mermaid(path: Path) -> None:
    text = load_flow(path).to_mermaid()
    assert text.startswith("flowchart")


def test_valid_file_loads_from_a_relative_path_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Config discovery and sub-flow files are relative to the flow, not the cwd.
    monkeypatch.chdir(REPO)
    flow = load_flow("tests/flows/valid/map_file.yaml")
    outcomes = asyncio.run(run_cases(flow))
    assert [o.passed for o in outcomes] == [True] * len(outcomes)


# --------------------------------------------------------------------------- invalid files

# name -> (line, column, step) of the LoadError.
WHERE: dict[str, tuple[int, int, str | None]] = {
    "action_without_next": (6, 5, "review"),
    "duplicate_step_id": (9, 5, "load"),
    "duplicate_yaml_key": (3, 1, None),
    "invalid_input_schema": (6, 7, None),
    "item_outside_for_each": (5, 18, "each"),
    "malformed_jsonpath": (6, 15, "pick"),
    "next_missing_step": (6, 5, "draft"),
    "on_error_continue": (7, 7, "fetch"),
    "reference_cycle": (8, 17, "b"),
    "snake_and_camel": (7, 5, "fetch"),
    "start_unknown_step": (2, 1, None),
    "template_unbalanced": (6, 21, "prompt"),
    "two_dollar_keys": (2, 1, None),
    "unknown_component": (4, 5, "ask"),
    "unknown_expression": (6, 21, "greet"),
    "unknown_on_error_key": (8, 7, "fetch"),
    "unknown_step_key": (5, 5, "fetch"),
    "unknown_step_reference": (8, 20, "publish"),
    "unknown_top_key": (2, 1, None),
    "yaml_syntax": (5, 21, None),
}
# Keys Stepflow ignores: without strict=True these files load, with the same message
# as their only warning.
WARNED = {"unknown_on_error_key", "unknown_step_key", "unknown_top_key"}


def test_every_invalid_file_has_its_error_and_position() -> None:
    names = {p.stem for p in INVALID_FILES}
    assert names == set(WHERE)
    assert {p.stem for p in INVALID.glob("*.error")} == names


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_file_fails_with_exact_message(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    given = path.relative_to(REPO).as_posix()
    expected = path.with_suffix(".error").read_text(encoding="utf-8")
    assert expected.endswith("\n")
    assert expected.count("\n") == 1
    with pytest.raises(LoadError) as caught:
        load_flow(given, strict=True)
    error = caught.value
    assert str(error) == expected.rstrip("\n")
    assert error.file == given
    line, column, step = WHERE[path.stem]
    assert (error.line, error.column, error.step) == (line, column, step)
    assert str(error).startswith(f"{given}:{line}:{column}: ")
    if step is not None:
        assert f": step {step!r}: " in str(error)


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_file_given_as_text_names_string(path: Path) -> None:
    # The same problem found in text (not a file) is reported against "<string>".
    text = path.read_text(encoding="utf-8")
    with pytest.raises(LoadError) as caught:
        load_flow(text, strict=True)
    line, column, _ = WHERE[path.stem]
    assert caught.value.file == "<string>"
    assert str(caught.value).startswith(f"<string>:{line}:{column}: ")


@pytest.mark.parametrize("name", sorted(WARNED))
def test_key_stepflow_ignores_is_a_warning_by_default(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without strict, the file loads (as in Stepflow), and its one warning is the
    strict error's message at the same file:line:column."""
    monkeypatch.chdir(REPO)
    given = f"tests/flows/invalid/{name}.yaml"
    expected = (INVALID / f"{name}.error").read_text(encoding="utf-8").rstrip("\n")
    if name == "unknown_top_key":  # 'step:' ignored, so 'output' names an unknown step
        with pytest.raises(LoadError, match="reference to unknown step 'a'"):
            load_flow(given)
        return
    flow = load_flow(given)
    assert [str(w) for w in flow.warnings] == [expected]
    warning = flow.warnings[0]
    line, column, step = WHERE[name]
    assert (warning.file, warning.line, warning.column, warning.step) == (
        given,
        line,
        column,
        step,
    )
