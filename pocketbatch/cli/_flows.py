"""``pocketbatch run``, ``validate`` and ``visualize``: one flow file at a time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pocketbatch.cli._common import EXIT_FAILED, EXIT_OK, UsageError, open_step_cache
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
    # As run-batch writes a record: orjson's layout, and a result JSON cannot hold
    # (a set, an object, NaN, nesting too deep) is an INVALID_OUTPUT failure.
    from pocketbatch.batch._jsonl import encode_record

    encoded, invalid = encode_record(result.to_dict())
    _write(encoded.decode("utf-8"), args.output)
    if invalid:
        message = json.loads(encoded)["error"]["message"]
        print(f"pocketbatch: the flow failed: {message}", file=sys.stderr)
        return EXIT_FAILED
    if not result.ok:
        detail = result.error.message if result.error else result.outcome
        print(f"pocketbatch: the flow {result.outcome}: {detail}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def validate(args: argparse.Namespace) -> int:
    flow = load_flow_from(args)  # (its warnings are printed on stderr)
    mode = "control-flow" if flow.spec.control_flow else "data-flow"
    warned = len(flow.warnings)
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
