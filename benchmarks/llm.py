"""LLM batch benchmark: ``pocketbatch run-batch`` against the ``openai`` SDK, both calling
the fake provider (``fake_provider.py``), in one invocation.

Run from the repository root::

    python benchmarks/llm.py            # the sizes quoted in the README
    python benchmarks/llm.py --quick    # smaller sizes, for a smoke run
    python benchmarks/llm.py --only binding

Each contestant gets a fresh provider subprocess (full buckets, zeroed counters) with
0.3 s latency and 1% of prompts failing their first attempt with a 503:

* ``pocketbatch``: ``pocketbatch run-batch --max-concurrent C`` as a user runs it (a
  subprocess; the wall includes its start-up), on a one-step ``/builtin/openai`` flow
  (``llm_data/chat.yaml``), pointed at the provider with ``OPENAI_BASE_URL`` and a
  dummy ``OPENAI_API_KEY``; every record's answer is checked against the provider's
  deterministic answer;
* ``pocketbatch+retry``: the same flow with ``on_error: retry`` (5 retries, 1 s
  doubling), what a user adds today to survive 429s and 503s;
* ``openai SDK``: ``AsyncOpenAI`` with its default retries (2, honouring
  ``retry-after-ms``), one task per prompt under ``asyncio.Semaphore(C)``, in this
  process.

Scenarios: (a) ``headroom``: limits far above the load (2000 prompts, C = 64);
(b) ``binding``: 20 requests/s binds (400 prompts, C = 64); (c) ``resume``: run-batch
killed (SIGKILL) half-way and resumed, then rerun from scratch (400 prompts, C = 16):
the requests each made and the prompts answered twice (``--pb-option`` passes more
run-batch options, e.g. a step cache, to every pocketbatch run). The floor is the
largest of N / request-limit, N * tokens-per-request / token-limit and
N * latency / C; the table gives wall, wall/floor, wall / the SDK's wall, the
contestant's CPU seconds (run-batch's process, from start-up to exit; the SDK's
asyncio.run, its import of openai included; never the provider's), failed
items, 429s (and their share of requests), 503s, prompts answered more than once
and connections the provider accepted. Targets (issue 12): with headroom
pocketbatch within 1.1x of the SDK; with a binding limit within 1.15x of the floor,
no failed item and 429s under 5% of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_provider import answer_text  # noqa: E402

FLOW = HERE / "llm_data" / "chat.yaml"
FLOW_RETRY = HERE / "llm_data" / "chat_retry.yaml"
FLOW_CACHED = HERE / "llm_data" / "chat_cached.yaml"  # the resume scenario
LATENCY = 0.3
FAULT_RATE = 0.01
MAX_TOKENS = 32
MODEL = "fake-model"


@dataclass(frozen=True)
class Scenario:
    name: str
    items: int
    concurrency: int
    rps: float | None  # requests per second
    tps: float | None  # tokens per second

    def floor(self, tokens_per_request: float) -> float:
        floors = [self.items * LATENCY / self.concurrency]
        if self.rps:
            floors.append(self.items / self.rps)
        if self.tps:
            floors.append(self.items * tokens_per_request / self.tps)
        return max(floors)


def scenarios(quick: bool) -> list[Scenario]:
    if quick:
        return [
            Scenario("headroom", 400, 64, 2000, 1e7),
            Scenario("binding", 100, 64, 20, 1e6),
            Scenario("resume", 200, 16, 2000, 1e7),
        ]
    return [
        Scenario("headroom", 2000, 64, 2000, 1e7),
        Scenario("binding", 400, 64, 20, 1e6),
        Scenario("resume", 400, 16, 2000, 1e7),
    ]


def prompt(i: int) -> str:
    return f"item {i}: summarise the quarterly report in one line, please."


def tokens_per_request(i: int = 0) -> int:
    """What the provider charges a request: its prompt tokens plus max_tokens."""
    message = {"role": "user", "content": prompt(i)}
    return max(1, len(json.dumps(message)) // 4) + MAX_TOKENS


# --------------------------------------------------------------------------- the provider


@contextmanager
def provider(scenario: Scenario) -> Iterator[str]:
    """A fresh fake provider subprocess for one contestant; yields its base URL."""
    command = [
        sys.executable,
        str(HERE / "fake_provider.py"),
        "--port",
        "0",
        "--latency",
        str(LATENCY),
        "--fault-rate",
        str(FAULT_RATE),
    ]
    if scenario.rps:
        command += ["--rps", str(scenario.rps)]
    if scenario.tps:
        command += ["--tps", str(scenario.tps)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise SystemExit(f"the fake provider did not start: {line!r}")
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(10)


def stats(base_url: str) -> dict[str, Any]:
    url = base_url.removesuffix("/v1") + "/stats"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with opener.open(url, timeout=10) as response:
        result: dict[str, Any] = json.load(response)
        return result


# --------------------------------------------------------------------------- contestants


@dataclass
class Outcome:
    wall: float
    failed: int
    wrong: int  # answers that differ from the provider's
    stats: dict[str, Any]
    note: str = ""
    cpu: float = 0.0  # CPU seconds (user + system) of the contestant, not the provider's


def children_cpu() -> float:
    """CPU seconds of the ended child processes waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


