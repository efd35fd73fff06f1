"""What the ``pocketbatch`` commands read and where they write: ``run``'s input
(``--input FILE|JSON``, ``--input-json``, ``--input-yaml``, ``--input-file``,
stdin), run variables (``--variables*``, ``--var``, ``--env-variables``), inputs
read from a pipe, and ``--output`` paths checked before any work is done."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketbatch.cli._common import UsageError, check_finite, parse_variables, strict_json

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow

__all__ = (
    "check_output",
    "load_flow_from",
    "explicit_variables",
    "from_env",
    "is_stdin",
    "read_input",
    "spooled",
)

_STDIN_NAMES = ("-", "/dev/stdin")


def _document(text: str, name: str, what: str) -> Any:
    """JSON or YAML ``text`` (``name`` in messages): its value, finite."""
    from pocketbatch.loader._source import parse_document

    return check_finite(parse_document(text, name=name).data, what)


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what}: {exc}") from None


def _json_text(text: str, what: str, hint: str = "") -> Any:
    try:
        return check_finite(strict_json(text, what), what)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}{hint}") from None


def _is_file(text: str) -> bool:
    """Whether ``text`` names an existing file (JSON text too long for a path: no)."""
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def read_input(args: argparse.Namespace) -> Any:
    """The input of ``run``.

    ``--input`` takes a file or JSON text: a path to an existing file is read as
    the input file (JSON or YAML), as Stepflow reads ``--input``; anything else is
    parsed as JSON text (pocketbatch's older form, ``--input-json`` is its explicit
    spelling). With no input flag, stdin is read (``--stdin-format``) unless it is a
    terminal."""
    if args.input is not None:
        if _is_file(args.input):
            return _document(_read_text(args.input, "--input"), args.input, "--input")
        hint = " (nor a file: --input takes a file or JSON text)"
        return _json_text(args.input, "--input", hint)
    if args.input_json is not None:
        return _json_text(args.input_json, "--input-json")
    if args.input_yaml is not None:
        return _document(args.input_yaml, "--input-yaml", "--input-yaml")
    if args.input_file is not None:
        if args.input_file == "-":
            return _document(sys.stdin.read(), "<stdin>", "--input-file")
        return _document(
            _read_text(args.input_file, "--input-file"), args.input_file, "--input-file"
        )
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError(
            "no input: give --input FILE|JSON, --input-json JSON, --input-yaml YAML or "
            "--input-file FILE, or pipe the input on stdin"
        )
    text = sys.stdin.read()
    if not text.strip():
        raise UsageError("no input: stdin is empty (give --input FILE|JSON, or pipe the input)")
    if args.stdin_format == "yaml":
        return _document(text, "<stdin>", "stdin")
    return _json_text(text, "stdin")


def explicit_variables(args: argparse.Namespace) -> dict[str, Any]:
    """``--variables FILE`` / ``--variables-json`` / ``--variables-yaml`` (one object),
    with each ``--var NAME=VALUE`` over it."""
    given: Any = {}
    if args.variables is not None:
        given = _document(_read_text(args.variables, "--variables"), args.variables, "--variables")
        what = "--variables"
    elif args.variables_json is not None:
        given, what = _json_text(args.variables_json, "--variables-json"), "--variables-json"
    elif args.variables_yaml is not None:
        given = _document(args.variables_yaml, "--variables-yaml", "--variables-yaml")
        what = "--variables-yaml"
    if not isinstance(given, dict):
        raise UsageError(f"{what} must hold an object of NAME: VALUE, got {type(given).__name__}")
    return {**given, **parse_variables(args.var)}


def from_env(
    schema: Any, given: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """The variables ``schema`` declares that ``given`` lacks, found in ``environ``: the
    name its ``env_var`` annotation gives, else ``STEPFLOW_VAR_<NAME>`` (upper case),
    as Stepflow's ``--env-variables`` reads them; JSON when the value parses, else the
    string.

    Example:
        >>> schema = {"properties": {"model": {}, "key": {"env_var": "API_KEY"}}}
        >>> env = {"STEPFLOW_VAR_MODEL": "gpt", "API_KEY": "s3cret"}
        >>> from_env(schema, {}, env)
        {'model': 'gpt', 'key': 's3cret'}
    """
    declared = schema.get("properties") if isinstance(schema, dict) else None
    found: dict[str, Any] = {}
    for name, spec in (declared or {}).items():
        if name in given:
            continue
        annotated = spec.get("env_var") if isinstance(spec, dict) else None
        variable = annotated if isinstance(annotated, str) else f"STEPFLOW_VAR_{name.upper()}"
        if variable in environ:
            raw = environ[variable]
            try:
                found[name] = strict_json(raw, variable)
            except ValueError:
                found[name] = raw
    return found


def is_stdin(name: str) -> bool:
    """Whether ``--inputs NAME`` means a stream: ``-``, ``/dev/stdin``, or a path that
    exists but is not a regular file (a pipe, ``<(...)``)."""
    if name in _STDIN_NAMES:
        return True
    path = Path(name)
    return path.exists() and not path.is_file() and not path.is_dir()


@contextmanager
def spooled(name: str, flag: str = "--inputs") -> Iterator[Path]:
    """The inputs as a regular file: ``name`` itself, or a stream (see :func:`is_stdin`)
    copied to a temporary file first (removed afterwards), so that its lines can be
    counted for the progress bar and read as a file is."""
    if not is_stdin(name):
        if not Path(name).is_file():
            raise UsageError(f"{flag} {name}: no such file")
        yield Path(name)
        return
    with tempfile.NamedTemporaryFile(prefix="pocketbatch-inputs-", suffix=".jsonl") as copy:
        if name == "-":
            source = sys.stdin.buffer
            shutil.copyfileobj(source, copy)
        else:
            with open(name, "rb") as stream:
                shutil.copyfileobj(stream, copy)
        copy.flush()
        yield Path(copy.name)


def check_output(path: str | None, flag: str = "--output") -> None:
    """Refuse an output path whose folder does not exist, or that is a folder (exit 2),
    before anything runs."""
    if path is None or path in ("-", "/dev/stdout"):
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: no such folder {str(folder)!r}")


def load_flow_from(args: argparse.Namespace, flow: str | None = None) -> LoadedFlow:
    """The flow file ``flow`` (default ``args.flow``) with the run variables the flags
    give; with ``--env-variables``, those its schema declares that no flag gave are
    read from the environment (see :func:`from_env`). Its warnings (keys Stepflow
    ignores) are printed to stderr as ``pocketbatch: warning: file:line:column: ...``;
    with ``--strict`` the first one is a load error instead."""
    from pocketbatch.loader import load_flow

    path = Path(flow if flow is not None else args.flow)
    variables = explicit_variables(args)

    def load(variables: dict[str, Any]) -> LoadedFlow:
        return load_flow(
            path,
            config=args.config,
            variables=variables,
            allow_python_imports=not args.no_python_imports,
            strict=getattr(args, "strict", False),
            check_input_schema=not getattr(args, "no_input_schema", False),
        )

    loaded = load(variables)
    if args.env_variables:
        extra = from_env(loaded.spec.variables_schema, variables)
        if extra:
            loaded = load({**variables, **extra})
    for warning in loaded.warnings:
        print(f"pocketbatch: warning: {warning}", file=sys.stderr)
    return loaded
