"""Run the flow-file cookbook examples through the real ``pocketbatch`` command line.

Every example is run as a subprocess (``python -m pocketbatch ...`` from the repository
root), exactly as its README says. ``doc-analysis`` talks to its stub LLM server,
started on a free loopback port for this module; nothing here reaches beyond
127.0.0.1: ``OPENAI_*`` and proxy variables are removed from the subprocesses'
environment, and every run of doc-analysis gets ``--var openai_base_url=<the stub>``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from _support import free_port

ROOT = Path(__file__).resolve().parents[2]
COOKBOOK = ROOT / "cookbook"
EXAMPLES = ("data-pipeline", "doc-analysis", "agent-loop", "map-batch", "evaluate-batch")
OFFLINE = ("data-pipeline", "agent-loop", "map-batch", "evaluate-batch")  # need no server

# No OpenAI settings, and no proxies that loopback requests could be sent through.
ENV = {
    key: value
    for key, value in os.environ.items()
    if not key.startswith("OPENAI_") and not key.lower().endswith("_proxy")
}
ENV["PYTHONDONTWRITEBYTECODE"] = "1"  # keep the cookbook folders free of __pycache__


def flow(name: str) -> str:
    return f"cookbook/{name}/flow.yaml"


def pocketbatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m pocketbatch *args`` from the repository root."""
    return python("-m", "pocketbatch", *args, timeout=timeout)


