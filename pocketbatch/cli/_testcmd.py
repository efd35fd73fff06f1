"""``pocketbatch test``: the ``test.cases`` of flow files, or of every flow under a
folder, as ``stepflow test`` runs them (``--case``, ``--update``, ``--diff``).

``--update`` writes each failing case's actual result (and a result for each case
that has no ``output``) into the file, and changes nothing else: the YAML text of
the case's ``output`` value is replaced in place (or an ``output:`` key added at
the end of the case), so comments, key order, quoting and the rest of the layout
stay as they were. A JSON flow file is rewritten as indented JSON instead.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketbatch._errors import PocketbatchError
from pocketbatch.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from pocketbatch.cli._inputs import load_flow_from

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow
    from pocketbatch.loader._spec import TestCase
    from pocketbatch.loader._testing import CaseOutcome

__all__ = ("discover", "test", "update_file")

_FLOW_SCHEMA = "stepflow.org/schemas/v1/flow.json"
_CONFIG_FILE = re.compile(r"^(pocketbatch\.ya?ml|stepflow-config.*\.ya?ml)$")


@dataclass
class _Tally:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    files: int = 0
    updated: int = 0
    cases_seen: set[str] = field(default_factory=set)


def discover(paths: list[str]) -> list[tuple[Path, bool]]:
    """``(file, given)`` for each path: a file as given (``given`` true), a folder's
    ``.yaml``/``.yml`` files below it, sorted, without config files and hidden folders.

    Example:
        >>> discover(["no/such/file.yaml"])
        [(PosixPath('no/such/file.yaml'), True)]
    """
    found: list[tuple[Path, bool]] = []
    for name in paths:
        path = Path(name)
        if not path.is_dir():
            found.append((path, True))
            continue
        for file in sorted(path.rglob("*")):
            hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
            if (
                file.suffix in (".yaml", ".yml")
                and file.is_file()
                and not hidden
                and not _CONFIG_FILE.match(file.name)
            ):
                found.append((file, False))
    return found


def _has_tests(path: Path) -> bool:
    """Whether a file found in a folder has a top-level ``test:`` key (read as text:
    the other YAML files of a project, Kubernetes manifests, compose files, are passed
    over without being loaded, so they give no warnings)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r"^test\s*:", text, re.MULTILINE) is not None


