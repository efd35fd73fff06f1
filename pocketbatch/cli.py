"""The ``pocketbatch`` command line.

Commands::

    pocketbatch run-batch --flow F --inputs IN.jsonl [--output OUT.jsonl] [--max-concurrent N]
                          [--resume [--force]] [--executor async|process|ray|ray://HOST:PORT]
                          [--workers N] [--chunk-size N] [--ray-working-dir DIR]
                          [--config C] [--var k=v]
    pocketbatch run --flow F (--input JSON | --input-file F) [--config C] [--var k=v]
    pocketbatch validate F [--config C]
    pocketbatch visualize F [--config C]
    pocketbatch test F [--config C]
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
does not load, or an executor that cannot start (a Ray cluster out of reach, a
component Ray cannot ship), 3 run-batch ran out of space writing its output (a full disk,
a quota or a file size limit: free space and rerun it with --resume), 130 an interrupted
batch (rerun it with --resume). The client
commands (submit-batch, get-batch, list-batches, cancel-batch) exit 2 on a server
error too (401 wrong token, 404 unknown batch, 422 a flow that does not load, or
an unreachable server), with the status and the server's message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pocketbatch._errors import LoadError, MissingExtraError, PocketbatchError

__all__ = ("main",)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pocketbatch",
        description="Run PocketFlow-style and Stepflow-format flows over many inputs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def flow_options(cmd: argparse.ArgumentParser, *, positional: bool) -> None:
        if positional:
            cmd.add_argument("flow", help="the flow file (YAML or JSON)")
        else:
            cmd.add_argument("--flow", required=True, help="the flow file (YAML or JSON)")
        cmd.add_argument(
            "--config",
            help="a pocketbatch.yaml or Stepflow stepflow-config.yml "
            "(default: one beside the flow)",
        )
        cmd.add_argument(
            "--var",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a run variable; VALUE is parsed as JSON when it can be (repeatable)",
        )
        cmd.add_argument(
            "--no-python-imports",
            action="store_true",
            help="refuse /python/<module>.<function> components",
        )

    batch = sub.add_parser(
        "run-batch",
        help="run a flow over every line of a JSONL file, writing one JSON line per input",
        epilog="exit codes: 0 all succeeded, 1 some items failed, 2 usage or load error, "
        "3 no space left writing the output (free space, then rerun with --resume), "
        "130 interrupted (rerun with --resume)",
    )
    flow_options(batch, positional=False)
    batch.add_argument("--inputs", required=True, help="the inputs: one JSON object per line")
    batch.add_argument("--output", help="where the results go (default: stdout)")
    batch.add_argument(
        "--max-concurrent",
        type=_positive,
        default=16,
        metavar="N",
        help="inputs in flight at once (default 16)",
    )
    batch.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted batch: keep the records --output has, run the rest",
    )
    batch.add_argument(
        "--force",
        action="store_true",
        help="with --resume: continue even though the flow, its config or the inputs "
        "changed since the first run (the output then mixes records of both)",
    )
    batch.add_argument(
        "--executor",
        type=_executor_kind,
        default="async",
        metavar="async|process|ray|ray://HOST:PORT",
        help="where items run: this process (async, default), a process pool, "
        "a local Ray instance, or a Ray cluster",
    )
    batch.add_argument(
        "--chunk-size",
        type=_positive,
        metavar="N",
        help="items per call to a Ray worker (default 16)",
    )
    batch.add_argument(
        "--ray-working-dir",
        metavar="DIR",
        help="with --executor ray: ship DIR to the Ray workers (Ray's runtime_env "
        "working_dir); the flow, config and /python/ modules inside it are read from "
        "the workers' copy",
    )
    batch.add_argument(
        "--workers", type=_positive, metavar="N", help="processes for --executor process"
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress bar or lines")

    serve = sub.add_parser("serve", help="serve batches over HTTP (needs the server extra)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=7837, help="port (7837)")
    serve.add_argument("--db", default="pocketbatch.db", help="the SQLite store (pocketbatch.db)")
    serve.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (or POCKETBATCH_TOKEN)"
    )
    serve.add_argument("--config", help="components for submitted flows: a pocketbatch.yaml")
    serve.add_argument(
        "--allow-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="let submitted flows use /python/MODULE.function (repeatable)",
    )
    serve.add_argument(
        "--data-dir", default=".", help="the folder /builtin/load_file may read (default: .)"
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        type=_allow_host,
        metavar="HOST[:PORT]",
        help="let submitted flows' /http/request and /builtin/openai connect to HOST (a name, "
        "or an address however spelled; [IPv6]:PORT) on PORT, or any port; by default "
        "loopback, link-local, private and other non-public addresses are refused, checked "
        "after DNS resolution (repeatable)",
    )
    serve.add_argument(
        "--allow-network",
        action="append",
        default=[],
        type=_allow_network,
        metavar="CIDR",
        help="let submitted flows connect to any address in CIDR, e.g. 10.0.0.0/8 "
        "(repeatable). The server's OPENAI_API_KEY goes only to OPENAI_BASE_URL (or "
        "https://api.openai.com/v1), never to a base_url a flow chooses",
    )
    serve.add_argument(
        "--executor",
        type=_executor_kind,
        default="async",
        metavar="async|process|ray|ray://HOST:PORT",
        help="where items run: the server's event loop (async), a process pool per batch, or Ray",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="processes per batch (process), or Ray actors all batches share "
        "(ray; default: one per CPU of the cluster)",
    )
    serve.add_argument(
        "--max-concurrent",
        type=_positive,
        default=64,
        metavar="N",
        help="items in flight across all batches (64)",
    )
    serve.add_argument(
        "--max-request-bytes",
        type=_positive,
        default=256 * 1024 * 1024,
        metavar="N",
        help="largest request body; counted while it streams in, 413 beyond (256 MiB)",
    )
    serve.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds a client has to send a request's headers; then it is cut off (10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds a request body may go without a byte; then it is cut off (60)",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive,
        default=1000,
        metavar="N",
        help="connections open at once; one more gets 503 (1000, kept below the open-file limit)",
    )

    _client_parsers(sub)

    run = sub.add_parser("run", help="run a flow once and print its result as JSON")
    flow_options(run, positional=False)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="the input, as JSON")
    source.add_argument("--input-file", help="a JSON (or YAML) file holding the input; - for stdin")

    for name, text in (
        ("validate", "check a flow file and its components without running it"),
        ("visualize", "print a flow as a Mermaid flowchart"),
        ("test", "run the flow file's test.cases"),
    ):
        flow_options(sub.add_parser(name, help=text), positional=True)
    return parser


def _client_parsers(sub: Any) -> None:
    def common(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--url",
            required=True,
            help="the server's base URL, with or without /api/v1 (http://127.0.0.1:7837)",
        )
        cmd.add_argument("--token", help="the server's bearer token (or POCKETBATCH_TOKEN)")

    def records(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--output", help="where the records go (default: stdout)")
        cmd.add_argument(
            "--wait", action="store_true", help="wait for the batch to finish, then its records"
        )
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")

    submit = sub.add_parser("submit-batch", help="submit a batch to a pocketbatch server")
    common(submit)
    submit.add_argument("--flow", required=True, help="the flow file (YAML or JSON)")
    submit.add_argument("--inputs", required=True, help="the inputs: one JSON object per line")
    submit.add_argument(
        "--max-concurrent",
        type=_positive,
        default=16,
        metavar="N",
        help="inputs of this batch in flight at once (default 16)",
    )
    records(submit)

    get = sub.add_parser(
        "get-batch", help="a remote batch's status, or (--wait/--output) its records"
    )
    common(get)
    get.add_argument("--batch-id", required=True, help="the id submit-batch printed")
    records(get)

    listing = sub.add_parser("list-batches", help="the server's batches, newest first (JSON)")
    common(listing)
    listing.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N (50)")
    listing.add_argument("--offset", type=int, default=0, metavar="N", help="skip N (0)")

    cancel = sub.add_parser("cancel-batch", help="cancel a running remote batch")
    common(cancel)
    cancel.add_argument("--batch-id", required=True, help="the batch to cancel")


def _strict_json(text: str) -> Any:
    """``json.loads`` without Python's NaN/Infinity extensions (they are not JSON)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(text, parse_constant=refuse)


