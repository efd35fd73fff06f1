"""The one Python component of ``flow.yaml``: turn the model's reply into fields."""

from __future__ import annotations

import json
from typing import Any

from pocketbatch import ComponentError

FIELDS = ("summary", "word_count", "sentiment", "keywords")


def parse_analysis(data: dict[str, Any]) -> dict[str, Any]:
    """``{reply: '<JSON text>'}`` -> ``{summary, word_count, sentiment, keywords}``.

    Models sometimes wrap JSON in a Markdown code fence; that is tolerated.

    Raises:
        ComponentError: ``BAD_REPLY`` when the reply is not a JSON object with the
            expected fields (the message quotes the start of the reply).
    """
    text = data["reply"].strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        analysis = json.loads(text)
    except ValueError:
        analysis = None
    if not isinstance(analysis, dict) or not all(key in analysis for key in FIELDS):
        raise ComponentError(
            "BAD_REPLY", f"the model's reply is not the JSON asked for: {data['reply'][:120]!r}"
        )
    return {key: analysis[key] for key in FIELDS}
