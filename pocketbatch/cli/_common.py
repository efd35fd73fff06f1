"""What the ``pocketbatch`` commands share: exit codes, the usage error, reading
``--var`` values and a flow file's options, and printing JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pocketbatch.loader import LoadedFlow, StepCache

__all__ = (
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "check_finite",
    "dump_json",
    "load_flow_from",
    "open_step_cache",
    "parse_variables",
    "strict_json",
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage the parser cannot see: printed as ``pocketbatch: ...``, exit 2."""


def strict_json(text: str, what: str) -> Any:
    """``json.loads`` without Python's NaN/Infinity extensions (they are not JSON).

    Raises:
        ValueError: not JSON.
        UsageError: nested more than the loader's depth limit (``what`` names the flag).
    """
    from pocketbatch.loader._source import MAX_DEPTH, nesting_depth

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    too_deep = UsageError(f"{what} nests more than {MAX_DEPTH} levels (the limit is {MAX_DEPTH})")
    try:
        value = json.loads(text, parse_constant=refuse)
    except RecursionError:
        raise too_deep from None
    if nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise too_deep
    return value


def check_finite(value: Any, what: str) -> Any:
    """Refuse NaN and infinities (which YAML can spell), so output stays JSON."""
    from pocketbatch.batch._jsonl import non_finite

    if non_finite(value):
        raise UsageError(f"{what} holds NaN or Infinity, which JSON cannot represent")
    return value


def parse_variables(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--var takes NAME=VALUE, got {pair!r}")
        try:
            out[name] = strict_json(raw, f"--var {name}")
        except ValueError:
            if raw.strip() in ("NaN", "Infinity", "-Infinity"):
                raise UsageError(f"--var {name}: {raw} is not valid JSON") from None
            out[name] = raw
    return out


def load_flow_from(args: argparse.Namespace) -> LoadedFlow:
    """Load ``--flow``; its :class:`~pocketbatch.FlowWarning` s go to stderr, one line
    each (``pocketbatch: warning: flow.yaml:2:1: ...``)."""
    import warnings

    from pocketbatch._errors import FlowWarning
    from pocketbatch.loader import load_flow

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FlowWarning)
        flow = load_flow(
            Path(args.flow),
            config=args.config,
            variables=parse_variables(args.var),
            allow_python_imports=not args.no_python_imports,
        )
    for warning in caught:
        if issubclass(warning.category, FlowWarning):
            print(f"pocketbatch: warning: {warning.message}", file=sys.stderr, flush=True)
        else:  # not ours: as Python would show it
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return flow


def open_step_cache(args: argparse.Namespace, flow: LoadedFlow) -> StepCache | None:
    """The step cache ``--cache``, ``--no-cache`` and ``--refresh-cache`` ask for, set
    on ``flow``: ``--cache PATH``, else ``.pocketbatch-cache.sqlite`` in the flow's
    folder when one of its steps says ``cache`` (the keys are content addresses, so
    every run of every flow there may share it), else none."""
    from pocketbatch._errors import PocketbatchError
    from pocketbatch.loader import StepCache
    from pocketbatch.loader._cache import DEFAULT_FILE

    if args.no_cache:
        if args.refresh_cache:
            raise UsageError("--refresh-cache stores answers: it cannot go with --no-cache")
        return None
    if args.cache is not None:
        path = Path(args.cache)
    elif flow.uses_cache:
        path = Path(args.flow).resolve().parent / DEFAULT_FILE
    else:
        return None
    try:
        cache = StepCache(path, refresh=args.refresh_cache)
    except PocketbatchError as exc:
        raise UsageError(f"{exc} (choose another file with --cache PATH, or --no-cache)") from None
    flow.cache = cache
    return cache


def dump_json(value: Any) -> str:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
    )
