"""Summarise a 2,000-row sales CSV chunk by chunk with a pocketbatch ``BatchNode``.

``prep`` returns a generator that reads ``data/sales.csv`` with the stdlib ``csv``
module and yields lists of ``chunk_size`` row dicts, one at a time: the file is
never loaded whole. ``exec`` turns one chunk into statistics, ``post`` adds the
chunks up into the totals.

Run it from the repository root or from this folder::

    python cookbook/batch-csv/main.py
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import islice
from pathlib import Path
from typing import Any

from pocketbatch import BatchNode, Event, EventKind

DATA_FILE = Path(__file__).resolve().parent / "data" / "sales.csv"
CHUNK_SIZE = 250
CENT = Decimal("0.01")


def read_chunks(path: Path, chunk_size: int, trace: list[str]) -> Iterator[list[dict[str, str]]]:
    """Yield lists of up to ``chunk_size`` rows; the file stays open only while iterating."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        index = 0
        while chunk := list(islice(rows, chunk_size)):
            trace.append(f"read {index}")
            yield chunk
            index += 1


class ChunkStats(BatchNode):
    """One batch item per chunk of rows."""

    def prep(self, shared: dict[str, Any]) -> Iterator[list[dict[str, str]]]:
        # A generator: BatchNode pulls one chunk, runs exec on it, then pulls the next.
        return read_chunks(shared["csv_path"], shared["chunk_size"], shared["trace"])

    def exec(self, rows: list[dict[str, str]]) -> dict[str, Any]:
        # Pure computation on one chunk: safe to retry, never touches `shared`.
        by_region: dict[str, Decimal] = {}
        biggest = ("", Decimal(0))
        for row in rows:
            amount = int(row["quantity"]) * Decimal(row["unit_price"])
            by_region[row["region"]] = by_region.get(row["region"], Decimal(0)) + amount
            if amount > biggest[1]:
                biggest = (row["order_id"], amount)
        return {
            "rows": len(rows),
            "first": rows[0]["order_id"],
            "last": rows[-1]["order_id"],
            "sales": sum(by_region.values(), Decimal(0)),
            "by_region": by_region,
            "biggest_order": biggest,
        }

    def post(self, shared: dict[str, Any], chunks: object, stats: list[dict[str, Any]]) -> None:
        # `chunks` is the generator prep returned, already used up by now: read
        # everything from `stats` (one entry per chunk, in file order).
        rows = sum(s["rows"] for s in stats)
        total = sum((s["sales"] for s in stats), Decimal(0))
        by_region: dict[str, Decimal] = {}
        for s in stats:
            for region, amount in s["by_region"].items():
                by_region[region] = by_region.get(region, Decimal(0)) + amount
        top_region = max(by_region, key=lambda r: (by_region[r], r))
        shared["chunks"] = stats
        shared["summary"] = {
            "chunks": len(stats),
            "rows": rows,
            "total_sales": total,
            "average_sale": (total / rows).quantize(CENT, ROUND_HALF_EVEN),
            "by_region": dict(sorted(by_region.items(), key=lambda kv: (-kv[1], kv[0]))),
            "top_region": top_region,
            "biggest_order": max((s["biggest_order"] for s in stats), key=lambda b: b[1]),
        }


def main(csv_path: Path = DATA_FILE, chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """Run the batch and return ``shared`` (summary, per-chunk stats, trace)."""
    shared: dict[str, Any] = {"csv_path": csv_path, "chunk_size": chunk_size, "trace": []}

    def observe(event: Event) -> None:
        # Item events arrive as each chunk is processed: a natural progress hook.
        if event.kind is EventKind.ITEM_STARTED:
            shared["trace"].append(f"exec {event.item}")

    ChunkStats(name="chunk-stats").run(shared, observer=observe)
    return shared


def report(shared: dict[str, Any]) -> None:
    summary = shared["summary"]
    print(f"Read {summary['rows']} rows in {summary['chunks']} chunks of {shared['chunk_size']}")
    print()
    print(f"{'chunk':>5}  {'orders':<13}  {'rows':>4}  {'sales':>10}  biggest order")
    for i, s in enumerate(shared["chunks"]):
        order, amount = s["biggest_order"]
        print(
            f"{i:>5}  {s['first']}-{s['last']}  {s['rows']:>4}  {s['sales']:>10,.2f}"
            f"  {order} ({amount:,.2f})"
        )
    print()
    print(f"Total sales:   {summary['total_sales']:,.2f}")
    print(f"Average sale:  {summary['average_sale']:,.2f}")
    print(f"Top region:    {summary['top_region']}")
    order, amount = summary["biggest_order"]
    print(f"Biggest order: {order} ({amount:,.2f})")
    print()
    print("Sales by region:")
    for region, amount in summary["by_region"].items():
        print(f"  {region:<8} {amount:>10,.2f}")
    print()
    lazy = shared["trace"][:4] == ["read 0", "exec 0", "read 1", "exec 1"]
    print(f"Chunks read lazily (read 0, exec 0, read 1, exec 1, ...): {lazy}")


if __name__ == "__main__":
    report(main())
