"""A realistic PocketFlow program runs unchanged on pocketbatch and leaves the same shared store.

``build_and_run`` is written only against PocketFlow's documented API. Its first
statement takes the classes from the module it is given -- the equivalent of
``from pocketflow import ...`` -- and nothing else in its body refers to the module.
The test runs the very same function with ``pocketflow`` and with ``pocketbatch``.
"""

from __future__ import annotations

import asyncio
import inspect
import types
import warnings
from typing import Any

import pocketflow
import pytest

import pocketbatch


def build_and_run(mod: types.ModuleType) -> dict[str, Any]:
    """An editorial pipeline in PocketFlow; returns the shared stores of two runs."""
    (
        Node, Flow, BatchNode, BatchFlow,
        AsyncNode, AsyncFlow, AsyncBatchNode, AsyncParallelBatchNode,
        AsyncBatchFlow, AsyncParallelBatchFlow,
    ) = (
        mod.Node, mod.Flow, mod.BatchNode, mod.BatchFlow,
        mod.AsyncNode, mod.AsyncFlow, mod.AsyncBatchNode, mod.AsyncParallelBatchNode,
        mod.AsyncBatchFlow, mod.AsyncParallelBatchFlow,
    )  # fmt: skip

    # ---- ingest (sync): load, a flaky parser retried, a classifier with a fallback ----

    class LoadArticles(Node):
        def prep(self, shared):
            return shared["raw"]

        def exec(self, raw):
            return {doc_id: text.strip().lower() for doc_id, text in enumerate(raw)}

        def post(self, shared, raw, articles):
            shared["articles"] = articles

    class FlakyParse(Node):
        """Fails on its first two attempts (max_retries=3 gives it a third)."""

        def prep(self, shared):
            return shared["articles"]

        def exec(self, articles):
            if self.cur_retry < 2:
                raise ConnectionError(f"parser busy (attempt {self.cur_retry})")
            return {doc_id: text.split() for doc_id, text in articles.items()}

        def post(self, shared, articles, words):
            shared["words"] = words
            shared["parse_attempts"] = self.cur_retry + 1

    class Classify(Node):
        """The model is down: every attempt fails and the fallback supplies a label."""

        def prep(self, shared):
            return len(shared["words"])

        def exec(self, n_docs):
            raise TimeoutError("model down")

        def exec_fallback(self, n_docs, exc):
            return f"unlabelled x{n_docs} ({type(exc).__name__}: {exc})"

        def post(self, shared, n_docs, label):
            shared["label"] = label

    class CountWords(BatchNode):
        def prep(self, shared):
            return sorted(shared["words"].items())

        def exec(self, item):
            doc_id, words = item
            return doc_id, len(words)

        def post(self, shared, items, counts):
            shared["counts"] = dict(counts)

    class Summarize(Node):
        """One run per document, inside a BatchFlow; everything comes from self.params."""

        def prep(self, shared):
            return shared["words"][self.params["doc_id"]]

        def exec(self, words):
            return " ".join(words[: self.params["max_words"]])

        def post(self, shared, words, summary):
            style = self.params["style"]
            shared.setdefault("summaries", {})[self.params["doc_id"]] = f"[{style}] {summary}"

    class SummarizeEach(BatchFlow):
        def prep(self, shared):
            return [{"doc_id": doc_id, "max_words": 2} for doc_id in sorted(shared["words"])]

        def post(self, shared, param_list, exec_res):
            shared["summarized"] = len(param_list)

    parse, classify = FlakyParse(max_retries=3, wait=0.001), Classify(max_retries=2)
    summarize_each = SummarizeEach(start=Summarize())
    ingest = Flow()
    ingest.start(LoadArticles()) >> parse >> classify >> CountWords() >> summarize_each

    # ---- editorial (sync): a revision loop that ends by action, then a review branch ----

    class Draft(Node):
        def prep(self, shared):
            return shared.get("draft", "")

        def exec(self, draft):
            return draft + "x"

        def post(self, shared, old, draft):
            shared["draft"] = draft
            shared.setdefault("revisions", []).append(draft)
            return "revise" if len(draft) < 3 else "review"

    class Review(Node):
        def prep(self, shared):
            return sum(shared["counts"].values())

        def exec(self, total_words):
            return "approve" if total_words >= 5 else "reject"

        def post(self, shared, total_words, verdict):
            shared["verdict"] = verdict
            return verdict

    class Publish(Node):
        def post(self, shared, p, e):
            shared["published"] = True
            return "done"

    class Discard(Node):
        def post(self, shared, p, e):
            shared["published"] = False
            return "dropped"

    draft, review = Draft(), Review()
    draft - "revise" >> draft
    draft - "review" >> review
    review - "approve" >> Publish()
    review - "reject" >> Discard()
    editorial = Flow(start=draft)  # its last action ("done"/"dropped") branches the parent

    # ---- enrichment (async): retries, fallbacks, sequential and parallel batches ----

    class FetchMeta(AsyncNode):
        """Fails once, then succeeds; counts attempts on self (each run gets a copy)."""

        async def prep_async(self, shared):
            self.attempts = 0
            return sorted(shared["words"])

        async def exec_async(self, doc_ids):
            self.attempts += 1
            await asyncio.sleep(0)
            if self.attempts < 2:
                raise ConnectionError("metadata service flaky")
            return {doc_id: f"meta-{doc_id}" for doc_id in doc_ids}

        async def post_async(self, shared, doc_ids, meta):
            shared["meta"] = meta
            shared["meta_attempts"] = self.attempts

    class FetchImages(AsyncNode):
        async def exec_async(self, _):
            await asyncio.sleep(0)
            raise LookupError("no image service")

        async def exec_fallback_async(self, _, exc):
            return f"placeholder ({exc})"

        async def post_async(self, shared, p, images):
            shared["images"] = images

    class Translate(AsyncBatchNode):
        async def prep_async(self, shared):
            return [(doc_id, "fr") for doc_id in sorted(shared["summaries"])]

        async def exec_async(self, job):
            doc_id, lang = job
            await asyncio.sleep(0)
            return f"{lang}:DOC{doc_id}"

        async def post_async(self, shared, jobs, translations):
            shared["translations"] = translations

    class Score(AsyncParallelBatchNode):
        """Items run concurrently; doc 1 is rate limited once and retried."""

        async def prep_async(self, shared):
            self.rate_limited = set()
            return sorted(shared["counts"].items())

        async def exec_async(self, item):
            doc_id, n_words = item
            for _ in range(3 - doc_id):  # make later items finish first
                await asyncio.sleep(0)
            if doc_id == 1 and doc_id not in self.rate_limited:
                self.rate_limited.add(doc_id)
                raise RuntimeError("429 rate limited")
            return doc_id, n_words * 10

        async def post_async(self, shared, items, scores):
            shared["scores"] = scores  # gathered in item order
            return "scored"

    enrichment = AsyncFlow(start=FetchMeta(max_retries=3, wait=0.001))
    enrichment.start_node >> FetchImages(max_retries=2) >> Translate() >> Score(max_retries=2)

    # ---- indexing (async): a sequential and a parallel batch flow over params ----

    class Tag(AsyncNode):
        async def prep_async(self, shared):
            return self.params["tag"]

        async def exec_async(self, tag):
            await asyncio.sleep(0)
            return f"#{tag}"

        async def post_async(self, shared, tag, hashtag):
            shared.setdefault("tags", []).append(f"{hashtag}/{self.params['style']}")

    class Stamp(Node):  # a sync node inside an async batch flow's sub-flow
        def post(self, shared, p, e):
            shared.setdefault("stamps", []).append(self.params["tag"])

    class TagEach(AsyncBatchFlow):
        async def prep_async(self, shared):
            return [{"tag": tag} for tag in ("news", "tech", "ai")]

    tag = Tag()
    tag >> Stamp()

    class IndexDoc(AsyncNode):
        async def prep_async(self, shared):
            doc_id = self.params["doc_id"]
            await asyncio.sleep(0)
            return doc_id

        async def exec_async(self, doc_id):
            for _ in range(doc_id % 3):
                await asyncio.sleep(0)
            return self.params["doc_id"] == doc_id  # params unchanged across awaits

        async def post_async(self, shared, doc_id, consistent):
            shared.setdefault("index", []).append((doc_id, self.params["style"], consistent))
            return "indexed"

    class Confirm(AsyncNode):
        async def post_async(self, shared, p, e):
            await asyncio.sleep(0)
            shared.setdefault("confirmed", []).append(self.params["doc_id"])

    class IndexAll(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"doc_id": doc_id} for doc_id in sorted(shared["words"])]

        async def post_async(self, shared, param_list, exec_res):
            shared["indexed"] = len(param_list)
            return "index-built"

    index_doc = IndexDoc()
    index_doc - "indexed" >> Confirm()

    class Finalize(Node):
        """Sync node in the async flow: sorts what the parallel runs appended."""

        def prep(self, shared):
            return shared["index"], shared["confirmed"]

        def exec(self, pair):
            index, confirmed = pair
            return sorted(index), sorted(confirmed)

        def post(self, shared, pair, sorted_pair):
            shared["index"], shared["confirmed"] = sorted_pair
            return "finished"

    class Dropped(Node):
        def post(self, shared, p, e):
            shared["stopped_early"] = True
            return "aborted"

    index_all = IndexAll(start=index_doc)
    enrichment - "scored" >> TagEach(start=tag) >> index_all
    index_all - "index-built" >> Finalize()

    ingest >> editorial
    editorial - "done" >> enrichment
    editorial - "dropped" >> Dropped()

    class Pipeline(AsyncFlow):
        async def prep_async(self, shared):
            shared["runs"] = shared.get("runs", 0) + 1

        async def post_async(self, shared, p, last_action):
            shared["last_action"] = last_action
            return last_action

    pipeline = Pipeline(start=ingest)
    pipeline.set_params({"style": "brief"})

    async def main():
        approved = {"raw": ["  The Quick Brown Fox  ", "Jumps over", "the LAZY dog today "]}
        rejected = {"raw": ["  tiny  "]}
        results = {}
        for name, shared in (("approved", approved), ("rejected", rejected)):
            shared["returned"] = await pipeline.run_async(shared)
            results[name] = shared
        return results

    return asyncio.run(main())


