"""The step cache (issue 12, DESIGN.md §7): ``cache: true`` steps, ``StepCache``, its key.

What is promised: the key is the component path, the resolved input, the salt and
what the component adds (for /builtin/openai the base URL and model, never the API
key); a stored answer is reused without calling; failures are not stored; a rerun
after changing a later step calls the cached step zero times; nested flows use the
outer flow's cache; ``refresh`` calls again and stores; Python code gets the same
with :meth:`StepCache.cached`. The CLI and kill-and-resume are in
``tests/batch/test_step_cache_cli.py``, the server in
``tests/server/test_step_cache_server.py``.
"""

from __future__ import annotations

import asyncio
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _stub_http import running_stubs

from pocketbatch import AsyncFlow, AsyncNode, ComponentRegistry, LoadError, load_flow
from pocketbatch.loader import CallContext, StepCache, cache_key
from pocketbatch.loader._builtin_http import OpenAIChat


class Counting:
    """A component registry whose /t/ask counts its calls per input."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.fail_next = 0
        self.registry = ComponentRegistry()

        @self.registry.component("/t/ask")
        def ask(data: Any) -> Any:
            self.calls.append(data)
            if self.fail_next:
                self.fail_next -= 1
                raise RuntimeError("provider down")
            return {"answer": f"A:{data['q']}", "n": 2**70}

        @self.registry.component("/t/opaque")
        def opaque(data: Any) -> Any:
            self.calls.append(data)
            return {1, 2}  # a set: not JSON


def flow_text(*, cache: str = "cache: true", later: str = "{$step: ask, path: answer}") -> str:
    return f"""
steps:
  - id: ask
    component: /t/ask
    input: {{q: {{$input: q}}}}
    {cache}
  - id: shout
    component: /builtin/noop
    input: {later}
