"""``pocketbatch serve``, and the commands that talk to a server: ``submit-batch``,
``get-batch``, ``list-batches`` and ``cancel-batch``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketbatch.cli._common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    dump_json,
)
from pocketbatch.cli._inputs import check_output, is_stdin, spooled

if TYPE_CHECKING:
    from pocketbatch.client import Client

__all__ = (
    "cancel_batch",
    "get_batch",
    "list_batches",
    "serve",
    "server_cache_path",
    "submit_batch",
)


def serve(args: argparse.Namespace) -> int:
    import os

    from pocketbatch.loader._services import ServiceSettings
    from pocketbatch.server._app import Limits, ServerSettings
    from pocketbatch.server._serve import serve as serve_http

    settings = ServerSettings(
        db=Path(args.db),
        cache=server_cache_path(args),
        token=args.token or os.environ.get("POCKETBATCH_TOKEN") or None,
        config=Path(args.config) if args.config else None,
        allow_modules=frozenset(args.allow_module),
        data_dir=Path(args.data_dir).resolve(),
        max_concurrent=args.max_concurrent,
        executor=args.executor.name,  # an ExecutorSpec: the server parses the name again
        max_workers=args.workers,
        allow_hosts=frozenset(args.allow_host),
        allow_networks=frozenset(args.allow_network),
        services=ServiceSettings(
            requests_per_minute=args.requests_per_minute,
            tokens_per_minute=args.tokens_per_minute,
        ),
        limits=Limits(
            max_request_bytes=args.max_request_bytes,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        ),
    )
    try:
        serve_http(settings, host=args.host, port=args.port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def server_cache_path(args: argparse.Namespace) -> Path | None:
    """The step cache of ``serve``: ``--cache``, else ``DB.cache.sqlite`` beside ``--db``
    (one file for every submitted flow: the server has one operator, and a key is
    the call itself); ``None`` with ``--no-cache``."""
    if args.no_cache:
        return None
    if args.cache:
        return Path(args.cache)
    db = Path(args.db)
    return db.with_name(db.name + ".cache.sqlite")


def _client(args: argparse.Namespace) -> Client:
    from pocketbatch.client import Client

    return Client(args.url, token=args.token)


def _wait_with_progress(client: Client, batch_id: str, *, enabled: bool) -> dict[str, Any]:
    """Poll the batch until it finishes, showing its done/total as a progress bar."""
    from pocketbatch.batch._progress import Progress

    progress: Progress | None = None

    def on_poll(batch: dict[str, Any]) -> None:
        nonlocal progress
        if progress is None:
            progress = Progress(batch["total"], enabled=enabled)
        succeeded = progress.done - progress.failed
        for _ in range(batch["failed"] - progress.failed):
            progress.update(ok=False)
        for _ in range(batch["succeeded"] - succeeded):
            progress.update(ok=True)

    try:
        final: dict[str, Any] = client.wait(batch_id, on_poll=on_poll)
    finally:
        if progress is not None:
            progress.close()
    print(
        f"pocketbatch: batch {batch_id} {final['status']}: total {final['total']}, "
        f"succeeded {final['succeeded']}, failed {final['failed']}",
        file=sys.stderr,
    )
    return final


def _write_records(client: Client, batch_id: str, output: str | None) -> int:
    """The batch's records to ``output`` (atomically) or stdout; how many."""
    if output is not None:
        return int(client.download_outputs(batch_id, output))
    count = 0
    out = sys.stdout.buffer
    for line in client.outputs(batch_id):
        out.write(line + b"\n")
        count += 1
    out.flush()
    return count


def _records_and_exit(args: argparse.Namespace, client: Client, batch_id: str) -> int:
    batch = (
        _wait_with_progress(client, batch_id, enabled=not args.no_progress)
        if args.wait
        else client.get_batch(batch_id)
    )
    written = _write_records(client, batch_id, args.output)
    if batch["status"] == "running":
        print(
            f"pocketbatch: batch {batch_id} is still running: {written} of {batch['total']} "
            "records so far",
            file=sys.stderr,
        )
    elif batch["status"] != "completed":
        print(
            f"pocketbatch: batch {batch_id} {batch['status']} after {written} of "
            f"{batch['total']} records",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_FAILED if batch["failed"] else EXIT_OK


def _print_warning(warning: str) -> None:
    """A warning the server found in the submitted flow, as every command prints one."""
    print(f"pocketbatch: warning: {warning}", file=sys.stderr, flush=True)


def submit_batch(args: argparse.Namespace) -> int:
    """``submit-batch`` (and ``submit``, which waits). Without ``--wait`` the one line
    ``{"batch_id": ...}`` goes to stdout whatever ``--output`` says (the records are
    fetched later: ``get-batch --wait --output``)."""
    flow = Path(args.flow)
    if not flow.is_file():
        raise UsageError(f"--flow {args.flow}: no such file")
    piped = is_stdin(args.inputs)
    if not piped and not Path(args.inputs).is_file():
        raise UsageError(f"--inputs {args.inputs}: no such file")
    if args.wait:
        check_output(args.output)
        if args.output and not piped and Path(args.output).resolve() == Path(args.inputs).resolve():
            raise UsageError("--output must not be the --inputs file")
    with spooled(args.inputs) as inputs, _client(args) as client:
        batch_id = client.submit_batch(
            flow, inputs, max_concurrent=args.max_concurrent, on_warning=_print_warning
        )
    if not args.wait:
        print(dump_json({"batch_id": batch_id}), flush=True)
        if args.output:
            print(
                f"pocketbatch: batch {batch_id} submitted; --output is written with --wait "
                f"only: get-batch --batch-id {batch_id} --wait --output {args.output}",
                file=sys.stderr,
            )
        return EXIT_OK
    return _wait_for(args, batch_id, submitted=True)


def _wait_for(args: argparse.Namespace, batch_id: str, *, submitted: bool = False) -> int:
    """The batch's records (``--wait``: once it ends); Ctrl-C leaves it running."""
    try:
        if submitted:
            print(f"pocketbatch: batch {batch_id} submitted", file=sys.stderr, flush=True)
        with _client(args) as client:
            return _records_and_exit(args, client, batch_id)
    except KeyboardInterrupt:
        print(
            f"pocketbatch: interrupted; batch {batch_id} goes on running on the server: "
            f"get-batch --batch-id {batch_id} --wait fetches its records, cancel-batch stops it",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def get_batch(args: argparse.Namespace) -> int:
    if not args.batch_id.strip():
        raise UsageError(
            "--batch-id is empty: give the id submit-batch printed "
            '({"batch_id": ...} on its stdout)'
        )
    if args.output:
        check_output(args.output)
    if not args.wait and not args.output:
        with _client(args) as client:
            print(dump_json(client.get_batch(args.batch_id)))
        return EXIT_OK
    return _wait_for(args, args.batch_id)


def list_batches(args: argparse.Namespace) -> int:
    if args.offset < 0:
        raise UsageError("--offset must be at least 0")
    with _client(args) as client:
        print(dump_json(client.list_batches(limit=args.limit, offset=args.offset)))
    return EXIT_OK


def cancel_batch(args: argparse.Namespace) -> int:
    if not args.batch_id.strip():
        raise UsageError("--batch-id is empty: give the id submit-batch printed")
    with _client(args) as client:
        print(dump_json(client.cancel_batch(args.batch_id)))
    return EXIT_OK
