"""Run one PocketFlow cookbook script with ``pocketflow`` or with ``pocketbatch``.

``python _runner.py pocketflow|pocketbatch SCRIPT [ARGS...]`` from the example's
directory. This folder (the offline stand-ins for openai, anthropic, google.genai,
ddgs, dotenv) comes right after the example's own directory on ``sys.path``. With
``pocketbatch``, ``import pocketflow`` gives ``pocketbatch`` (a ``sys.modules``
alias): the example's code is not touched. Warnings and the final exception are
printed in a form without file paths or line numbers, so the two runs compare;
the traceback follows a ``--- traceback`` line that the comparison ignores.
"""

from __future__ import annotations

import os
import random
import runpy
import sys
import traceback
import warnings
from typing import Any


def _show_warning(message: Any, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"WARNING {category.__name__}: {message}", file=sys.stderr, flush=True)


def main() -> int:
    mode, script, *args = sys.argv[1:]
    if mode == "pocketbatch":
        import pocketbatch

        sys.modules["pocketflow"] = pocketbatch
    elif mode != "pocketflow":
        raise SystemExit(f"mode must be pocketflow or pocketbatch, not {mode!r}")
    sys.path.insert(0, os.getcwd())
    random.seed(0)  # examples that roll dice (supervisor) roll the same in both runs
    warnings.showwarning = _show_warning
    warnings.simplefilter("always")
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        sys.stdout.flush()
        code = stop.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException as exc:  # reported, compared, then the run fails
        sys.stdout.flush()
        print(f"EXCEPTION {type(exc).__name__}: {exc}", file=sys.stderr)
        print("--- traceback", file=sys.stderr)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
