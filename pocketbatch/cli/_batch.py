"""``pocketbatch run-batch``: a flow over every line of a JSONL file (see
:mod:`pocketbatch.batch._command`, which runs it once the arguments are checked)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from pocketbatch.cli._common import UsageError, open_step_cache
from pocketbatch.cli._inputs import check_output, is_stdin, load_flow_from, spooled

if TYPE_CHECKING:
    from pocketbatch.batch._executors import ExecutorSpec
    from pocketbatch.loader import LoadedFlow, StepCache

__all__ = ("run_batch",)


def run_batch(args: argparse.Namespace) -> int:
    piped = is_stdin(args.inputs)
    if not piped and not Path(args.inputs).is_file():
        raise UsageError(f"--inputs {args.inputs}: no such file")
    if args.resume and not args.output:
        if piped:
            raise UsageError(
                f"--resume needs --output: the inputs come from {args.inputs} (stdin), so "
                "the records to continue must be in a file: --output FILE"
            )
        raise UsageError("--resume needs --output: the file to continue")
    if args.force and not args.resume:
        raise UsageError("--force only applies with --resume")
    check_output(args.output)
    output = Path(args.output) if args.output else None
    if output is not None and not piped and output.resolve() == Path(args.inputs).resolve():
        raise UsageError("--output must not be the --inputs file")
    executor: ExecutorSpec = args.executor  # parsed by the parser
    if args.ray_working_dir is not None:
        if not Path(args.ray_working_dir).is_dir():
            raise UsageError(f"--ray-working-dir {args.ray_working_dir}: no such directory")
        try:
            executor = executor.with_options(runtime_env={"working_dir": args.ray_working_dir})
        except ValueError:
            raise UsageError("--ray-working-dir needs --executor ray or ray://HOST:PORT") from None
    flow = load_flow_from(args)
    with spooled(args.inputs) as inputs:
        return _run(args, flow, inputs, output, executor)


def _run(
    args: argparse.Namespace,
    flow: LoadedFlow,
    inputs: Path,
    output: Path | None,
    executor: ExecutorSpec,
) -> int:
    from pocketbatch.batch._command import run_batch_command
    from pocketbatch.batch._jsonl import ResumeError

    cache = open_step_cache(args, flow)
    before = len(cache) if cache is not None else 0
    try:
        return run_batch_command(
            flow,
            inputs,
            output,
            max_concurrent=args.max_concurrent,
            resume=args.resume,
            executor=executor,
            workers=args.workers,
            progress=not args.no_progress,
            chunk_size=args.chunk_size,
            force=args.force,
            requests_per_minute=args.requests_per_minute,
            tokens_per_minute=args.tokens_per_minute,
        )
    except ResumeError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if cache is not None:
            _cache_summary(cache, before, in_process=executor.kind == "async")
            cache.close()


def _cache_summary(cache: StepCache, before: int, *, in_process: bool) -> None:
    """One stderr line: what the step cache saved (workers count their own hits)."""
    import sys

    stats = cache.statistics()
    if in_process:
        said = f"{stats.hits} answers reused, {stats.stores} stored"
    else:
        said = f"{len(cache) - before} new answers stored"
    print(f"pocketbatch: step cache {cache.path}: {said}", file=sys.stderr, flush=True)