def run_recording_warnings(mod: types.ModuleType) -> tuple[dict[str, Any], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = build_and_run(mod)
    return result, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_pocketflow_script_runs_unchanged_on_pocketbatch() -> None:
    """The same PocketFlow program leaves identical shared stores (and warnings) on both."""
    expected, expected_warnings = run_recording_warnings(pocketflow)
    actual, actual_warnings = run_recording_warnings(pocketbatch)
    assert actual == expected
    assert actual_warnings == expected_warnings == []


def test_pocketflow_script_does_what_it_says() -> None:
    """Sanity check on PocketFlow's own run, so the comparison above is not vacuous."""
    result = build_and_run(pocketflow)
    approved, rejected = result["approved"], result["rejected"]

    assert approved["parse_attempts"] == 3
    assert approved["label"] == "unlabelled x3 (TimeoutError: model down)"
    assert approved["counts"] == {0: 4, 1: 2, 2: 4}
    assert approved["summaries"] == {
        0: "[brief] the quick",
        1: "[brief] jumps over",
        2: "[brief] the lazy",
    }
    assert approved["summarized"] == 3
    assert approved["revisions"] == ["x", "xx", "xxx"]
    assert approved["verdict"] == "approve"
    assert approved["published"] is True
    assert approved["meta"] == {0: "meta-0", 1: "meta-1", 2: "meta-2"}
    assert approved["meta_attempts"] == 2
    assert approved["images"] == "placeholder (no image service)"
    assert approved["translations"] == ["fr:DOC0", "fr:DOC1", "fr:DOC2"]
    assert approved["scores"] == [(0, 40), (1, 20), (2, 40)]
    assert approved["tags"] == ["#news/brief", "#tech/brief", "#ai/brief"]
    assert approved["stamps"] == ["news", "tech", "ai"]
    assert approved["index"] == [(0, "brief", True), (1, "brief", True), (2, "brief", True)]
    assert approved["confirmed"] == [0, 1, 2]
    assert approved["indexed"] == 3
    assert approved["returned"] == approved["last_action"] == "finished"
    assert approved["runs"] == 1
    assert "stopped_early" not in approved

    assert rejected["verdict"] == "reject"
    assert rejected["published"] is False
    assert rejected["stopped_early"] is True
    assert rejected["returned"] == rejected["last_action"] == "aborted"
    assert "meta" not in rejected


@pytest.mark.parametrize("mod", [pocketflow, pocketbatch], ids=lambda m: m.__name__)
def test_pocketflow_script_is_repeatable(mod: types.ModuleType) -> None:
    """Running the program twice gives the same result: no state leaks between runs."""
    assert build_and_run(mod) == build_and_run(mod)


def test_script_body_only_touches_the_module_it_is_given() -> None:
    """The script names no pocketbatch-only API, so 'unchanged' is literal."""
    source = inspect.getsource(build_and_run)
    assert "pocketbatch" not in source
    assert "pocketflow" not in source
    for extension in ("max_concurrency", "on_item_error", "observer", "timeout=", "offload"):
        assert extension not in source
