"""The agent's components: decide, search, remember, answer.

A real agent would ask an LLM what to do next and call a search API; here both are
deterministic stand-ins so the loop, and its test cases, always take the same path:

* ``decide`` looks at the question's keywords and the notes gathered so far, and
  returns ``action: "search"`` (with the next keyword as the query) or
  ``action: "answer"`` (enough notes, nothing left to search, or out of budget);
* ``search`` looks a keyword up in a small built-in encyclopedia;
* ``remember`` appends what a search found to the notes;
* ``answer`` composes the answer from the notes.

The notes travel through the step outputs (``decide`` hands the notes it was given
on to ``remember``), not through module state, so concurrent runs never share
anything.
"""

from __future__ import annotations

import re
from typing import Any

ENCYCLOPEDIA = {
    "everest": "Mount Everest is 8,849 m high, the highest mountain above sea level.",
    "hillary": "Edmund Hillary and Tenzing Norgay made the first ascent of Everest in 1953.",
    "tenzing": "Tenzing Norgay was a Sherpa mountaineer from Nepal.",
    "k2": "K2 (8,611 m) is the second-highest mountain; its first ascent was in 1954.",
    "nile": "The Nile is about 6,650 km long and flows into the Mediterranean Sea.",
    "amazon": "The Amazon carries more water than any other river.",
}

_STOPWORDS_TEXT = (
    "a about an and are did does first for from high how in is it its long many me much "
    "of on or tell the to was what when where which who why with"
)
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def keywords(question: str) -> list[str]:
    """The question's search terms, in order: lower-case words that are not stopwords."""
    words = re.findall(r"[a-z0-9]+", question.lower())
    return [w for w in dict.fromkeys(words) if w not in STOPWORDS]


def decide(state: dict[str, Any]) -> dict[str, Any]:
    """Pick the next action: search the next keyword, or answer.

    Input ``{question, notes, need, max_searches}``; ``notes`` is a list of
    ``{query, facts}`` (one per search done so far).
    """
    notes = state["notes"]
    facts = sum(len(note["facts"]) for note in notes)
    searched = {note["query"] for note in notes}
    todo = [k for k in keywords(state["question"]) if k not in searched]
    base = {"notes": notes, "searched": [note["query"] for note in notes], "facts": facts}
    if facts >= state["need"]:
        return {**base, "action": "answer", "reason": f"{facts} facts are enough"}
    if not todo:
        return {**base, "action": "answer", "reason": "no keywords left to search"}
    if len(notes) >= state["max_searches"]:
        return {**base, "action": "answer", "reason": "search budget spent"}
    return {**base, "action": "search", "query": todo[0], "reason": f"{facts} facts so far"}


def search(request: dict[str, Any]) -> dict[str, Any]:
    """Look ``query`` up: the entry of that name, and every entry that mentions it."""
    query = request["query"]
    hits = [text for key, text in ENCYCLOPEDIA.items() if key == query or query in keywords(text)]
    return {"query": query, "facts": hits}


def remember(data: dict[str, Any]) -> dict[str, Any]:
    """The notes so far plus this search's facts (facts already noted are dropped)."""
    seen = {fact for note in data["notes"] for fact in note["facts"]}
    new = [fact for fact in data["found"]["facts"] if fact not in seen]
    return {"notes": [*data["notes"], {"query": data["found"]["query"], "facts": new}]}


def answer(data: dict[str, Any]) -> dict[str, Any]:
    """Compose the answer from the notes' facts."""
    facts = [fact for note in data["notes"] for fact in note["facts"]]
    text = " ".join(facts) if facts else "I could not find anything about that."
    return {"answer": text, "sources": [note["query"] for note in data["notes"] if note["facts"]]}
