"""Translate one text into twelve languages with an ``AsyncParallelBatchNode``.

The "LLM" is a fake async function (``fake_llm``) that sleeps 10 ms and answers
from a small phrasebook. It fails once, on its first call for German, to show
retries. The node runs at most 4 calls at once (``max_concurrency=4``), starts at
most 50 attempts per second (``max_per_second=50``) and retries a failed call up to
3 attempts in all (``max_retries=3, wait=0.01``). An observer counts the items in
flight and records the peak.

Run it from the repository root or from this folder::

    python cookbook/parallel-translate/main.py
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pocketbatch import AsyncParallelBatchNode, Event, EventKind

TEXT = "Hello, world"

# Input order. Diacritics are dropped so the output is plain ASCII on any console.
LANGUAGES = {
    "fr": "French",
    "es": "Spanish",
    "de": "German",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "sv": "Swedish",
    "pl": "Polish",
    "tr": "Turkish",
    "id": "Indonesian",
    "sw": "Swahili",
    "fi": "Finnish",
}

PHRASEBOOK = {
    ("Hello, world", "fr"): "Bonjour, le monde",
    ("Hello, world", "es"): "Hola, mundo",
    ("Hello, world", "de"): "Hallo, Welt",
    ("Hello, world", "it"): "Ciao, mondo",
    ("Hello, world", "pt"): "Ola, mundo",
    ("Hello, world", "nl"): "Hallo, wereld",
    ("Hello, world", "sv"): "Hej, varlden",
    ("Hello, world", "pl"): "Witaj, swiecie",
    ("Hello, world", "tr"): "Merhaba, dunya",
    ("Hello, world", "id"): "Halo, dunia",
    ("Hello, world", "sw"): "Habari, dunia",
    ("Hello, world", "fi"): "Hei, maailma",
}

FLAKY_LANGUAGE = "de"  # the first call for this language fails
MAX_CONCURRENCY = 4
MAX_PER_SECOND = 50


class TransientLLMError(Exception):
    """What a real client raises on a 429/503: worth another attempt."""


class FakeLLM:
    """Call log of the fake LLM, reset for every run so ``main()`` is repeatable."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}  # language -> number of calls
        self.active = 0
        self.peak_active = 0
        self.starts: list[float] = []


LLM = FakeLLM()


async def fake_llm(prompt: str) -> str:
    """A deterministic stand-in for an LLM API: ``"Translate to <code>: <text>"``."""
    head, text = prompt.split(": ", 1)
    lang = head.removeprefix("Translate to ")
    LLM.calls[lang] = LLM.calls.get(lang, 0) + 1
    LLM.starts.append(time.monotonic())
    LLM.active += 1
    LLM.peak_active = max(LLM.peak_active, LLM.active)
    try:
        await asyncio.sleep(0.01)  # network latency
        if lang == FLAKY_LANGUAGE and LLM.calls[lang] == 1:
            raise TransientLLMError("503 Service Unavailable")
        return PHRASEBOOK.get((text, lang), f"[{lang}] {text}")
    finally:
        LLM.active -= 1


class Translate(AsyncParallelBatchNode):
    async def prep_async(self, shared: dict[str, Any]) -> list[tuple[str, str]]:
        return [(shared["text"], lang) for lang in shared["languages"]]

    async def exec_async(self, job: tuple[str, str]) -> str:
        text, lang = job
        return await fake_llm(f"Translate to {lang}: {text}")

    async def post_async(
        self, shared: dict[str, Any], jobs: list[tuple[str, str]], translations: list[str]
    ) -> None:
        # Results arrive in input order, whatever order the calls finished in.
        shared["translations"] = [(lang, out) for (_, lang), out in zip(jobs, translations)]


class InFlight:
    """Observer: items started but not yet finished, the peak of that, and retries."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.retries: list[tuple[int, int, str]] = []  # (item, failed attempt, error)

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.ITEM_STARTED:
            self.now += 1
            self.peak = max(self.peak, self.now)
        elif event.kind in (EventKind.ITEM_FINISHED, EventKind.ITEM_FAILED):
            self.now -= 1
        elif event.kind is EventKind.RETRIED:
            assert event.item is not None
            assert event.attempt is not None
            self.retries.append((event.item, event.attempt, repr(event.error)))


def main() -> dict[str, Any]:
    """Translate ``TEXT`` into every language in ``LANGUAGES``; return what happened."""
    global LLM
    LLM = FakeLLM()
    node = Translate(
        max_concurrency=MAX_CONCURRENCY,
        max_per_second=MAX_PER_SECOND,
        max_retries=3,
        wait=0.01,
        retry_on=TransientLLMError,
    )
    observer = InFlight()
    shared: dict[str, Any] = {"text": TEXT, "languages": list(LANGUAGES)}
    asyncio.run(node.run_async(shared, observer=observer))

    attempts = len(LLM.starts)
    span = max(LLM.starts) - min(LLM.starts)
    return {
        "translations": shared["translations"],
        "peak_in_flight": observer.peak,
        "peak_llm_calls": LLM.peak_active,
        "retries": [(LANGUAGES[shared["languages"][i]], a, e) for i, a, e in observer.retries],
        "llm_calls": attempts,
        # n starts at <= 50/s span at least (n - 1) / 50 s; allow for timer granularity.
        "rate_limit_respected": span >= 0.95 * (attempts - 1) / MAX_PER_SECOND,
    }


def report(result: dict[str, Any]) -> None:
    print(f'Translations of "{TEXT}" (input order):')
    for lang, text in result["translations"]:
        print(f"  {lang}  {LANGUAGES[lang]:<11} {text}")
    print()
    for language, attempt, error in result["retries"]:
        print(f"Retried {language} after failed attempt {attempt}: {error}")
    print(f"LLM calls: {result['llm_calls']} for {len(result['translations'])} languages")
    print(f"Peak items in flight: {result['peak_in_flight']} (max_concurrency={MAX_CONCURRENCY})")
    print(
        f"Concurrent LLM calls never above {MAX_CONCURRENCY}: {result['peak_llm_calls'] <= MAX_CONCURRENCY}"
    )
    print(f"Rate limit of {MAX_PER_SECOND}/s respected: {result['rate_limit_respected']}")


if __name__ == "__main__":
    report(main())
