"""Stepflow Python components: the cost per item of each way pocketbatch runs them.

Run from the repository root, with the ``stepflow`` extra installed::

    python benchmarks/stepflow_workers.py            # 2,000 items
    python benchmarks/stepflow_workers.py --items 200  # a quick smoke run

One component, ``shout`` (``@server.component`` on a stepflow-py ``StepflowServer``,
a msgspec ``Struct`` in and out), over the same JSONL batch with ``run-batch
--max-concurrent 16``, three ways in one invocation:

1. **plain**: the same function as a plain Python component (a ``pocketbatch.yaml``
   route to a module): the baseline;
2. **in-process**: a ``pocketbatch.yaml`` route to the worker module (msgspec
   conversion and a ``StepflowContext``, no worker process);
3. **worker**: a ``stepflow-config.yml`` ``grpc`` plugin launching the module as a
   worker (the worker protocol over gRPC on loopback), at the worker's default
   concurrency (4) and at ``STEPFLOW_MAX_CONCURRENT=16``.

Each is a real ``pocketbatch run-batch`` subprocess; the table gives its wall time,
items/s, the time per item over the plain baseline's, and the CLI's fixed cost (a
one-item batch, worker start-up included), so the per-item cost excludes start-up.
Every record is checked. Generated files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """
import msgspec
from stepflow_py.worker.main import main, server  # stepflow_worker's server and entry


class Text(msgspec.Struct):
    text: str
    n: int


@server.component
def shout(input: Text) -> Text:
    return Text(text=input.text.upper(), n=input.n)


if __name__ == "__main__":
    main()
"""

PLAIN = """
def shout(input):
    return {"text": input["text"].upper(), "n": input["n"]}
"""

FLOW = """schema: https://stepflow.org/schemas/v1/flow.json
steps:
  - id: e
    component: /py/shout
    input: {$input: $}
output: {$step: e}
"""


def _setup(root: Path) -> dict[str, Path]:
    """One folder per way, each with the flow, its config and the modules."""
    ways: dict[str, Path] = {}
    for way in ("plain", "in-process", "worker c=4", "worker c=16"):
        folder = root / way.replace(" ", "_").replace("=", "")
        folder.mkdir()
        (folder / "flow.yaml").write_text(FLOW, encoding="utf-8")
        (folder / "echo_worker.py").write_text(WORKER, encoding="utf-8")
        (folder / "plain_echo.py").write_text(PLAIN, encoding="utf-8")
        if way == "plain":
            (folder / "pocketbatch.yaml").write_text("routes:\n  /py: {module: plain_echo}\n")
        elif way == "in-process":
            (folder / "pocketbatch.yaml").write_text("routes:\n  /py: {module: echo_worker}\n")
        else:
            concurrency = way.rpartition("=")[2]
            (folder / "stepflow-config.yml").write_text(
                "plugins:\n"
                "  py:\n"
                "    type: grpc\n"
                f"    command: {sys.executable}\n"
                "    args: [echo_worker.py]\n"
                "    queueName: py\n"
                f"    env: {{STEPFLOW_MAX_CONCURRENT: '{concurrency}', "
                "STEPFLOW_LOG_LEVEL: WARNING}\n"
                'routes:\n  "/py":\n    - plugin: py\n',
                encoding="utf-8",
            )
        ways[way] = folder
    return ways


def _run(folder: Path, inputs: Path, count: int) -> float:
    """Wall seconds of one run-batch subprocess; its records checked."""
    output = folder / f"out-{count}.jsonl"
    output.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pocketbatch", "run-batch", "--flow", str(folder / "flow.yaml"),
         "--inputs", str(inputs), "--output", str(output), "--max-concurrent", "16",
         "--no-progress"],
        capture_output=True, text=True, cwd=folder, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{folder.name}: run-batch exited {done.returncode}: {done.stderr}")
    records = [json.loads(line) for line in output.read_text().splitlines()]
    expected = [{"text": f"item {i}".upper(), "n": i} for i in range(count)]
    if [r.get("result") for r in records] != expected:
        raise SystemExit(f"{folder.name}: wrong records")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args(argv)
    try:
        import stepflow_py  # noqa: F401
    except ImportError:
        parser.error("needs the stepflow extra: python -m pip install '.[stepflow]'")
    with tempfile.TemporaryDirectory(prefix="stepflow-workers-") as tmp:
        root = Path(tmp)
        big, one = root / "in.jsonl", root / "one.jsonl"
        lines = [json.dumps({"text": f"item {i}", "n": i}) for i in range(args.items)]
        big.write_text("\n".join(lines) + "\n", encoding="utf-8")
        one.write_text(lines[0] + "\n", encoding="utf-8")
        print(f"python {sys.version.split()[0]}; {args.items} items, --max-concurrent 16")
        print("| way | fixed cost s | wall s | items/s | ms per item | per item over plain |")
        print("|---|---|---|---|---|---|")
        plain_per_item = None
        for way, folder in _setup(root).items():
            fixed = _run(folder, one, 1)
            wall = _run(folder, big, args.items)
            per_item = max(wall - fixed, 1e-9) / args.items
            if plain_per_item is None:
                plain_per_item = per_item
            print(
                f"| {way} | {fixed:.2f} | {wall:.2f} | {args.items / wall:,.0f} | "
                f"{per_item * 1000:.3f} | +{(per_item - plain_per_item) * 1000:.3f} ms |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