EXTRA_OPTIONS: list[str] = []  # --pb-option: more run-batch options (e.g. a cache)


def write_inputs(scenario: Scenario, tmp: Path) -> Path:
    inputs = tmp / f"{scenario.name}-inputs.jsonl"
    with open(inputs, "w", encoding="utf-8") as f:
        for i in range(scenario.items):
            f.write(json.dumps({"prompt": prompt(i)}) + "\n")
    return inputs


def run_batch_command(
    scenario: Scenario, flow: Path, inputs: Path, output: Path, base_url: str, *more: str
) -> tuple[list[str], dict[str, str]]:
    """The ``run-batch`` command line and environment for one run against ``base_url``."""
    env = {
        **{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "sk-dummy",
        "NO_PROXY": "127.0.0.1",
    }
    command = [
        sys.executable,
        "-m",
        "pocketbatch",
        "run-batch",
        "--flow",
        str(flow),
        "--inputs",
        str(inputs),
        "--output",
        str(output),
        "--max-concurrent",
        str(scenario.concurrency),
        "--no-progress",
        *EXTRA_OPTIONS,
        *more,
    ]
    return command, env


def run_pocketbatch(scenario: Scenario, flow: Path, tmp: Path) -> Outcome:
    inputs = write_inputs(scenario, tmp)
    output = tmp / f"{scenario.name}-{flow.stem}-out.jsonl"
    with provider(scenario) as base_url:
        command, env = run_batch_command(scenario, flow, inputs, output, base_url)
        cpu, start = children_cpu(), time.perf_counter()  # the provider is still running
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
        seen = stats(base_url)
    if done.returncode not in (0, 1):
        raise SystemExit(f"run-batch exited {done.returncode}:\n{done.stderr[-2000:]}")
    outcome = check_records(scenario, output, wall, seen)
    outcome.cpu = cpu
    return outcome


def check_records(scenario: Scenario, output: Path, wall: float, seen: dict[str, Any]) -> Outcome:
    """The outcome of a run from its records: failed items, and answers that are wrong."""
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    if len(records) != scenario.items:
        raise SystemExit(f"run-batch wrote {len(records)} records, expected {scenario.items}")
    failed = wrong = 0
    codes: dict[str, int] = {}
    for record in records:
        i = record["index"]
        if record.get("outcome") != "success":
            failed += 1
            code = str((record.get("error") or {}).get("code"))
            codes[code] = codes.get(code, 0) + 1
        elif record["result"]["answer"] != answer_text(prompt(i)):
            wrong += 1
    note = ", ".join(f"{n} {code}" for code, n in sorted(codes.items()))
    return Outcome(wall, failed, wrong, seen, note)


async def _sdk(scenario: Scenario, base_url: str) -> tuple[int, int]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="sk-dummy")
    semaphore = asyncio.Semaphore(scenario.concurrency)
    failed = wrong = 0

    async def one(i: int) -> None:
        nonlocal failed, wrong
        async with semaphore:
            try:
                reply = await client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": prompt(i)}],
                    max_tokens=MAX_TOKENS,
                )
            except Exception:
                failed += 1
                return
        if reply.choices[0].message.content != answer_text(prompt(i)):
            wrong += 1

    async with client:
        await asyncio.gather(*(one(i) for i in range(scenario.items)))
    return failed, wrong


def run_sdk(scenario: Scenario) -> Outcome:
    with provider(scenario) as base_url:
        cpu, start = time.process_time(), time.perf_counter()  # this process only
        failed, wrong = asyncio.run(_sdk(scenario, base_url))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        seen = stats(base_url)
    return Outcome(wall, failed, wrong, seen, cpu=cpu)


