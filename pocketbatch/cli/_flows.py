"""``pocketbatch run``, ``validate`` and ``visualize``: one flow file at a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pocketbatch.cli._common import EXIT_FAILED, EXIT_OK, UsageError, dump_json, open_step_cache
from pocketbatch.cli._inputs import check_output, load_flow_from, read_input

__all__ = ("run", "validate", "visualize")


def run(args: argparse.Namespace) -> int:
    if args.max_concurrent is not None:
        raise UsageError("--max-concurrency applies to a batch: give --inputs FILE too")
    check_output(args.output)
    flow = load_flow_from(args)
    value = read_input(args)
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
    _write(line, args.output)
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
    check_output(args.output)
    picture = load_flow_from(args).to_mermaid()
    if args.format == "dot":
        from pocketbatch.cli._dot import mermaid_to_dot

        picture = mermaid_to_dot(picture)
    _write(picture, args.output)
    return EXIT_OK


def _write(text: str, output: str | None) -> None:
    """``text`` and a newline to stdout, or to the file ``output``."""
    if output is None:
        print(text)
    else:
        Path(output).write_text(text + "\n", encoding="utf-8")