output: {{$step: shout}}
"""


# -- the key ------------------------------------------------------------------------------


def test_key_depends_on_component_input_salt_and_extra_only() -> None:
    base = cache_key("/t/ask", {"q": 1, "r": [1, 2]})
    assert base == cache_key("/t/ask", {"r": [1, 2], "q": 1})  # key order does not matter
    assert (
        len(
            {
                base,
                cache_key("/t/other", {"q": 1, "r": [1, 2]}),
                cache_key("/t/ask", {"q": 2, "r": [1, 2]}),
                cache_key("/t/ask", {"q": 1, "r": [1, 2]}, salt="v2"),
                cache_key("/t/ask", {"q": 1, "r": [1, 2]}, extra={"model": "m"}),
                cache_key("/t/ask", {"q": 1.0, "r": [1, 2]}),  # 1.0 is not 1
            }
        )
        == 6
    )


def test_key_keeps_big_integers_exact() -> None:
    assert cache_key("/c", 2**70) != cache_key("/c", 2**70 + 1)


@pytest.mark.parametrize("bad", [{"s": {1}}, float("nan"), object()])
def test_a_non_json_input_has_no_key(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        cache_key("/c", bad)


def test_openai_key_extra_has_base_url_and_model_but_never_the_api_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chat = OpenAIChat()
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-env")
    ctx = CallContext(step_id="s", flow_dir=None, variables={"openai_api_key": "sk-var"})
    extra = chat.cache_key_extra({"messages": [], "api_key": "sk-input"}, ctx)
    assert extra == {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini"}
    monkeypatch.setenv("OPENAI_MODEL", "other")
    assert chat.cache_key_extra({"messages": []}, ctx)["model"] == "other"
    ctx = CallContext(step_id="s", flow_dir=None, variables={"openai_base_url": "http://h/v1"})
    assert chat.cache_key_extra({"messages": []}, ctx)["base_url"] == "http://h/v1"


# -- the flow format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "salt"),
    [
        ("cache: true", ""),
        ("cache: false", None),
        ("cache: {salt: v2}", "v2"),
        ("cache: {version: 3}", "3"),
        ("", None),
    ],
)
def test_cache_key_of_a_step(written: str, salt: str | None) -> None:
    flow = load_flow(flow_text(cache=written), registry=Counting().registry)
    assert flow.spec.step_index["ask"].cache == salt
    assert flow.uses_cache is (salt is not None)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("cache: yes please", "cache takes true, false or {salt: v2}, got str"),
        ("cache: {salt: [1]}", "salt must be a string or a whole number"),
        ("cache: {salt: a, version: b}", "'version' and 'salt' mean the same thing"),
        ("cache: {colour: red}", "unknown key 'colour' in cache"),
    ],
)
def test_a_bad_cache_value_is_a_load_error_at_its_line(written: str, message: str) -> None:
    with pytest.raises(LoadError, match=r":6:\d+") as caught:
        load_flow(flow_text(cache=written), registry=Counting().registry)
    assert message in str(caught.value)


# -- running --------------------------------------------------------------------------------


def test_a_rerun_after_changing_a_later_step_makes_no_call(tmp_path: Path) -> None:
    counting = Counting()
    path = tmp_path / "c.sqlite"
    first = load_flow(flow_text(), registry=counting.registry, cache=StepCache(path))
    assert [first.run({"q": q}).result for q in (1, 2)] == ["A:1", "A:2"]
    assert len(counting.calls) == 2
    changed = load_flow(
        flow_text(later="{$step: ask, path: n}"), registry=counting.registry, cache=StepCache(path)
    )
    assert [changed.run({"q": q}).result for q in (1, 2)] == [2**70, 2**70]
    assert len(counting.calls) == 2  # zero calls: both answers came from the file
    assert changed.cache is not None
    assert changed.cache.statistics().hits == 2
    rows = sqlite3.connect(path).execute("SELECT component, step FROM step_cache").fetchall()
    assert rows == [("/t/ask", "ask")] * 2


def test_a_new_salt_or_input_calls_again_and_no_cache_calls_every_time() -> None:
    counting = Counting()
    cache = StepCache()
    flow = load_flow(flow_text(), registry=counting.registry, cache=cache)
    flow.run({"q": 1})
    flow.run({"q": 1})
    salted = load_flow(
        flow_text(cache="cache: {salt: v2}"), registry=counting.registry, cache=cache
    )
    salted.run({"q": 1})
    flow.run({"q": 3})
    assert [c["q"] for c in counting.calls] == [1, 1, 3]
    uncached = load_flow(flow_text(), registry=counting.registry)  # no cache given
    uncached.run({"q": 1})
    uncached.run({"q": 1})
    assert len(counting.calls) == 5


def test_failures_are_not_stored() -> None:
    counting = Counting()
    counting.fail_next = 1
    flow = load_flow(flow_text(), registry=counting.registry, cache=StepCache())
    assert flow.run({"q": 1}).outcome == "failed"
    assert flow.run({"q": 1}).result == "A:1"
    assert flow.run({"q": 1}).result == "A:1"
    assert len(counting.calls) == 2


def test_refresh_calls_again_and_stores_the_new_answer(tmp_path: Path) -> None:
    counting = Counting()
    path = tmp_path / "c.sqlite"
    load_flow(flow_text(), registry=counting.registry, cache=StepCache(path)).run({"q": 1})
    refreshing = StepCache(path, refresh=True)
    load_flow(flow_text(), registry=counting.registry, cache=refreshing).run({"q": 1})
    assert len(counting.calls) == 2
    assert refreshing.statistics().stores == 1
    load_flow(flow_text(), registry=counting.registry, cache=StepCache(path)).run({"q": 1})
    assert len(counting.calls) == 2


def test_an_answer_that_is_not_json_is_returned_and_not_stored() -> None:
    counting = Counting()
    text = flow_text().replace("/t/ask", "/t/opaque")
    cache = StepCache()
    flow = load_flow(
        text.replace("path: answer", "path: ''"), registry=counting.registry, cache=cache
    )
    flow.run({"q": 1})
    flow.run({"q": 1})
    assert len(counting.calls) == 2
    assert len(cache) == 0
    assert cache.statistics().unstorable == 2


def test_for_each_caches_each_element_and_nested_flows_use_the_outer_cache() -> None:
    counting = Counting()
    text = """
steps:
  - id: each
    component: /t/ask
    for_each: {$input: qs}
    input: {q: {$item: ''}}
    max_concurrency: 1  # one after another: concurrent misses would each call
    cache: true
  - id: inner
    component: /builtin/eval
    input:
      input: {q: {$input: 'qs[0]'}, after: {$step: each}}
      flow:
        steps:
          - {id: ask, component: /t/ask, input: {q: {$input: q}}, cache: true}
        output: {$step: ask, path: answer}
