"""Stepflow compatibility: Stepflow's own ``test:`` cases, run by pocketbatch unchanged.

Run from the repository root (a script, not a test; its configs launch workers with
``uv``, which may fetch packages from PyPI)::

    python benchmarks/stepflow_compat.py                    # /work/stepflow
    python benchmarks/stepflow_compat.py PATH/TO/stepflow    # another checkout
    python benchmarks/stepflow_compat.py --only tests/mock   # files under one folder
    python benchmarks/stepflow_compat.py --no-input-schema   # inputs unchecked, as Stepflow

What it does:

1. copies the Stepflow checkout (without ``.git``, ``target`` and ``node_modules``) to
   a temporary directory, so nothing the flows or their workers write lands in it;
2. finds every YAML file under ``tests/`` and ``examples/`` with ``test.cases``
   (Stepflow 0.13's repository: 67 cases in 35 files; ``stepflow test`` itself skips
   the 7 files without ``schema:``, they are run here all the same);
3. loads each flow with :func:`pocketbatch.load_flow` exactly as a Stepflow user
   wrote it and its config (``test.config``/``test.configFile``, else the
   ``stepflow-config.yml`` beside it), and runs its cases with
   :func:`pocketbatch.loader._testing.run_cases` (the code behind ``pocketbatch
   test``), which applies ``stepflow test``'s matching rule (expected keys present
   and equal, extra keys allowed, lists of equal length, errors by code, message
   and a partial ``data``);
4. prints one line per case (``PASS``/``FAIL``, the file, the case, and for a
   failure its reason), then the totals and the failures counted by cause.

The configs' workers run ``uv --project ../../sdks/python/stepflow-py run ...``; the
checkout's ``sdks/python/.python-version`` asks uv for CPython 3.13, which uv would
download from GitHub. Unless ``UV_PYTHON`` is set, the script points uv at the Python
running it (``UV_PYTHON``, ``UV_PYTHON_DOWNLOADS=never``): the configs stay as
written, uv still installs the SDK and its dependencies from PyPI.

Each file's cases run with a time limit (``--timeout``, default 300 s): a hung worker
fails that file's remaining cases with ``timeout`` and the run goes on. The exit
code is 0 (the script measures; it does not judge).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SOURCE = Path("/work/stepflow")
ROOTS = ("tests", "examples")
IGNORED = shutil.ignore_patterns(".git", "target", "node_modules", ".venv", "__pycache__")


@dataclass(frozen=True)
class Case:
    """One case's verdict: ``file`` relative to the checkout, and why it failed."""

    file: str
    name: str
    passed: bool
    reason: str = ""
    cause: str = ""


def find_flows(root: Path) -> list[tuple[Path, int]]:
    """Every YAML file under ``tests/`` and ``examples/`` with ``test.cases``, and how many."""
    import yaml

    found: list[tuple[Path, int]] = []
    for top in ROOTS:
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                continue
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError):
                continue
            test = data.get("test") if isinstance(data, dict) else None
            cases = test.get("cases") if isinstance(test, dict) else None
            if isinstance(cases, list) and cases:
                found.append((path, len(cases)))
    return found


def cause_of_load_error(message: str) -> str:
    """A short cause for a flow that does not load (the same for all its cases)."""
    plugin = re.search(r"routed to plugin '[^']+' of type '([^']+)'", message)
    if plugin:
        return f"load: plugin type {plugin.group(1)!r} not supported"
    unknown = re.search(r"(?:unknown component|has no builtin) '(/[^']+)'", message)
    if unknown:
        return f"load: no component {unknown.group(1)}"
    return "load: " + re.sub(r"^\S+:\d+:\d+: ", "", message)[:90]


