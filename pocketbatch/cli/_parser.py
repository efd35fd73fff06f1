"""The ``pocketbatch`` argument parser: every command, its flags and their help, and
the argument types that check flag values (exit 2 with argparse's usage line)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from pocketbatch import __version__
from pocketbatch.cli._argparse import Parser as _Parser

if TYPE_CHECKING:
    from pocketbatch.batch._executors import ExecutorSpec

__all__ = ("build_parser", "finish_args")

_STDIN_NOTE = "- or /dev/stdin (or any pipe) reads stdin"
_CACHE_HELP = (
    "the SQLite file where 'cache: true' steps keep their answers "
    "(default: .pocketbatch-cache.sqlite in the flow's folder, when a step says cache)"
)


def finish_args(parser: _Parser, args: argparse.Namespace) -> argparse.Namespace:
    """Merge the spellings argparse cannot merge itself: ``validate F`` and
    ``validate --flow F`` (Stepflow's) set ``args.flow``; exit 2 with the command's
    usage when neither or both are given."""
    if not hasattr(args, "flow_option"):
        return args
    command = parser.chosen(args)
    paths = list(getattr(args, "paths", None) or ([args.flow] if args.flow else []))
    if args.flow_option is not None:
        if paths and args.command != "test":
            command.error(f"give the flow once: {paths[0]} or --flow {args.flow_option}")
        paths.append(args.flow_option)
    if not paths:
        command.error("the following arguments are required: flow (or --flow FLOW)")
    args.paths, args.flow = paths, paths[0]
    return args


def build_parser() -> _Parser:
    parser = _Parser(
        prog="pocketbatch",
        description="Run PocketFlow-style and Stepflow-format flows over many inputs.",
        epilog="exit codes: 0 success, 1 a flow, test case or batch item failed, 2 bad usage "
        "(or a flow that does not load, a server error, an output folder that does not "
        "exist, a port in use), 3 no space left, 130 interrupted, 141 stdout closed early",
    )
    parser.add_argument("--version", action="version", version=f"pocketbatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def flow_options(cmd: argparse.ArgumentParser, *, positional: bool | None) -> None:
        # positional=None: the command takes its own flow arguments
        if positional:
            cmd.add_argument("flow", nargs="?", help="the flow file (YAML or JSON)")
            cmd.add_argument(
                "--flow",
                dest="flow_option",
                metavar="FLOW",
                help="the flow file (Stepflow's spelling)",
            )
        elif positional is not None:
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
            help="a run variable; VALUE is parsed as JSON when it can be (repeatable; "
            "over --variables*)",
        )
        given = cmd.add_mutually_exclusive_group()
        given.add_argument(
            "--variables",
            "--variables-file",
            metavar="FILE",
            help="run variables from a JSON or YAML file holding one object",
        )
        given.add_argument("--variables-json", metavar="JSON", help="run variables as JSON text")
        given.add_argument("--variables-yaml", metavar="YAML", help="run variables as YAML text")
        cmd.add_argument(
            "--env-variables",
            action="store_true",
            help="a variable the flow's schema declares and nobody gave is read from the "
            "environment: its env_var annotation, else STEPFLOW_VAR_<NAME> (JSON when it parses)",
        )
        cmd.add_argument(
            "--no-python-imports",
            action="store_true",
            help="refuse /python/<module>.<function> components",
        )
        cmd.add_argument(
            "--no-input-schema",
            action="store_true",
            help="run inputs without checking them against the flow's input schema, "
            "as Stepflow does",
        )

    def cache_options(
        cmd: argparse.ArgumentParser,
        where_help: str = _CACHE_HELP,
        *,
        refresh: bool = True,
    ) -> None:
        where = cmd.add_mutually_exclusive_group()
        where.add_argument("--cache", metavar="PATH", help=where_help)
        where.add_argument(
            "--no-cache", action="store_true", help="'cache: true' steps call every time"
        )
        if refresh:
            cmd.add_argument(
                "--refresh-cache",
                action="store_true",
                help="ignore the stored answers of 'cache: true' steps, but store the new ones",
            )

    def rate_options(cmd: argparse.ArgumentParser, requests_help: str, tokens_help: str) -> None:
        for flag, help_text in (
            ("--requests-per-minute", requests_help),
            ("--tokens-per-minute", tokens_help),
        ):
            cmd.add_argument(flag, type=_positive_number, metavar="N", help=help_text)

    def executor_option(cmd: argparse.ArgumentParser, help_text: str) -> None:
        cmd.add_argument(
            "--executor",
            type=_executor_kind,
            default="async",
            metavar="async|process|ray|ray://HOST:PORT",
            help=help_text,
        )

    batch = sub.add_parser(
        "run-batch",
        help="run a flow over every line of a JSONL file, writing one JSON line per input",
        epilog="exit codes: 0 all succeeded, 1 some items failed, 2 usage or load error, "
        "3 no space left writing the output (free space, then rerun with --resume), "
        "130 interrupted (rerun with --resume)",
    )
    flow_options(batch, positional=False)
    batch.add_argument(
        "--inputs", required=True, help=f"the inputs: one JSON object per line; {_STDIN_NOTE}"
    )
    batch.add_argument("--output", help="where the results go (default: stdout)")
    batch.add_argument(
        "--max-concurrent",
        "--max-concurrency",
        dest="max_concurrent",
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
    executor_option(
        batch,
        "where items run: this process (async, default), a process pool, "
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
    rate_options(
        batch,
        "limit each LLM provider the flow calls to N requests a minute "
        "(default: learned from its x-ratelimit-* headers; shared by all the workers)",
        "limit each LLM provider to N tokens a minute (estimated before sending: "
        "characters / 4 plus max_tokens)",
    )
    cache_options(batch)

    serve = sub.add_parser(
        "serve",
        help="serve batches over HTTP (needs the server extra)",
        description="Serve batches over HTTP. Submitted flows' components are routed by "
        "--config: a pocketbatch.yaml or a Stepflow stepflow-config.yml. On start it prints "
        "where it listens, the store, whether a token is required and the executor.",
        epilog="exit codes: 0 stopped (Ctrl-C), 2 bad usage or the port is in use",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=7837, help="port (7837)")
    serve.add_argument("--db", default="pocketbatch.db", help="the SQLite store (pocketbatch.db)")
    cache_options(
        serve,
        "where submitted flows' 'cache: true' steps keep their answers "
        "(default: DB.cache.sqlite beside --db)",
        refresh=False,
    )
    serve.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (or POCKETBATCH_TOKEN)"
    )
    serve.add_argument(
        "--config",
        help="components for submitted flows: a pocketbatch.yaml or a Stepflow stepflow-config.yml",
    )
    rate_options(
        serve,
        "limit each LLM provider submitted flows call to N requests a minute, for all "
        "batches and runs together (default: learned from its x-ratelimit-* headers)",
        "limit each LLM provider to N tokens a minute, for all batches and runs together",
    )
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
    executor_option(
        serve,
        "where items run: the server's event loop (async), a process pool per batch, or Ray",
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

    run = sub.add_parser(
        "run",
        help="run a flow once and print its result as JSON",
        description="Run a flow once. With --inputs FILE it runs the flow over every line "
        "of a JSONL file instead: the same as run-batch, whose flags all apply.",
        epilog="--input FILE|JSON: an existing file is read as the input (JSON or YAML, as "
        "Stepflow reads --input); anything else is parsed as JSON text. With no input flag "
        "the input is read from stdin when stdin is not a terminal (--stdin-format). "
        "Exit codes: 0 success, 1 the flow failed, 2 bad usage or a flow that does not load",
    )
    flow_options(run, positional=False)
    cache_options(run)
    source = run.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        metavar="FILE|JSON",
        help="the input: a JSON or YAML file (Stepflow's meaning), else JSON text",
    )
    source.add_argument("--input-json", metavar="JSON", help="the input, as JSON text")
    source.add_argument("--input-yaml", metavar="YAML", help="the input, as YAML text")
    source.add_argument(
        "--input-file", metavar="FILE", help="a JSON (or YAML) file holding the input; - for stdin"
    )
    run.add_argument(
        "--stdin-format",
        choices=("json", "yaml"),
        default="json",
        help="how stdin is read when no input flag is given (json)",
    )
    run.add_argument("--output", metavar="FILE", help="write the result there (default: stdout)")
    run.add_argument(
        "--inputs",
        metavar="FILE",
        help="run over every line of a JSONL file: the same as run-batch (its flags apply)",
    )
    run.add_argument(
        "--max-concurrency",
        "--max-concurrent",
        dest="max_concurrent",
        type=_positive,
        metavar="N",
        help="with --inputs: inputs in flight at once (16)",
    )

    validate = sub.add_parser(
        "validate", help="check a flow file and its components without running it"
    )
    flow_options(validate, positional=True)
    validate.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 2) on warnings too: keys Stepflow ignores, such as a misspelt one",
    )
    validate.epilog = (
        "exit codes: 0 the flow loads (its warnings, if any, on stderr), 2 it does not "
        "load, or has a warning with --strict"
    )
    visualize = sub.add_parser(
        "visualize", help="print a flow as a Mermaid flowchart or a Graphviz DOT graph"
    )
    flow_options(visualize, positional=True)
    visualize.add_argument(
        "--format",
        choices=("mermaid", "dot"),
        default="mermaid",
        help="mermaid (default) or dot; for SVG or PNG pipe dot into Graphviz: dot -Tsvg",
    )
    visualize.add_argument(
        "-o", "--output", metavar="FILE", help="write the picture there (default: stdout)"
    )
    test = sub.add_parser(
        "test",
        help="run the test.cases of flow files, or of every flow under a folder",
        epilog="exit codes: 0 every case passed (or was updated), 1 a case failed, "
        "2 a flow that does not load, an unknown --case, or no test cases found",
    )
    test.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="flow files, or folders: every .yaml/.yml flow with test cases under them",
    )
    test.add_argument("--flow", dest="flow_option", metavar="FLOW", help="a flow file")
    flow_options(test, positional=None)
    test.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="NAME",
        help="run only the case NAME (repeatable)",
    )
    test.add_argument(
        "--update",
        action="store_true",
        help="write the actual results into the failing cases' (and output-less cases') "
        "output, leaving the rest of the file as it is",
    )
    test.add_argument(
        "--diff", action="store_true", help="show a failing case as a diff of expected and actual"
    )
    test.add_argument(
        "--max-concurrency",
        type=_positive,
        default=10,
        metavar="N",
        help="cases of a file run at once (10)",
    )
    components = sub.add_parser(
        "list-components",
        help="the components flows can use: builtins and what the config routes",
    )
    components.add_argument(
        "--config",
        help="a pocketbatch.yaml or stepflow-config.yml (default: one beside --flow, "
        "else in the current folder)",
    )
    components.add_argument("--flow", help="find the config beside this flow file")
    components.add_argument(
        "--format", choices=("pretty", "json", "yaml"), default="pretty", help="(pretty)"
    )
    return parser


def _client_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    def common(cmd: argparse.ArgumentParser, *, url: str | None = None) -> None:
        cmd.add_argument(
            "--url",
            required=url is None,
            default=url,
            help="the server's base URL, with or without /api/v1 (http://127.0.0.1:7837)",
        )
        cmd.add_argument("--token", help="the server's bearer token (or POCKETBATCH_TOKEN)")

    def records(cmd: argparse.ArgumentParser, *, wait_flag: bool = True) -> None:
        cmd.add_argument("--output", help="where the records go (default: stdout)")
        if wait_flag:
            cmd.add_argument(
                "--wait", action="store_true", help="wait for the batch to finish, then its records"
            )
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")

    def submit_options(cmd: argparse.ArgumentParser, *, url: str | None) -> None:
        common(cmd, url=url)
        cmd.add_argument("--flow", required=True, help="the flow file (YAML or JSON)")
        cmd.add_argument(
            "--inputs", required=True, help=f"the inputs: one JSON object per line; {_STDIN_NOTE}"
        )
        cmd.add_argument(
            "--max-concurrent",
            "--max-concurrency",
            dest="max_concurrent",
            type=_positive,
            default=16,
            metavar="N",
            help="inputs of this batch in flight at once (default 16)",
        )

    routed = (
        "The flow's components are routed by the server's config (serve --config: a "
        "pocketbatch.yaml or a Stepflow stepflow-config.yml); a config beside the flow is "
        "not sent."
    )
    submit = sub.add_parser(
        "submit-batch",
        help="submit a batch to a pocketbatch server",
        description=f"Submit a batch to a pocketbatch server. {routed} Without --wait it "
        'prints {"batch_id": ...} on stdout and returns; with --wait it waits and writes '
        "the records to --output (default: stdout).",
        epilog="exit codes: 0 submitted (or, with --wait, every item succeeded), 1 some "
        "items failed or the batch was cancelled, 2 bad usage or a server error, "
        "130 interrupted while waiting (the batch goes on running on the server)",
    )
    submit_options(submit, url=None)
    records(submit)
    stepflow_submit = sub.add_parser(
        "submit",
        help="Stepflow's submit: submit-batch --wait (records to --output or stdout)",
        description=f"Submit a batch and wait for its records: submit-batch --wait. {routed}",
        epilog="exit codes: as submit-batch --wait",
    )
    submit_options(stepflow_submit, url="http://127.0.0.1:7837")
    records(stepflow_submit, wait_flag=False)
    stepflow_submit.set_defaults(wait=True)  # always waits

    get = sub.add_parser(
        "get-batch",
        help="a remote batch's status, or (--wait/--output) its records",
        epilog="exit codes: 0 ok (with --wait/--output: every item succeeded), 1 some items "
        "failed or the batch was cancelled, 2 bad usage, an empty or unknown --batch-id "
        "(HTTP 404) or another server error",
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


def _executor_kind(text: str) -> ExecutorSpec:
    from pocketbatch.batch._executors import ExecutorSpec

    try:
        return ExecutorSpec.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected async, process, ray or ray://HOST:PORT, got {text!r}"
        ) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
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
