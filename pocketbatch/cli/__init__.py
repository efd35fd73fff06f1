"""The ``pocketbatch`` command line.

Commands::

    pocketbatch run-batch --flow F --inputs IN.jsonl|- [--output OUT.jsonl] [--max-concurrent N]
                          [--resume [--force]] [--executor async|process|ray|ray://HOST:PORT]
                          [--workers N] [--chunk-size N] [--ray-working-dir DIR]
                          [--config C] [--var k=v] [--variables F|--variables-json J|...]
    pocketbatch run --flow F [--input FILE|JSON | --input-json J | --input-yaml Y |
                    --input-file F | (stdin)] [--output F] [--config C] [--var k=v]
                    [--no-input-schema]
    pocketbatch run --flow F --inputs IN.jsonl [--max-concurrency N] [--output OUT.jsonl]
                    (the same as run-batch)
    pocketbatch validate F|--flow F [--config C] [--strict]
    pocketbatch visualize F|--flow F [--format mermaid|dot] [--output F] [--config C]
    pocketbatch test PATH... [--case NAME] [--update] [--diff] [--config C]
                     [--no-input-schema]
    pocketbatch list-components [--config C | --flow F] [--format pretty|json|yaml]
    pocketbatch serve [--host H] [--port P] [--db DB] [--token T] [--config C]
                      [--executor async|process|ray|ray://HOST:PORT]
                      [--allow-host HOST[:PORT]] [--allow-network CIDR] ...
    pocketbatch submit-batch --url U --flow F --inputs IN.jsonl [--max-concurrent N]
                             [--output OUT.jsonl] [--wait] [--token T]
    pocketbatch submit [--url U] --flow F --inputs IN.jsonl [--output OUT.jsonl]
                       (submit-batch --wait)
    pocketbatch get-batch --url U --batch-id ID [--wait] [--output OUT.jsonl] [--token T]
    pocketbatch list-batches --url U [--limit N] [--offset N] [--token T]
    pocketbatch cancel-batch --url U --batch-id ID [--token T]

Results go to stdout as JSON, diagnostics to stderr. Exit codes: 0 success,
1 the flow (or a test case, or a batch item) failed, 2 bad usage (a typo'd flag
gets the command's usage and a did-you-mean; an --output whose folder does not
exist), a flow that does not load (or, for validate --strict, has a warning), an
executor that cannot start (a Ray cluster out of reach, a component Ray cannot
ship) or a port that is in use, 3 run-batch
ran out of space writing its output (a full disk, a quota or a file size limit:
free space and rerun it with --resume), 130 interrupted (a run-batch with
--output: rerun it with --resume), 141 stdout was closed early (``| head``),
quietly. The client commands (submit-batch, submit, get-batch, list-batches,
cancel-batch) exit 2 on a server error too (401 wrong token, 404 unknown batch,
422 a flow that does not load, or an unreachable server), with the status and
the server's message on stderr.

Every command that loads a flow prints its warnings (keys Stepflow ignores, such as
a misspelt one; the flow still loads, as in Stepflow) to stderr as
``pocketbatch: warning: file:line:column: ...``. --no-input-schema (run, run-batch,
test) runs inputs without checking the flow's input schema, as Stepflow does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from pocketbatch._errors import PocketbatchError
from pocketbatch.cli import _batch, _components, _flows, _remote, _testcmd
from pocketbatch.cli._common import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
)
from pocketbatch.cli._parser import build_parser, finish_args

__all__ = ("main",)

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run-batch": _batch.run_batch,
    "serve": _remote.serve,
    "submit-batch": _remote.submit_batch,
    "submit": _remote.submit_batch,
    "get-batch": _remote.get_batch,
    "list-batches": _remote.list_batches,
    "cancel-batch": _remote.cancel_batch,
    "run": _flows.run,
    "validate": _flows.validate,
    "visualize": _flows.visualize,
    "test": _testcmd.test,
    "list-components": _components.list_components,
}


def _batch_through_run(argv: list[str]) -> list[str]:
    """Stepflow's ``run --inputs F`` is a batch: ``run-batch`` (whose flags all apply)."""
    if argv[:1] == ["run"] and any(a == "--inputs" or a.startswith("--inputs=") for a in argv):
        return ["run-batch", *argv[1:]]
    return argv


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit's flush stays quiet."""
    import os

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pocketbatch`` command line; returns the exit code.

    Example:
        >>> main(["validate", "no/such/flow.yaml"])
        2
    """
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `pocketbatch ... | head -1`: the reader has gone
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("pocketbatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    from pocketbatch.client import ServerError  # stdlib only: httpx loads with a Client

    parser = build_parser()
    args = finish_args(parser, parser.parse(_batch_through_run(argv)))
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # here, so that a closed pipe is caught in main
        return code
    except ServerError as exc:
        print(f"pocketbatch: server error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, PocketbatchError) as exc:
        # bad usage, a flow that does not load, a missing extra, an executor that cannot start
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        raise  # quiet, in main
    except OSError as exc:  # a file or folder the command could not open or write
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