output: {each: {$step: each}, inner: {$step: inner}}
"""
    flow = load_flow(text, registry=counting.registry, cache=StepCache())
    first = flow.run({"qs": [1, 2, 1]})
    assert first.ok, first
    assert len(counting.calls) == 2  # 1, 2; the second 1 and the nested call hit
    assert flow.run({"qs": [2, 1, 3]}).ok
    assert [c["q"] for c in counting.calls] == [1, 2, 3]


def test_concurrent_items_share_one_file(tmp_path: Path) -> None:
    counting = Counting()
    flow = load_flow(flow_text(), registry=counting.registry, cache=StepCache(tmp_path / "c"))

    async def many() -> list[Any]:
        return [
            r.result
            for r in await asyncio.gather(*(flow.run_async({"q": i % 10}) for i in range(50)))
        ]

    asyncio.run(many())
    assert asyncio.run(many()) == [f"A:{i % 10}" for i in range(50)]
    assert len(counting.calls) <= 50  # concurrent misses may each call once...
    calls_after_first = len(counting.calls)
    asyncio.run(many())
    assert len(counting.calls) == calls_after_first  # ...and then never again


def test_openai_step_rerun_sends_no_request_and_a_new_model_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    text = """
steps:
  - id: chat
    component: /builtin/openai
    input: {messages: [{role: user, content: {$input: q}}]}
    cache: true
output: {$step: chat, path: response}
"""
    with running_stubs() as start:
        stub = start()
        variables = {"openai_base_url": stub.url + "/v1"}
        cache = StepCache(tmp_path / "c.sqlite")
        flow = load_flow(text, variables=variables, cache=cache)
        assert [flow.run({"q": "hi"}).result for _ in range(3)] == ["ok"] * 3
        assert len(stub.seen) == 1
        flow.run({"q": "hi"}, variables={"openai_model": "bigger"})
        assert len(stub.seen) == 2
        flow.run({"q": "hi"}, variables={"openai_api_key": "sk-rotated"})
        assert len(stub.seen) == 2  # the key is not part of the cache key
    assert b"sk-rotated" not in (tmp_path / "c.sqlite").read_bytes()


# -- StepCache itself -----------------------------------------------------------------------


def test_a_file_cache_pickles_as_its_path_and_memory_does_not(tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "c.sqlite", refresh=True)
    cache.put("k", [1])
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.path == cache.path
    assert copy.refresh
    assert len(copy) == 1
    with pytest.raises(TypeError, match="in-memory StepCache cannot go to another process"):
        pickle.dumps(StepCache())


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "c.sqlite"
    bad.write_text("not a database" * 100)
    from pocketbatch import PocketbatchError

    with pytest.raises(PocketbatchError, match=r"step cache .*c\.sqlite: cannot open it"):
        StepCache(bad)


def test_cached_sync_function_inside_a_node() -> None:
    cache = StepCache()
    calls: list[str] = []

    def ask(prompt: str, *, temperature: float = 0) -> str:
        calls.append(prompt)
        return prompt.upper()

    cached = cache.cached(ask, salt="v1")
    assert [cached("a"), cached("a"), cached("a", temperature=1), cached("b")] == list("AAAB")
    assert calls == ["a", "a", "b"]
    assert cache.cached(ask, salt="v2")("a") == "A"
    assert len(calls) == 4


@pytest.mark.asyncio
async def test_cached_async_function_in_an_async_node() -> None:
    cache = StepCache()
    calls: list[int] = []

    async def llm(x: int) -> dict[str, int]:
        calls.append(x)
        return {"double": 2 * x}

    class Ask(AsyncNode[dict[str, Any], int, dict[str, int]]):
        ask = staticmethod(cache.cached(llm))

        async def prep_async(self, shared: dict[str, Any]) -> int:
            return int(shared["x"])

        async def exec_async(self, x: int) -> dict[str, int]:
            return await self.ask(x)

        async def post_async(self, shared: dict[str, Any], p: int, r: dict[str, int]) -> None:
            shared["out"] = r

    for _ in range(3):
        shared: dict[str, Any] = {"x": 4}
        await AsyncFlow(start=Ask()).run_async(shared)
        assert shared["out"] == {"double": 8}
    assert calls == [4]


@pytest.mark.asyncio
async def test_a_cache_hit_counts_in_the_runs_usage() -> None:
    """Usage's ``cache_hits`` (summary line, progress, server status) counts answers
    the cache gave instead of the component."""
    from pocketbatch.loader._services import RunServices

    counting = Counting()
    flow = load_flow(flow_text(), registry=counting.registry, cache=StepCache())
    async with RunServices() as services:
        for q in (1, 2, 1, 1):
            assert (await flow.run_async({"q": q}, services=services)).ok
    assert len(counting.calls) == 2
    assert services.usage.cache_hits == 2
