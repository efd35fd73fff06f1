"""The ``pocketbatch`` command line.

Commands::

    pocketbatch run-batch --flow F --inputs IN.jsonl [--output OUT.jsonl] [--max-concurrent N]
                          [--resume [--force]] [--executor async|process|ray|ray://HOST:PORT]
                          [--workers N] [--chunk-size N] [--ray-working-dir DIR]
                          [--config C] [--var k=v]
    pocketbatch run --flow F (--input JSON | --input-file F) [--config C] [--var k=v]
                    [--no-input-schema]
    pocketbatch validate F [--config C] [--strict]
    pocketbatch visualize F [--config C]
    pocketbatch test F [--config C] [--no-input-schema]
    pocketbatch serve [--host H] [--port P] [--db DB] [--token T] [--config C]
                      [--executor async|process|ray|ray://HOST:PORT]
                      [--allow-host HOST[:PORT]] [--allow-network CIDR] ...
    pocketbatch submit-batch --url U --flow F --inputs IN.jsonl [--max-concurrent N]
                             [--output OUT.jsonl] [--wait] [--token T]
    pocketbatch get-batch --url U --batch-id ID [--wait] [--output OUT.jsonl] [--token T]
    pocketbatch list-batches --url U [--limit N] [--offset N] [--token T]
    pocketbatch cancel-batch --url U --batch-id ID [--token T]

Results go to stdout as JSON, diagnostics to stderr. Exit codes: 0 success,
1 the flow (or a test case, or a batch item) failed, 2 bad usage, a flow that
does not load (or, for validate --strict, has a warning), or an executor that
cannot start (a Ray cluster out of reach, a component Ray cannot ship), 3 run-batch
ran out of space writing its output (a full disk, a quota or a file size limit: free
space and rerun it with --resume), 130 an interrupted batch (rerun it with --resume).
The client
commands (submit-batch, get-batch, list-batches, cancel-batch) exit 2 on a server
error too (401 wrong token, 404 unknown batch, 422 a flow that does not load, or
an unreachable server), with the status and the server's message on stderr.
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
from pocketbatch.cli import _batch, _flows, _remote
from pocketbatch.cli._common import EXIT_USAGE, UsageError
from pocketbatch.cli._parser import build_parser

__all__ = ("main",)

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run-batch": _batch.run_batch,
    "serve": _remote.serve,
    "submit-batch": _remote.submit_batch,
    "get-batch": _remote.get_batch,
    "list-batches": _remote.list_batches,
    "cancel-batch": _remote.cancel_batch,
    "run": _flows.run,
    "validate": _flows.validate,
    "visualize": _flows.visualize,
    "test": _flows.test,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pocketbatch`` command line; returns the exit code.

    Example:
        >>> main(["validate", "no/such/flow.yaml"])
        2
    """
    from pocketbatch.client import ServerError  # stdlib only: httpx loads with a Client

    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ServerError as exc:
        print(f"pocketbatch: server error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, PocketbatchError) as exc:
        # bad usage, a flow that does not load, a missing extra, an executor that cannot start
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