def _declares_flow(path: Path) -> bool:
    """Whether a file that failed to load says it is a flow (Stepflow's schema key,
    or top-level ``steps:``): then it is an error, not a file to pass over."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return _FLOW_SCHEMA in text or re.search(r"^steps\s*:", text, re.MULTILINE) is not None


def _chosen(flow: LoadedFlow, names: list[str]) -> list[TestCase]:
    if not names:
        return list(flow.tests)
    return [case for case in flow.tests if case.name in names]


def _diff(expected: Any, actual: Any) -> list[str]:
    def lines(value: Any) -> list[str]:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str).splitlines()

    return list(
        difflib.unified_diff(lines(expected), lines(actual), "expected", "actual", lineterm="", n=2)
    )


def _report(outcomes: list[CaseOutcome], cases: list[TestCase], diff: bool) -> None:
    for outcome, case in zip(outcomes, cases):
        print(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.name}")
        for problem in outcome.problems:
            print(f"    {problem}")
        if diff and not outcome.passed and case.expected is not None:
            for line in _diff(dict(case.expected), outcome.result.to_dict()):
                print(f"    {line}")


def test(args: argparse.Namespace) -> int:
    from pocketbatch.loader._testing import run_cases

    files = discover(args.paths)
    single = len(files) == 1 and files[0][1]
    tally = _Tally()
    for path, given in files:
        if not given and not _has_tests(path):
            continue
        try:
            flow = load_flow_from(args, str(path))
        except PocketbatchError as exc:
            if single:
                raise
            if given or _declares_flow(path):
                print(f"ERROR {path}: {exc}")
                tally.errors += 1
            continue
        if not flow.tests and not given:
            continue
        cases = _chosen(flow, args.case)
        tally.cases_seen.update(case.name for case in flow.tests)
        if args.case and not cases and not single:
            continue
        if not single:
            print(f"== {path}")
        tally.files += 1
        outcomes = asyncio.run(run_cases(flow, cases, max_concurrency=args.max_concurrency))
        if args.update:
            changed = {
                i: o.result.to_dict()
                for i, (o, case) in enumerate(zip(outcomes, cases))
                if not o.passed or case.expected is None
            }
            if changed:
                update_file(path, {cases[i].where: out for i, out in changed.items()})
                for i in changed:
                    print(f"UPDATED {cases[i].name}")
                tally.updated += len(changed)
            outcomes = [o for i, o in enumerate(outcomes) if i not in changed]
            cases = [c for i, c in enumerate(cases) if i not in changed]
        _report(outcomes, cases, args.diff)
        passed = sum(o.passed for o in outcomes)
        tally.passed += passed
        tally.failed += len(outcomes) - passed
        print(f"{passed} passed, {len(outcomes) - passed} failed")
    return _finish(args, tally, single)


def _finish(args: argparse.Namespace, tally: _Tally, single: bool) -> int:
    unknown = [name for name in args.case if name not in tally.cases_seen]
    if unknown:
        from pocketbatch.cli._argparse import suggestion

        hint = suggestion(unknown[0], sorted(tally.cases_seen))
        raise UsageError(f"--case {unknown[0]!r}: no such test case{hint}")
    if not single:
        if tally.files == 0 and tally.errors == 0:
            raise UsageError(f"no flow file with test cases in {' '.join(args.paths)}")
        print(
            f"total: {tally.passed} passed, {tally.failed} failed"
            + (f", {tally.updated} updated" if tally.updated else "")
            + (f", {tally.errors} files that do not load" if tally.errors else "")
            + f" ({tally.files} file{'' if tally.files == 1 else 's'})"
        )
    if tally.updated:
        print(f"pocketbatch: wrote {tally.updated} case outputs", file=sys.stderr)
    if tally.errors:
        return EXIT_USAGE
    return EXIT_FAILED if tally.failed else EXIT_OK


def update_file(path: Path, outputs: dict[tuple[str | int, ...], Any]) -> None:
    """Set the ``output`` of the test cases at ``outputs``' document paths in ``path``,
    editing only those values' text (see the module's docstring).

    Raises:
        UsageError: the file cannot be edited in place (the edit would not read back).
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        for where, output in outputs.items():
            _at(data, where)["output"] = output
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    edits: list[tuple[int, int, str]] = []
    for where, output in outputs.items():
        edits.append(_edit(text, _node_at(root, where), output))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    check = yaml.safe_load(text)
    if any(_at(check, where).get("output") != output for where, output in outputs.items()):
        raise UsageError(f"{path}: cannot update the test cases in place; nothing was written")
    path.write_text(text, encoding="utf-8")


def _at(data: Any, where: tuple[str | int, ...]) -> Any:
    for part in where:
        data = data[part]
    return data


def _node_at(node: Any, where: tuple[str | int, ...]) -> Any:
    import yaml

    for part in where:
        if isinstance(node, yaml.SequenceNode):
            node = node.value[int(part)]
        else:
            node = next(value for key, value in node.value if key.value == part)
    return node


def _end(node: Any) -> int:
    """Where a node's own text ends (a block collection's marks run on to the next
    token, past comments and blank lines: end at its last leaf instead)."""
    import yaml

    while isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return int(node.end_mark.index)


def _block(value: Any, indent: int) -> str:
    """``value`` as block YAML, its lines after the first indented by ``indent``."""
    import yaml

    dumped = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)
    lines = dumped.rstrip("\n").splitlines()
    return ("\n" + " " * indent).join(lines)


def _edit(text: str, case: Any, output: Any) -> tuple[int, int, str]:
    """``(start, end, new text)`` that sets ``output`` in the case mapping ``case``."""
    import yaml

    inline = yaml.safe_dump(
        output, default_flow_style=True, sort_keys=False, allow_unicode=True, width=1 << 30
    ).strip()
    pair = next(((key, value) for key, value in case.value if key.value == "output"), None)
    if pair is not None:
        key, current = pair
        start, end = current.start_mark.index, _end(current)
        if start == end:  # `output:` with no value: after the colon
            colon = text.index(":", key.end_mark.index) + 1
            return colon, colon, " " + inline
        if isinstance(current, yaml.MappingNode) and not current.flow_style:
            return start, end, _block(output, current.start_mark.column)
        return start, end, inline
    if case.flow_style:  # {name: a, input: {}}: before the closing brace
        close = text.rindex("}", 0, case.end_mark.index)
        return close, close, f", output: {inline}"
    column = case.value[0][0].start_mark.column
    at = _end(case)
    return (
        at,
        at,
        "\n" + " " * column + "output:\n" + " " * (column + 2) + _block(output, column + 2),
    )
