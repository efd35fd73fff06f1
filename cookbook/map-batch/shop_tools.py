"""Components for the basket-pricing flow: parse, price (per line), receipt.

``parse`` splits an order like ``"3 apple, 2 pear, 1 durian"`` into line items;
``/builtin/map`` runs the ``price-line`` sub-flow once per item; ``receipt`` sums the
lines that were priced and lists the ones that were not. The catalogue is a fixed
table, so every run gives the same result.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from pocketbatch import ComponentError

# product -> unit price in cents
CATALOGUE = {
    "apple": 45,
    "banana": 30,
    "cherry": 12,
    "egg": 28,
    "flour": 189,
    "milk": 119,
    "pear": 55,
}

_LINE = re.compile(r"\s*(\d+)\s*x?\s+([a-z][a-z ]*?)\s*")


def parse(order: dict[str, Any]) -> dict[str, Any]:
    """``{text: "3 apple, 2 pear"}`` -> ``{items: [{line, product, qty, empty}]}``.

    Raises:
        ComponentError: ``INVALID_INPUT`` for a line that is not ``<qty> <product>``.
    """
    items = []
    for number, raw in enumerate(order["text"].lower().split(","), start=1):
        match = _LINE.fullmatch(raw)
        if match is None:
            raise ComponentError(
                "INVALID_INPUT", f"line {number}: {raw.strip()!r} is not '<quantity> <product>'"
            )
        qty = int(match[1])
        items.append({"line": number, "product": match[2], "qty": qty, "empty": qty == 0})
    return {"items": items}


async def price(line: dict[str, Any]) -> dict[str, Any]:
    """The price of one line item (an async component: a real one would call a pricing API).

    Raises:
        ComponentError: ``NOT_FOUND`` for a product not in the catalogue.
    """
    await asyncio.sleep(0.01)  # the "API call", so that lines really overlap
    unit = CATALOGUE.get(line["product"])
    if unit is None:
        raise ComponentError("NOT_FOUND", f"no price for {line['product']!r}")
    return {**line, "unit_cents": unit, "total_cents": unit * line["qty"]}


def receipt(priced: dict[str, Any]) -> dict[str, Any]:
    """Sum the priced lines; list the failed and skipped ones with their reasons.

    ``priced`` is /builtin/map's output next to the items it ran on:
    ``{items: [...], map: {results: [{outcome, result | error}], successful, failed, skipped}}``.
    """
    lines, problems, total = [], [], 0
    for item, result in zip(priced["items"], priced["map"]["results"]):
        where = f"line {item['line']} ({item['product']})"
        if result["outcome"] == "success":
            line = result["result"]
            total += line["total_cents"]
            lines.append(f"{line['qty']} x {line['product']} = {line['total_cents'] / 100:.2f}")
        elif result["outcome"] == "failed":
            problems.append(f"{where}: {result['error']['message']}")
        else:
            problems.append(f"{where}: skipped, quantity 0")
    return {"lines": lines, "total": f"{total / 100:.2f}", "not_priced": problems}