def python(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_flow(name: str, value: Any, *extra: str) -> tuple[int, dict[str, Any], str]:
    """``pocketbatch run`` on one input: exit code, the printed result, stderr."""
    proc = pocketbatch("run", "--flow", flow(name), "--input", json.dumps(value), *extra)
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr  # one JSON line
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def run_script(code: str) -> Any:
    """Run ``code`` in a fresh interpreter from the repository root; return the JSON
    it prints. Used where the CLI cannot show something (a batch of inputs, a peak)."""
    proc = python("-c", textwrap.dedent(code))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@cache
def readme(name: str) -> str:
    return (COOKBOOK / name / "README.md").read_text(encoding="utf-8")


def assert_in_readme(name: str, output: str) -> None:
    """Each line the command printed appears in the README (its expected output)."""
    for line in output.splitlines():
        assert line in readme(name), f"README of {name} lacks: {line}"


# -- every example ----------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_has_readme(name: str) -> None:
    assert (COOKBOOK / name / "README.md").is_file()
    text = readme(name)
    assert f"python -m pocketbatch test cookbook/{name}/flow.yaml" in text
    assert f"python -m pocketbatch run --flow cookbook/{name}/flow.yaml" in text
    assert "## Expected output" in text
    assert "Stepflow" in text
    assert "PocketFlow" in text


@pytest.mark.parametrize("name", EXAMPLES)
def test_flow_validates(name: str) -> None:
    proc = pocketbatch("validate", flow(name))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{flow(name)}: ok (")


@pytest.mark.parametrize("name", OFFLINE)
def test_flow_test_cases_pass(name: str) -> None:
    proc = pocketbatch("test", flow(name))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert "FAIL" not in proc.stdout
    assert proc.stdout.splitlines()[-1].endswith(" passed, 0 failed")
    assert_in_readme(name, proc.stdout)


# -- data-pipeline ----------------------------------------------------------------------

ORDERS = COOKBOOK / "data-pipeline" / "inputs.jsonl"


def order_line(number: int) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(ORDERS.read_text(encoding="utf-8").splitlines()[number - 1])
    return line


def test_data_pipeline_run_success_with_default_enrichment() -> None:
    code, result, stderr = run_flow("data-pipeline", order_line(12))
    assert code == 0
    assert stderr == ""
    assert result == {
        "outcome": "success",
        "result": {
            "order": {
                "order_id": "ORD-1012",
                "customer": "Linus Torvalds",
                "email": "linus@example.fi",
                "country": "FI",
                "amount": 64,
                "currency": "EUR",
                "amount_usd": 69.12,
                "size": "small",
            },
            "tax": {
                "enriched": False,
                "region": "unknown",
                "tax_rate": None,
                "tax_usd": None,
                "total_usd": None,
            },
        },
    }
    assert json.dumps(result, separators=(",", ":")) in readme("data-pipeline")


def test_data_pipeline_run_enriched() -> None:
    code, result, _ = run_flow("data-pipeline", order_line(1))
    assert code == 0
    assert result["result"]["order"]["amount_usd"] == 153.03
    assert result["result"]["tax"] == {
        "enriched": True,
        "region": "Europe",
        "tax_rate": 0.2,
        "tax_usd": 30.61,
        "total_usd": 183.64,
    }


def test_data_pipeline_run_validation_failure() -> None:
    proc = pocketbatch("run", "--flow", flow("data-pipeline"), "--input", json.dumps(order_line(8)))
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {
        "outcome": "failed",
        "error": {
            "code": "VALIDATION_FAILED",
            "message": "order ORD-1008: email 'timbl@example' is not an email address",
        },
    }
    assert proc.stderr == (
        "pocketbatch: the flow failed: order ORD-1008: email 'timbl@example' is not an "
        "email address\n"
    )
    assert_in_readme("data-pipeline", proc.stdout + proc.stderr)


def test_data_pipeline_run_schema_failure() -> None:
    code, result, _ = run_flow("data-pipeline", order_line(11))
    assert code == 1
    assert result["error"] == {
        "code": "INVALID_INPUT",
        "message": "input $.amount: '240' is not of type 'number'",
    }


def test_data_pipeline_inputs_jsonl_as_a_batch() -> None:
    lines = ORDERS.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20
    assert all(isinstance(json.loads(line), dict) for line in lines)  # one object per line
    outcomes = run_script(
        """
        import json
        from pocketbatch import load_flow

        flow = load_flow("cookbook/data-pipeline/flow.yaml")
        out = []
        with open("cookbook/data-pipeline/inputs.jsonl", encoding="utf-8") as lines:
            for line in lines:
                result = flow.run(json.loads(line))
                if result.ok:
                    out.append(["success", result.result["tax"]["enriched"]])
                else:
                    out.append(["failed", result.error.code])
        print(json.dumps(out))
        """
    )
    expected = {n: ["success", True] for n in range(1, 21)}
    expected.update({7: ["success", False], 12: ["success", False]})
    expected.update({n: ["failed", "VALIDATION_FAILED"] for n in (8, 9, 13)})
    expected.update({n: ["failed", "INVALID_INPUT"] for n in (11, 16)})
    assert outcomes == [expected[n] for n in range(1, 21)]


# -- agent-loop -------------------------------------------------------------------------

EVEREST = {"question": "Who first climbed Everest?"}


def test_agent_loop_run_loops_until_enough_facts() -> None:
    proc = pocketbatch("run", "--flow", flow("agent-loop"), "--input", json.dumps(EVEREST))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"] == {
        "answer": "Mount Everest is 8,849 m high, the highest mountain above sea level. "
        "Edmund Hillary and Tenzing Norgay made the first ascent of Everest in 1953.",
        "sources": ["everest"],
        "searched": ["climbed", "everest"],
        "stopped_because": "2 facts are enough",
    }
    assert_in_readme("agent-loop", proc.stdout)


def test_agent_loop_run_stops_when_the_budget_variable_is_spent() -> None:
    proc = pocketbatch(
        "run",
        "--flow",
        flow("agent-loop"),
        "--input",
        json.dumps(EVEREST),
        "--var",
        "max_searches=1",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["result"]
    assert result["searched"] == ["climbed"]
    assert result["stopped_because"] == "search budget spent"
    assert_in_readme("agent-loop", proc.stdout)


def test_agent_loop_run_rejects_an_input_without_question() -> None:
    code, result, stderr = run_flow("agent-loop", {"query": "Everest"})
    assert code == 1
    assert result["error"]["code"] == "INVALID_INPUT"
    assert "'question' is a required property" in stderr


def test_agent_loop_visualize_has_labelled_edges() -> None:
    proc = pocketbatch("visualize", flow("agent-loop"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    ids = {}
    for line in lines[1:]:
        if "[" in line:
            node, label = line.strip().split("[", 1)
            ids[label.strip('"]')] = node
    assert set(ids) == {"decide", "search", "remember", "answer"}
    assert f'    {ids["decide"]} -->|"search"| {ids["search"]}' in lines
    assert f'    {ids["decide"]} -->|"answer"| {ids["answer"]}' in lines
    assert f"    {ids['search']} --> {ids['remember']}" in lines
    assert f"    {ids['remember']} --> {ids['decide']}" in lines
    assert_in_readme("agent-loop", proc.stdout)


# -- map-batch --------------------------------------------------------------------------

BASKET = {"order": "3 apple, 2 pear, 1 durian, 0 cherry, 12 egg"}


def test_map_batch_run_isolates_the_failing_item() -> None:
    code, result, stderr = run_flow("map-batch", BASKET)
    assert code == 0
    assert stderr == ""
    out = result["result"]
    assert (out["successful"], out["failed"], out["skipped"]) == (3, 1, 1)
    assert [r["outcome"] for r in out["results"]] == [
        "success",
        "success",
        "failed",
        "skipped",
        "success",
    ]
    assert out["results"][2] == {
        "outcome": "failed",
        "error": {"code": "NOT_FOUND", "message": "no price for 'durian'"},
    }
    assert out["receipt"] == {
        "lines": ["3 x apple = 1.35", "2 x pear = 1.10", "12 x egg = 3.36"],
        "total": "5.81",
        "not_priced": [
            "line 3 (durian): no price for 'durian'",
            "line 4 (cherry): skipped, quantity 0",
        ],
    }
    # The README shows the same result, re-indented.
    shown = readme("map-batch").split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(shown) == result


def test_map_batch_run_fails_when_the_first_step_fails() -> None:
    code, result, _ = run_flow("map-batch", {"order": "2 milk, some bread"})
    assert code == 1
    assert result["error"] == {
        "code": "INVALID_INPUT",
        "message": "line 2: 'some bread' is not '<quantity> <product>'",
    }


def test_map_batch_max_concurrency_is_respected() -> None:
    # The price component is swapped (a registry wins over pocketbatch.yaml) for one
    # that counts the lines in flight.
    peak = run_script(
        """
        import asyncio, json
        from pocketbatch import ComponentRegistry, load_flow

        in_flight = peak = 0
        components = ComponentRegistry()

        @components.component("/shop/price")
        async def price(line):
            global in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            return {**line, "unit_cents": 1, "total_cents": line["qty"]}

        flow = load_flow("cookbook/map-batch/flow.yaml", registry=components)
        result = flow.run({"order": ", ".join(f"{n} apple" for n in range(1, 9))})
        assert result.result["successful"] == 8, result
        print(json.dumps(peak))
        """
    )
    assert peak == 2


# -- doc-analysis (with the stub LLM) ----------------------------------------------------

DOCS = COOKBOOK / "doc-analysis" / "documents.jsonl"
STUB = COOKBOOK / "doc-analysis" / "stub_llm.py"


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    """Start ``stub_llm.py`` on a free loopback port; yield its base URL; stop it."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, str(STUB), "--port", str(port), "--quiet"],
            cwd=ROOT,
            env=ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"stub_llm.py exited with {proc.returncode}: {log.read()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"stub_llm.py did not listen on port {port} within 15 s")
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_doc_analysis_test_cases_pass(stub_url: str) -> None:
    proc = pocketbatch("test", flow("doc-analysis"), "--var", f"openai_base_url={stub_url}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[-1] == "4 passed, 0 failed"
    assert_in_readme("doc-analysis", proc.stdout)


def test_doc_analysis_run(stub_url: str) -> None:
    document = json.loads(DOCS.read_text(encoding="utf-8").splitlines()[1])
    code, result, stderr = run_flow(
        "doc-analysis", document, "--var", f"openai_base_url={stub_url}"
    )
    assert code == 0
    assert stderr == ""
    assert result == {
        "outcome": "success",
        "result": {
            "id": "doc-02",
            "summary": "The order arrived late and broken. Second problem this month.",
            "word_count": 10,
            "sentiment": "negative",
            "keywords": ["arrived", "problem", "broken"],
            "model": "gpt-4o-mini",
        },
    }
    assert json.dumps(result, separators=(",", ":")) in readme("doc-analysis")


def test_doc_analysis_model_variable_reaches_the_endpoint(stub_url: str) -> None:
    document = {"id": "x", "title": "t", "text": "Great, reliable and fast."}
    code, result, _ = run_flow(
        "doc-analysis",
        document,
        "--var",
        f"openai_base_url={stub_url}",
        "--var",
        "openai_model=stub-model-2",
    )
    assert code == 0
    assert result["result"]["model"] == "stub-model-2"  # the stub echoes the model
    assert result["result"]["sentiment"] == "positive"


def test_doc_analysis_failing_endpoint_is_retried_then_fails(stub_url: str) -> None:
    document = {"id": "x", "title": "t", "text": "[[stub:error:503]] anything"}
    code, result, _ = run_flow("doc-analysis", document, "--var", f"openai_base_url={stub_url}")
    assert code == 1
    assert result["error"]["code"] == "RESOURCE_UNAVAILABLE"
    assert "HTTP 503" in result["error"]["message"]


def test_doc_analysis_unreachable_endpoint() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there any more
    document = {"id": "x", "title": "t", "text": "hello"}
    code, result, _ = run_flow("doc-analysis", document, "--var", f"openai_base_url={url}")
    assert code == 1
    assert result["error"]["code"] == "UNREACHABLE"
    assert url in result["error"]["message"]


def test_doc_analysis_documents_jsonl_as_a_batch(stub_url: str) -> None:
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10
    assert all(isinstance(json.loads(line), dict) for line in lines)
    outcomes = run_script(
        f"""
        import json
        from pocketbatch import load_flow

        flow = load_flow(
            "cookbook/doc-analysis/flow.yaml", variables={{"openai_base_url": {stub_url!r}}}
        )
        out = []
        with open("cookbook/doc-analysis/documents.jsonl", encoding="utf-8") as lines:
            for line in lines:
                result = flow.run(json.loads(line))
                out.append(result.result["sentiment"] if result.ok else result.error.code)
        print(json.dumps(out))
        """
    )
    assert outcomes == [
        "positive",
        "negative",
        "positive",
        "negative",
        "positive",
        "neutral",
        "neutral",
        "negative",
        "INVALID_INPUT",
        "positive",
    ]


def test_stub_rejects_a_request_without_messages(stub_url: str) -> None:
    request = urllib.request.Request(
        f"{stub_url}/chat/completions",
        data=json.dumps({"model": "m"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxies
    with pytest.raises(urllib.error.HTTPError) as caught:
        direct.open(request, timeout=10)
    assert caught.value.code == 400
    body = json.loads(caught.value.read())
    caught.value.close()
    assert "messages" in body["error"]["message"]


# -- evaluate-batch ---------------------------------------------------------------------

QUIZ = {
    "student": "ada",
    "answers": [
        {"question": "q1", "answer": "Paris"},
        {"question": "q2", "answer": "5"},
        {"question": "q9", "answer": "?"},
        {"question": "q2", "answer": "4"},
        {"question": "q3", "answer": "blue  whale"},
    ],
}


def test_evaluate_batch_run_isolates_the_failing_answer() -> None:
    code, result, stderr = run_flow("evaluate-batch", QUIZ)
    assert code == 0
    assert stderr == ""
    assert result == {
        "outcome": "success",
        "result": {
            "student": "ada",
            "score": "3/3",
            "correct": ["q1", "q2", "q3"],
            "wrong": [],
            "not_graded": ["q9: no question 'q9' in the answer key"],
        },
    }
    shown = readme("evaluate-batch").split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(shown) == result
    assert json.dumps(QUIZ) in readme("evaluate-batch")  # the command shown is this run


def test_evaluate_batch_max_concurrency_is_respected() -> None:
    # The check component is swapped (a registry wins over pocketbatch.yaml) for one
    # that counts the answers in flight; the sub-flow uses the same components.
    peak = run_script(
        """
        import asyncio, json
        from pocketbatch import ComponentRegistry, load_flow

        in_flight = peak = 0
        components = ComponentRegistry()

        @components.component("/quiz/check")
        async def check(answer):
            global in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            for _ in range(3):
                await asyncio.sleep(0)
            in_flight -= 1
            return {"question": answer["question"], "correct": True}

        flow = load_flow("cookbook/evaluate-batch/flow.yaml", registry=components)
        answers = [{"question": f"q{n}", "answer": "x"} for n in range(8)]
        result = flow.run({"student": "x", "answers": answers})
        assert result.result["score"] == "8/8", result
        print(json.dumps(peak))
        """
    )
    assert peak == 2
