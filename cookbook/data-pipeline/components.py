"""The three Python components of ``flow.yaml``: validate, transform, enrich.

Each is a plain function ``f(input: dict) -> dict``: no pocketbatch base class, no
registration. ``pocketbatch.yaml`` routes ``/data/<name>`` to the function ``<name>``
in this module. Everything is deterministic (fixed exchange and tax tables), so the
flow's test cases and the batch output never change between runs.
"""

from __future__ import annotations

import re
from typing import Any

from pocketbatch import ComponentError

# Fixed rates, so results are reproducible (a real pipeline would look them up).
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067}

# country -> (region, VAT or sales-tax rate). Orders from other countries still go
# through: enrich raises, and the flow's on_error: use_default fills in a default.
TAX_TABLE = {
    "US": ("North America", 0.0),
    "CA": ("North America", 0.05),
    "GB": ("Europe", 0.20),
    "DE": ("Europe", 0.19),
    "FR": ("Europe", 0.20),
    "ES": ("Europe", 0.21),
    "IT": ("Europe", 0.22),
    "NL": ("Europe", 0.21),
    "JP": ("Asia", 0.10),
    "AU": ("Oceania", 0.10),
}

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
MAX_AMOUNT = 10_000


def validate(order: dict[str, Any]) -> dict[str, Any]:
    """Business rules the input schema cannot express; the order itself is passed on.

    Raises:
        ComponentError: ``VALIDATION_FAILED``, listing every broken rule.
    """
    problems = []
    email = order["email"].strip()
    if not _EMAIL.fullmatch(email):
        problems.append(f"email {order['email']!r} is not an email address")
    if not 0 < order["amount"] <= MAX_AMOUNT:
        problems.append(f"amount {order['amount']} is not in (0, {MAX_AMOUNT}]")
    country = order["country"].strip()
    if not (len(country) == 2 and country.isalpha()):
        problems.append(f"country {order['country']!r} is not a two-letter code")
    if problems:
        raise ComponentError(
            "VALIDATION_FAILED", f"order {order['order_id']}: " + "; ".join(problems)
        )
    return {"order": order, "checked": ["email", "amount", "country"]}


def transform(data: dict[str, Any]) -> dict[str, Any]:
    """Normalise the fields and convert the amount to US dollars."""
    order = data["order"]
    amount_usd = round(order["amount"] * USD_PER_UNIT[order["currency"]], 2)
    customer = " ".join(order.get("customer", "").split())  # collapse whitespace
    if customer.islower():
        customer = customer.title()  # "grace hopper" -> "Grace Hopper"; "van Rossum" stays
    return {
        "order_id": order["order_id"],
        "customer": customer or "(anonymous)",
        "email": order["email"].strip().lower(),
        "country": order["country"].strip().upper(),
        "amount": order["amount"],
        "currency": order["currency"],
        "amount_usd": amount_usd,
        "size": "large" if amount_usd >= 1000 else "medium" if amount_usd >= 100 else "small",
    }


def enrich(data: dict[str, Any]) -> dict[str, Any]:
    """Region and tax for the order's country.

    Raises:
        LookupError: the country is not in the tax table (the flow then uses its
            ``on_error`` default instead of failing the order).
    """
    country = data["country"]
    if country not in TAX_TABLE:
        raise LookupError(f"no tax data for country {country!r}")
    region, rate = TAX_TABLE[country]
    tax_usd = round(data["amount_usd"] * rate, 2)
    return {
        "enriched": True,
        "region": region,
        "tax_rate": rate,
        "tax_usd": tax_usd,
        "total_usd": round(data["amount_usd"] + tax_usd, 2),
    }