def _check_finite(value: Any, what: str) -> Any:
    """Refuse NaN and infinities (which YAML can spell), so output stays JSON."""
    from pocketbatch.batch._jsonl import non_finite

    if non_finite(value):
        raise _UsageError(f"{what} holds NaN or Infinity, which JSON cannot represent")
    return value


def _executor_kind(text: str) -> str:
    if text in ("async", "process", "ray") or text.startswith("ray://"):
        return text
    raise argparse.ArgumentTypeError(
        f"expected async, process, ray or ray://HOST:PORT, got {text!r}"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _allow_host(text: str) -> str:
    from pocketbatch.loader._network import HostRule

    try:
        HostRule.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _allow_network(text: str) -> str:
    from pocketbatch.loader._network import parse_network

    try:
        parse_network(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _variables(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise _UsageError(f"--var takes NAME=VALUE, got {pair!r}")
        try:
            out[name] = _strict_json(raw)
        except ValueError:
            if raw.strip() in ("NaN", "Infinity", "-Infinity"):
                raise _UsageError(f"--var {name}: {raw} is not valid JSON") from None
            out[name] = raw
    return out


class _UsageError(Exception):
    pass


def _load(args: argparse.Namespace) -> Any:
    from pocketbatch.loader import load_flow

    return load_flow(
        Path(args.flow),
        config=args.config,
        variables=_variables(args.var),
        allow_python_imports=not args.no_python_imports,
    )


def _read_input(args: argparse.Namespace) -> Any:
    if args.input is not None:
        try:
            return _strict_json(args.input)
        except ValueError as exc:
            raise _UsageError(f"--input is not valid JSON: {exc}") from None
    if args.input_file == "-":
        text = sys.stdin.read()
        name = "<stdin>"
    else:
        try:
            text = Path(args.input_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"--input-file: {exc}") from None
        name = args.input_file
    from pocketbatch.loader._source import parse_document

    return _check_finite(parse_document(text, name=name).data, "--input-file")


def _dump(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
    )


def _cmd_run(args: argparse.Namespace) -> int:
    flow = _load(args)
    value = _read_input(args)
    result = flow.run(value)
    try:
        line = _dump(result.to_dict())
    except ValueError:  # NaN or Infinity in the result: not JSON
        from pocketbatch._result import FlowResult

        message = "the result holds NaN or Infinity, which JSON cannot represent"
        result = FlowResult.failed("INVALID_OUTPUT", message)
        line = _dump(result.to_dict())
    print(line)
    if not result.ok:
        detail = result.error.message if result.error else result.outcome
        print(f"pocketbatch: the flow {result.outcome}: {detail}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_run_batch(args: argparse.Namespace) -> int:
    from pocketbatch.batch._command import run_batch_command
    from pocketbatch.batch._jsonl import ResumeError

    inputs = Path(args.inputs)
    if not inputs.is_file():
        raise _UsageError(f"--inputs {args.inputs}: no such file")
    if args.resume and not args.output:
        raise _UsageError("--resume needs --output: the file to continue")
    if args.force and not args.resume:
        raise _UsageError("--force only applies with --resume")
    output = Path(args.output) if args.output else None
    if output is not None and output.resolve() == inputs.resolve():
        raise _UsageError("--output must not be the --inputs file")
    executor: Any = args.executor
    if args.ray_working_dir is not None:
        from pocketbatch.batch._executors import make_executor

        if not Path(args.ray_working_dir).is_dir():
            raise _UsageError(f"--ray-working-dir {args.ray_working_dir}: no such directory")
        try:  # the flow is bound later, by the runner
            executor = make_executor(
                executor,
                None,
                chunk_size=args.chunk_size,
                runtime_env={"working_dir": args.ray_working_dir},
            )
        except ValueError:
            raise _UsageError("--ray-working-dir needs --executor ray or ray://HOST:PORT") from None
    flow = _load(args)
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
        )
    except ResumeError as exc:
        raise _UsageError(str(exc)) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from pocketbatch.server._app import Limits, ServerSettings
    from pocketbatch.server._serve import serve

    settings = ServerSettings(
        db=Path(args.db),
        token=args.token or os.environ.get("POCKETBATCH_TOKEN") or None,
        config=Path(args.config) if args.config else None,
        allow_modules=frozenset(args.allow_module),
        data_dir=Path(args.data_dir).resolve(),
        max_concurrent=args.max_concurrent,
        executor=args.executor,
        max_workers=args.workers,
        allow_hosts=frozenset(args.allow_host),
        allow_networks=frozenset(args.allow_network),
        limits=Limits(
            max_request_bytes=args.max_request_bytes,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            max_connections=args.max_connections,
        ),
    )
    try:
        serve(settings, host=args.host, port=args.port)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    return EXIT_OK


def _client(args: argparse.Namespace) -> Any:
    from pocketbatch.client import Client

    return Client(args.url, token=args.token)


def _wait_with_progress(client: Any, batch_id: str, *, enabled: bool) -> dict[str, Any]:
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


def _write_records(client: Any, batch_id: str, output: str | None) -> int:
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


def _records_and_exit(args: argparse.Namespace, client: Any, batch_id: str) -> int:
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


def _cmd_submit_batch(args: argparse.Namespace) -> int:
    flow, inputs = Path(args.flow), Path(args.inputs)
    if not flow.is_file():
        raise _UsageError(f"--flow {args.flow}: no such file")
    if not inputs.is_file():
        raise _UsageError(f"--inputs {args.inputs}: no such file")
    if args.output and not args.wait:
        raise _UsageError("--output needs --wait (or fetch the records later: get-batch --output)")
    if args.output and Path(args.output).resolve() == inputs.resolve():
        raise _UsageError("--output must not be the --inputs file")
    with _client(args) as client:
        batch_id = client.submit_batch(flow, inputs, max_concurrent=args.max_concurrent)
        if not args.wait:
            print(_dump({"batch_id": batch_id}))
            return EXIT_OK
        print(f"pocketbatch: batch {batch_id} submitted", file=sys.stderr)
        return _records_and_exit(args, client, batch_id)


def _cmd_get_batch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if not args.wait and not args.output:
            print(_dump(client.get_batch(args.batch_id)))
            return EXIT_OK
        return _records_and_exit(args, client, args.batch_id)


def _cmd_list_batches(args: argparse.Namespace) -> int:
    if args.offset < 0:
        raise _UsageError("--offset must be at least 0")
    with _client(args) as client:
        print(_dump(client.list_batches(limit=args.limit, offset=args.offset)))
    return EXIT_OK


def _cmd_cancel_batch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(_dump(client.cancel_batch(args.batch_id)))
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    flow = _load(args)
    mode = "control-flow" if flow.spec.control_flow else "data-flow"
    print(
        f"{args.flow}: ok ({flow.name}: {_count(len(flow.spec.steps), 'step')}, {mode}, "
        f"{_count(len(flow.tests), 'test case')})"
    )
    return EXIT_OK


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _cmd_visualize(args: argparse.Namespace) -> int:
    print(_load(args).to_mermaid())
    return EXIT_OK


def _cmd_test(args: argparse.Namespace) -> int:
    from pocketbatch.loader._testing import run_cases

    flow = _load(args)
    outcomes = asyncio.run(run_cases(flow))
    for outcome in outcomes:
        print(f"{'PASS' if outcome.passed else 'FAIL'} {outcome.name}")
        for problem in outcome.problems:
            print(f"    {problem}")
    passed = sum(o.passed for o in outcomes)
    print(f"{passed} passed, {len(outcomes) - passed} failed")
    return EXIT_OK if passed == len(outcomes) else EXIT_FAILED


_COMMANDS = {
    "run-batch": _cmd_run_batch,
    "serve": _cmd_serve,
    "submit-batch": _cmd_submit_batch,
    "get-batch": _cmd_get_batch,
    "list-batches": _cmd_list_batches,
    "cancel-batch": _cmd_cancel_batch,
    "run": _cmd_run,
    "validate": _cmd_validate,
    "visualize": _cmd_visualize,
    "test": _cmd_test,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pocketbatch`` command line; returns the exit code.

    Example:
        >>> main(["validate", "no/such/flow.yaml"])
        2
    """
    from pocketbatch.client import ServerError  # stdlib only: httpx loads with a Client

    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ServerError as exc:
        print(f"pocketbatch: server error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LoadError as exc:
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MissingExtraError as exc:
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except _UsageError as exc:
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PocketbatchError as exc:  # e.g. an executor that cannot start
        print(f"pocketbatch: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