def run_resume(scenario: Scenario, tmp: Path) -> list[str]:
    """Kill ``run-batch`` (SIGKILL) once half the records are out, ``--resume`` it, then
    run the batch again from scratch into a new output: the requests each part made and
    the prompts answered more than once. The flow caches its step (``cache: true``,
    ``--cache`` in the run's folder): the rerun should make no request and the resume
    should ask nothing twice, but for requests the provider answered in the instant
    between their answer leaving it and the kill."""
    inputs = write_inputs(scenario, tmp)
    output = tmp / "resume-out.jsonl"
    rerun_output = tmp / "rerun-out.jsonl"
    cache = ("--cache", str(tmp / "resume-cache.sqlite"))
    with provider(scenario) as base_url:
        command, env = run_batch_command(scenario, FLOW_CACHED, inputs, output, base_url, *cache)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while process.poll() is None:
            time.sleep(0.02)
            if output.exists() and output.read_bytes().count(b"\n") >= scenario.items // 2:
                process.kill()
                break
        process.wait()
        killed_at = output.read_bytes().count(b"\n")
        before = stats(base_url)
        start = time.perf_counter()
        subprocess.run([*command, "--resume"], env=env, capture_output=True, check=False)
        resume_wall = time.perf_counter() - start
        after_resume = stats(base_url)
        resumed = check_records(scenario, output, resume_wall, after_resume)
        command, env = run_batch_command(
            scenario, FLOW_CACHED, inputs, rerun_output, base_url, *cache
        )
        subprocess.run(command, env=env, capture_output=True, check=False)
        after_rerun = stats(base_url)
    return [
        f"(resume) {scenario.items} prompts, concurrency {scenario.concurrency}: killed with "
        f"{killed_at} records out after {before['requests']} requests; --resume made "
        f"{after_resume['requests'] - before['requests']} requests "
        f"({resumed.failed} failed items, {resumed.wrong} wrong); prompts answered twice "
        f"{after_resume['answered_twice']}; a rerun into a new output made "
        f"{after_rerun['requests'] - after_resume['requests']} requests",
    ]


# --------------------------------------------------------------------------- the report


def report(scenario: Scenario, results: dict[str, Outcome]) -> list[str]:
    floor = scenario.floor(tokens_per_request())
    limits = f"{scenario.rps:g} req/s, {scenario.tps:g} tokens/s" if scenario.rps else "none"
    lines = [
        f"({scenario.name}) {scenario.items} prompts, concurrency {scenario.concurrency}, "
        f"latency {LATENCY} s, limits {limits}, {FAULT_RATE:.0%} first-attempt 503s; "
        f"floor {floor:.2f} s",
        f"| {'contestant':<18} | wall s | wall/floor | /SDK | CPU s | failed | wrong | requests "
        f"| 429s (share) | 503s | answered twice | connections |",
        "|" + "|".join(["---"] * 12) + "|",
    ]
    sdk = results.get("openai SDK")
    for name, o in results.items():
        s = o.stats
        share = s["rate_limited"] / s["requests"] if s["requests"] else 0.0
        ratio = f"{o.wall / sdk.wall:.2f}" if sdk else "-"
        lines.append(
            f"| {name:<18} | {o.wall:6.2f} | {o.wall / floor:10.2f} | {ratio} | {o.cpu:5.2f} "
            f"| {o.failed:6} "
            f"| {o.wrong:5} | {s['requests']:8} | {s['rate_limited']:5} ({share:5.1%}) "
            f"| {s['faults']:4} | {s['answered_twice']:14} | {s['connections']:11} |"
            + (f" failed: {o.note}" if o.note else "")
        )
    return lines


def verdicts(scenario: Scenario, results: dict[str, Outcome]) -> list[str]:
    pb, sdk = results["pocketbatch"], results["openai SDK"]
    floor = scenario.floor(tokens_per_request())
    if scenario.name == "headroom":
        ok = pb.wall <= 1.1 * sdk.wall
        return [
            f"target: pocketbatch wall <= 1.1x SDK: {pb.wall / sdk.wall:.2f}x "
            f"{'ok' if ok else 'MISSED'}"
        ]
    share = pb.stats["rate_limited"] / max(1, pb.stats["requests"])
    checks = [
        (  # a run that fails items early can beat the floor: it must answer them all
            "wall <= 1.15x floor, every item answered",
            pb.wall <= 1.15 * floor and pb.failed == 0,
            f"{pb.wall / floor:.2f}x, {pb.failed} failed",
        ),
        ("no failed item", pb.failed == 0, f"{pb.failed} failed"),
        ("429s < 5% of requests", share < 0.05, f"{share:.1%}"),
    ]
    return [
        f"target: pocketbatch {what}: {got} {'ok' if ok else 'MISSED'}" for what, ok, got in checks
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", choices=["headroom", "binding", "resume"], help="one scenario")
    parser.add_argument(
        "--pb-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more run-batch option for every pocketbatch run (repeatable; "
        "e.g. --pb-option=--cache=PATH)",
    )
    parser.add_argument(
        "--no-retry-flow", action="store_true", help="skip the pocketbatch+retry contestant"
    )
    args = parser.parse_args(argv)
    EXTRA_OPTIONS.extend(args.pb_option)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="pocketbatch-llm-") as tmp_name:
        tmp = Path(tmp_name)
        for scenario in scenarios(args.quick):
            if args.only and scenario.name != args.only:
                continue
            if scenario.name == "resume":
                print("\n".join(["", *run_resume(scenario, tmp)]), flush=True)
                continue
            results: dict[str, Outcome] = {}
            results["pocketbatch"] = run_pocketbatch(scenario, FLOW, tmp)
            if not args.no_retry_flow:
                results["pocketbatch+retry"] = run_pocketbatch(scenario, FLOW_RETRY, tmp)
            results["openai SDK"] = run_sdk(scenario)
            print(
                "\n".join(["", *report(scenario, results), *verdicts(scenario, results)]),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
