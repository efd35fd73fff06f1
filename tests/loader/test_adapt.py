"""Sync components from flow files run off the event loop (issue 14).

A sync function reached through a ``pocketbatch.yaml`` route (or ``/python/``) runs on
the run's thread pool, sized to the batch's concurrency, so blocking calls overlap;
``offload: false`` (on the route, or for the whole config) keeps it on the event loop.
Everything here counts calls and threads; nothing is timed.
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

from pocketbatch import load_flow, run_batch

_names = itertools.count()

# The component module: `block` waits until `PARTIES` calls are inside at once (a
# barrier: calls that run one after another never get there) and counts the peak.
MODULE = textwrap.dedent(
    """
    import threading, time

    PARTIES = {parties}
    state = {{"inside": 0, "peak": 0, "threads": set(), "loop_thread": None}}
    lock = threading.Lock()
    barrier = threading.Barrier(PARTIES, timeout=10)

    def block(data):
        with lock:
            state["inside"] += 1
            state["peak"] = max(state["peak"], state["inside"])
            state["threads"].add(threading.current_thread().name)
        try:
            if data.get("meet"):
                barrier.wait()  # BrokenBarrierError when the calls do not overlap
            time.sleep(data.get("sleep", 0))
        finally:
            with lock:
                state["inside"] -= 1
        return data["i"]
    """
)


def flow_with_route(tmp_path: Path, route: str, parties: int) -> tuple[Any, Any]:
    """A flow calling ``/blocking/block`` through a route; (the flow, the module)."""
    import importlib
    import sys

    name = f"pb_adapt_blocking_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(MODULE.format(parties=parties), encoding="utf-8")
    (tmp_path / "pocketbatch.yaml").write_text(route.format(module=name), encoding="utf-8")
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "steps:\n"
        "  - id: b\n"
        "    component: /blocking/block\n"
        "    input: {$input: $}\n"
        "output: {$step: b}\n",
        encoding="utf-8",
    )
    loaded = load_flow(flow)
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
    return loaded, module


def test_blocking_sync_components_of_a_route_overlap_up_to_the_concurrency(
    tmp_path: Path,
) -> None:
    """8 blocking items at max_concurrency 8 used to run one after another on the
    event loop (1.6 s for 8 x 0.2 s); now all 8 calls are inside at once."""
    flow, module = flow_with_route(tmp_path, "routes: {{/blocking: {module}}}\n", parties=8)
    results = run_batch(flow, [{"i": i, "meet": True} for i in range(8)], max_concurrency=8)
    assert [r.result for r in results] == list(range(8)), [r.error for r in results]
    assert module.state["peak"] == 8
    assert all(t.startswith("pocketbatch-sync") for t in module.state["threads"])


def test_the_thread_pool_is_sized_to_the_runs_concurrency(tmp_path: Path) -> None:
    flow, module = flow_with_route(tmp_path, "routes: {{/blocking: {module}}}\n", parties=3)
    items = [{"i": i, "meet": i < 3, "sleep": 0.001} for i in range(30)]
    results = run_batch(flow, items, max_concurrency=3)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert module.state["peak"] == 3
    assert len(module.state["threads"]) == 3


def test_offload_false_on_a_route_keeps_calls_on_the_event_loop(tmp_path: Path) -> None:
    """The opt-out, for trivial pure-CPU functions (off the loop costs throughput)."""
    import threading

    route = "routes: {{/blocking: {{module: {module}, offload: false}}}}\n"
    flow, module = flow_with_route(tmp_path, route, parties=1)
    results = run_batch(flow, [{"i": i} for i in range(20)], max_concurrency=8)
    assert all(r.ok for r in results)
    assert module.state["peak"] == 1
    assert module.state["threads"] == {threading.current_thread().name}


def test_offload_false_for_the_whole_config(tmp_path: Path) -> None:
    import threading

    route = "offload: false\nroutes: {{/blocking: {module}}}\n"
    flow, module = flow_with_route(tmp_path, route, parties=1)
    assert all(r.ok for r in run_batch(flow, [{"i": i} for i in range(5)]))
    assert module.state["threads"] == {threading.current_thread().name}


def test_python_imports_run_off_the_loop_too(tmp_path: Path) -> None:
    """/python/ functions are flow-file components as well."""
    name = f"pb_adapt_where_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(
        "import threading\n\ndef where(data):\n    return threading.current_thread().name\n",
        encoding="utf-8",
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        f"steps:\n  - id: w\n    component: /python/{name}.where\n    input: {{}}\n"
        "output: {$step: w}\n",
        encoding="utf-8",
    )
    results = run_batch(load_flow(flow), [{}, {}])
    assert all(str(r.result).startswith("pocketbatch-sync") for r in results), results


def test_a_bad_offload_value_is_a_load_error_with_its_place(tmp_path: Path) -> None:
    import pytest

    from pocketbatch import LoadError

    (tmp_path / "pocketbatch.yaml").write_text(
        "routes:\n  /blocking: {module: m, offload: sometimes}\n", encoding="utf-8"
    )
    flow = tmp_path / "flow.yaml"
    flow.write_text("output: 1\n", encoding="utf-8")
    with pytest.raises(LoadError, match=r"pocketbatch.yaml:2:.*offload must be true or false"):
        load_flow(flow)
