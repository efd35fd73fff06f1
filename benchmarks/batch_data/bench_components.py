"""Components of the batch benchmark's flows (routed as ``/bench/<name>``).

``validate``, ``transform`` and ``enrich`` are deliberately trivial, so that the
framework, not the work, dominates; ``benchmarks/batch.py`` also calls them directly
in a loop as the baseline. ``spin`` is pure-Python CPU work whose size the input
sets (``rounds``), calibrated by the benchmark to about 20 ms on the machine.
"""

from __future__ import annotations

from typing import Any


def validate(item: dict[str, Any]) -> dict[str, Any]:
    """Check the fields the next steps need; pass the item on."""
    if item["qty"] <= 0 or item["price"] < 0:
        raise ValueError(f"item {item['id']}: bad quantity or price")
    return item


def transform(item: dict[str, Any]) -> dict[str, Any]:
    """Normalise the name and compute the total."""
    return {"id": item["id"], "name": item["name"].upper(), "total": item["qty"] * item["price"]}


def enrich(item: dict[str, Any]) -> dict[str, Any]:
    """Add a band derived from the total."""
    return {**item, "band": "high" if item["total"] >= 100 else "low"}


def spin(item: dict[str, Any]) -> dict[str, Any]:
    """``rounds`` turns of an integer hash loop: CPU-bound, holds the GIL throughout."""
    acc = item.get("seed", 0)
    for i in range(item["rounds"]):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return {"id": item.get("id"), "acc": acc}
