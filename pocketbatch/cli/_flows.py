"""``pocketbatch run``, ``validate``, ``visualize`` and ``test``: one flow file at a time."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pocketbatch.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    check_finite,
    dump_json,
    load_flow_from,
    open_step_cache,
    strict_json,
)

__all__ = ("run", "test", "validate", "visualize")


def _read_input(args: argparse.Namespace) -> Any:
    if args.input is not None:
        try:
            return strict_json(args.input, "--input")
        except ValueError as exc:
            raise UsageError(f"--input is not valid JSON: {exc}") from None
    if args.input_file == "-":
        text = sys.stdin.read()
        name = "<stdin>"
    else:
        try:
            text = Path(args.input_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input-file: {exc}") from None
        name = args.input_file
    from pocketbatch.loader._source import parse_document

    return check_finite(parse_document(text, name=name).data, "--input-file")


def run(args: argparse.Namespace) -> int:
    flow = load_flow_from(args)
    value = _read_input(args)
    cache = open_step_cache(args, flow)
    try:
        result = flow.run(value)
    finally:
        if cache is not None:
            cache.close()
    try:
        line = dump_json(result.to_dict())
    except ValueError:  # NaN or Infinity in the result: not JSON
        from pocketbatch._result import FlowResult

        message = "the result holds NaN or Infinity, which JSON cannot represent"
        result = FlowResult.failed("INVALID_OUTPUT", message)
        line = dump_json(result.to_dict())
    print(line)
    if not result.ok:
        detail = result.error.message if result.error else result.outcome
        print(f"pocketbatch: the flow {result.outcome}: {detail}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def validate(args: argparse.Namespace) -> int:
    from pocketbatch.loader._lint import flow_warnings

    flow = load_flow_from(args)  # (its warnings are printed on stderr)
    mode = "control-flow" if flow.spec.control_flow else "data-flow"
    warned = len(flow_warnings(flow.spec))
    warnings = f", {_count(warned, 'warning')}" if warned else ""
    print(
        f"{args.flow}: ok ({flow.name}: {_count(len(flow.spec.steps), 'step')}, {mode}, "
        f"{_count(len(flow.tests), 'test case')}{warnings})"
    )
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def visualize(args: argparse.Namespace) -> int:
    print(load_flow_from(args).to_mermaid())
    return EXIT_OK


def test(args: argparse.Namespace) -> int:
    from pocketbatch.loader._testing import run_cases

    flow = load_flow_from(args)
    outcomes = asyncio.run(run_cases(flow))
    for outcome in outcomes:
        print(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.name}")
        for problem in outcome.problems:
            print(f"    {problem}")
    passed = sum(o.passed for o in outcomes)
    print(f"{passed} passed, {len(outcomes) - passed} failed")
    return EXIT_OK if passed == len(outcomes) else EXIT_FAILED