def cause_of_mismatch(problems: list[str], result: dict[str, Any]) -> str:
    """A short cause for a case that ran and did not match."""
    error = result.get("error") if result.get("outcome") == "failed" else None
    if isinstance(error, dict):
        message = str(error.get("message", ""))
        missing = re.search(r"unknown component '(/[^']+)'|no builtin '(/[^']+)'", message)
        if missing:
            return f"run: no component {missing.group(1) or missing.group(2)}"
        return f"run: failed with {error.get('code')} (expected otherwise)"
    first = problems[0] if problems else "?"
    return "run: result differs at " + first.split(":", 1)[0]


async def run_file(path: Path, root: Path, count: int, args: argparse.Namespace) -> list[Case]:
    from pocketbatch import load_flow
    from pocketbatch._errors import PocketbatchError
    from pocketbatch.loader._testing import run_cases

    rel = path.relative_to(root).as_posix()
    try:
        flow = load_flow(path, check_input_schema=not args.no_input_schema)
    except PocketbatchError as exc:
        cause = cause_of_load_error(str(exc))
        names = _case_names(path, count)
        return [Case(rel, n, False, f"does not load: {exc}", cause) for n in names]
    try:
        outcomes = await asyncio.wait_for(run_cases(flow), timeout=args.timeout)
    except TimeoutError:
        return [
            Case(rel, c.name, False, f"timed out after {args.timeout} s", "timeout")
            for c in flow.tests
        ]
    except Exception as exc:  # a crash in pocketbatch itself: measured, not hidden
        reason = f"crashed: {type(exc).__name__}: {exc}"
        return [Case(rel, c.name, False, reason, "crash") for c in flow.tests]
    finally:
        closing = getattr(flow, "aclose", None)
        if closing is not None:
            await closing()
    cases: list[Case] = []
    for outcome in outcomes:
        if outcome.passed:
            cases.append(Case(rel, outcome.name, True))
            continue
        result = outcome.result.to_dict()
        reason = "; ".join(outcome.problems[:3])
        cases.append(
            Case(rel, outcome.name, False, reason, cause_of_mismatch(outcome.problems, result))
        )
    return cases


def _case_names(path: Path, count: int) -> list[str]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases = data["test"]["cases"]
    return [
        str(c.get("name", f"case {i + 1}")) if isinstance(c, dict) else "?"
        for i, c in enumerate(cases)
    ][:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--only", help="only files under this folder (relative to the checkout)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per file")
    parser.add_argument(
        "--no-input-schema",
        action="store_true",
        help="run inputs without checking the flows' input schemas, as Stepflow does",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = parser.parse_args(argv)
    if "UV_PYTHON" not in os.environ:  # not the .python-version's 3.13, a download
        os.environ["UV_PYTHON"] = sys.executable
        os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    if not (args.source / "tests").is_dir():
        parser.error(f"{args.source}: not a Stepflow checkout (no tests/ folder)")

    work = Path(tempfile.mkdtemp(prefix="stepflow-compat-"))
    root = work / "stepflow"
    started = time.perf_counter()
    try:
        shutil.copytree(args.source, root, ignore=IGNORED, symlinks=True)
        flows = find_flows(root)
        if args.only:
            flows = [(p, n) for p, n in flows if p.is_relative_to(root / args.only)]
        print(
            f"{sum(n for _, n in flows)} cases in {len(flows)} files "
            f"(copied {args.source} to {root})",
            flush=True,
        )
        cases: list[Case] = []
        for path, count in flows:
            for case in asyncio.run(run_file(path, root, count, args)):
                cases.append(case)
                verdict = "PASS" if case.passed else "FAIL"
                tail = f" -- {case.reason}" if case.reason else ""
                print(f"{verdict} {case.file} :: {case.name}{tail}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(c.passed for c in cases)
    print(
        f"\n{passed} passed, {len(cases) - passed} failed, of {len(cases)} cases "
        f"({time.perf_counter() - started:.0f} s)"
    )
    causes = Counter(c.cause for c in cases if not c.passed)
    if causes:
        print("failures by cause:")
        for cause, n in causes.most_common():
            print(f"  {n:3d}  {cause}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
