"""Run PocketFlow's own cookbook with ``pocketflow`` and with ``pocketbatch``; compare.

Each example's ``main.py`` runs twice in a fresh copy of its folder: once as
written, once with ``import pocketflow`` giving ``pocketbatch`` (a ``sys.modules``
alias set by ``pocketflow_stubs/_runner.py``; the example's code is untouched).
No network: the LLM SDKs and web search the examples call are offline,
deterministic stand-ins in ``pocketflow_stubs/`` (first on ``sys.path``); chat
loops read ``hello`` then ``exit`` from stdin. Two runs match when their stdout,
warnings, final exception (type and message), exit code and the files they leave
in their folder are the same, after masking addresses, uuids and durations.

    python benchmarks/pocketflow_compat.py [--cookbook /work/pocketflow/cookbook]
        [--only NAME ...] [--timeout 60] [--show-diff] [--extra-path DIR]

Prints one line per example and a summary; exits 1 if a runnable example differs.
An example is runnable when its PocketFlow run finishes (exit 0) within the
timeout; the ones that fail under PocketFlow too (a package missing here, a
server, a stub answer the example cannot parse) are listed with that reason and
still compared.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUBS = Path(__file__).resolve().parent / "pocketflow_stubs"
STDIN = "hello\nexit\nexit\nquit\nq\n"
# Examples that read stdin differently: a thread that stops the stream on any line
# (empty stdin keeps it deterministic), a joke loop waiting for yes or no.
STDIN_FOR = {
    "pocketflow-llm-streaming": "",
    "pocketflow-cli-hitl": "cats\nyes\n",
    "pocketflow-async-basic": "pasta\ny\n",
}
# Examples that print from a second thread: the text that thread prints (removed before
# comparing) lands anywhere in the output, and so does its traceback (only stdout is
# compared). llm-streaming's stdin listener prompts, then dies on EOF, while the stream runs.
RACY = {"pocketflow-llm-streaming": "Press ENTER at any time to interrupt streaming...\n"}
# Folders whose main program is a server or UI: they never end on their own.
SERVERS = {
    "pocketflow-a2a": "an A2A server and client",
    "pocketflow-fastapi-background": "a FastAPI server",
    "pocketflow-fastapi-hitl": "a FastAPI server",
    "pocketflow-fastapi-websocket": "a FastAPI server",
    "pocketflow-gradio-hitl": "a Gradio UI",
    "pocketflow-streamlit-fsm": "a Streamlit UI",
    "pocketflow-voice-chat": "a microphone loop",
}
_MASKS = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x…"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"\d+\.\d+\s*(?:s|ms|sec|seconds)\b"), "<duration>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?"), "<timestamp>"),
]


@dataclass
class Run:
    code: int | str
    out: str
    files: dict[str, str]

    def failure(self) -> str:
        """The reason this run failed, in a line."""
        if self.code == "timeout":
            return "timed out"
        for line in reversed(self.out.splitlines()):
            if line.startswith("EXCEPTION "):
                return line.removeprefix("EXCEPTION ")[:160]
        return f"exit code {self.code}"


def _normalise(text: str, folder: Path) -> str:
    text = text.replace(str(folder), "<dir>")
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


def _snapshot(folder: Path) -> dict[str, str]:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            files[str(path.relative_to(folder))] = digest
    return files


def run_example(source: Path, mode: str, work: Path, timeout: float, extra: str = "") -> Run:
    """Copy ``source`` under ``work/mode`` and run its main.py there with ``mode``."""
    base = work / mode / "cookbook"
    folder = base / source.name
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    # What examples read by relative path: ../data, ../../README.md (the repository's).
    for link, target in (
        (base / "data", source.parent / "data"),
        (base.parent / "README.md", source.parent.parent / "README.md"),
    ):
        if target.exists() and not link.exists():
            link.symlink_to(target)
    before = _snapshot(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "ANTHROPIC"))}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(STUBS), str(ROOT), extra) if p),
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        OPENAI_API_KEY="offline",
        ANTHROPIC_API_KEY="offline",
        GEMINI_API_KEY="offline",
        NO_PROXY="*",
    )
    command = [sys.executable, str(STUBS / "_runner.py"), mode, "main.py"]
    try:
        done = subprocess.run(
            command,
            cwd=folder,
            input=STDIN_FOR.get(source.name, STDIN),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        code: int | str = done.returncode
        out = done.stdout + "\n--- stderr\n" + done.stderr
    except subprocess.TimeoutExpired as expired:
        code = "timeout"
        out = (
            (expired.stdout or b"").decode(errors="replace")
            if isinstance(expired.stdout, bytes)
            else (expired.stdout or "")
        )
    out = out.split("--- traceback", 1)[0]
    after = _snapshot(folder)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    return Run(code, _normalise(out, folder), changed)


def compare(source: Path, work: Path, timeout: float, extra: str) -> tuple[Run, Run]:
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(run_example, source, mode, work, timeout, extra)
            for mode in ("pocketflow", "pocketbatch")
        ]
        flow, batch = (future.result() for future in runs)
    return flow, batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cookbook", type=Path, default=Path("/work/pocketflow/cookbook"))
    parser.add_argument("--only", nargs="*", default=None, help="example folder names")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    parser.add_argument(
        "--extra-path",
        default="",
        help="more import paths for the examples' own packages (numpy, pandas, PIL, ...), "
        "e.g. a folder from pip install --target",
    )
    parser.add_argument("--show-diff", action="store_true", help="print the diff of a miss")
    args = parser.parse_args(argv)
    examples = sorted(
        p for p in args.cookbook.iterdir() if p.is_dir() and p.name.startswith("pocketflow-")
    )
    if args.only:
        examples = [p for p in examples if p.name in args.only]
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="pf-compat-") as tmp:
        for source in examples:
            if source.name in SERVERS:
                rows.append((source.name, "skipped", SERVERS[source.name]))
            elif not (source / "main.py").is_file():
                rows.append((source.name, "skipped", "no main.py"))
            else:
                flow, batch = compare(source, Path(tmp), args.timeout, args.extra_path)
                if source.name in RACY:
                    for run in (flow, batch):
                        run.out = run.out.split("\n--- stderr\n")[0].replace(RACY[source.name], "")
                same = (flow.code, flow.out, flow.files) == (batch.code, batch.out, batch.files)
                same = same or flow.code == batch.code == "timeout"  # partial outputs
                runnable = flow.code == 0
                status = ("match" if same else "MISS") + ("" if runnable else " (not runnable)")
                why = "" if runnable else f"pocketflow: {flow.failure()}"
                if not same:
                    why += f"{'; ' if why else ''}pocketbatch: exit {batch.code}, {batch.failure()}"
                    if flow.files != batch.files:
                        differ = set(flow.files.items()) ^ set(batch.files.items())
                        why += f"; files differ: {sorted(differ)[:4]}"
                    if args.show_diff:
                        diff = difflib.unified_diff(
                            flow.out.splitlines(),
                            batch.out.splitlines(),
                            "pocketflow",
                            "pocketbatch",
                            lineterm="",
                        )
                        print("\n".join(list(diff)[:60]))
                rows.append((source.name, status, why))
            print(f"{rows[-1][0]:36} {rows[-1][1]:22} {rows[-1][2]}", flush=True)
    runnable = [r for r in rows if r[1] in ("match", "MISS")]
    matched = [r for r in runnable if r[1] == "match"]
    others = [r for r in rows if "not runnable" in r[1]]
    print(
        f"\n{len(matched)} of {len(runnable)} runnable examples match "
        f"({len(rows)} folders; {len(others)} not runnable here, of which "
        f"{sum(r[1].startswith('match') for r in others)} still give the same output; "
        f"{sum(r[1] == 'skipped' for r in rows)} skipped)"
    )
    return 0 if len(matched) == len(runnable) else 1


if __name__ == "__main__":
    sys.exit(main())
