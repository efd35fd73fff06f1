"""Run a flow file's ``test.cases``, as ``stepflow test`` does.

A case passes when the run's result matches the case's expected ``output``,
compared the way Stepflow compares: every key the case gives must be present and
match (recursively; extra keys in the result are fine), lists must have the same
length with matching elements, other values must be equal. A case with no
``output`` passes when the run does not fail.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pocketbatch._result import FlowResult
from pocketbatch.core import bounded_map
from pocketbatch.loader._component import Subflow
from pocketbatch.loader._services import RunServices
from pocketbatch.loader._spec import TestCase

__all__ = ("CaseOutcome", "FlowWithCases", "mismatches", "run_cases")


class FlowWithCases(Subflow, Protocol):
    """A flow that can be run and has ``test.cases`` (a :class:`~pocketbatch.LoadedFlow`)."""

    @property
    def tests(self) -> tuple[TestCase, ...]: ...


@dataclass(frozen=True)
class CaseOutcome:
    """How one test case went.

    Attributes:
        name: the case's name.
        passed: whether the result matched.
        result: what the run gave.
        problems: each difference, as ``path: expected X, got Y``.
    """

    name: str
    passed: bool
    result: FlowResult
    problems: list[str] = field(default_factory=list)


def mismatches(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """The differences between ``expected`` and ``actual`` (partial match on mappings).

    Example:
        >>> mismatches({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3], "extra": 0})
        ['$.b[1]: expected 2, got 3']
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected a mapping, got {_show(actual)}"]
        problems: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing (expected {_show(value)})")
            else:
                problems += mismatches(value, actual[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected a list, got {_show(actual)}"]
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, got {len(actual)}"]
        problems = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            problems += mismatches(e, a, f"{path}[{i}]")
        return problems
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        return [f"{path}: expected {_show(expected)}, got {_show(actual)}"]
    return []


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


async def run_cases(
    flow: FlowWithCases, cases: Sequence[TestCase] | None = None, *, max_concurrency: int = 10
) -> list[CaseOutcome]:
    """Run ``cases`` (default: the file's own) concurrently; outcomes in case order.

    Example:
        >>> import asyncio
        >>> from pocketbatch import load_flow
        >>> flow = load_flow('''
        ... output: {$input: x}
        ... test:
        ...   cases:
        ...     - name: echo
        ...       input: {x: 1}
        ...       output: {outcome: success, result: 1}
        ... ''')
        >>> [(o.name, o.passed) for o in asyncio.run(run_cases(flow))]
        [('echo', True)]
    """
    chosen = list(flow.tests if cases is None else cases)

    async def one(index: int, case: TestCase) -> CaseOutcome:
        result = await flow.run_async(case.input, services=services)
        if case.expected is None:
            problems = (
                [f"the run failed: {result.error.message}"]
                if result.outcome == "failed" and result.error
                else []
            )
        else:
            problems = mismatches(dict(case.expected), result.to_dict())
        return CaseOutcome(case.name, not problems, result, problems)

    async with RunServices() as services:  # one run, as Stepflow runs a file's cases as one batch
        outcomes: list[CaseOutcome] = await bounded_map(
            one, chosen, limit=max_concurrency, collect=False
        )
    return outcomes
