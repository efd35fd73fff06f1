"""The keys a flow file may use, and how unknown ones are treated.

Stepflow's flow structures (the flow, a step, ``onError``, ``test`` and its cases)
ignore keys they do not know, so a file Stepflow runs may carry ``depends_on`` on
a step or a top-level ``input``. :class:`_Keys` reads such a mapping in any of its
accepted spellings and records each unknown key as a
:class:`~pocketbatch.LoadWarning` at its ``file:line:column`` (with a
did-you-mean), so the file loads as in Stepflow and a typo is still seen.
pocketbatch's own structures (``cache``) stay strict: an unknown key there is a
:class:`~pocketbatch.LoadError`.
"""

from __future__ import annotations

from typing import Any

from pocketbatch._errors import LoadError
from pocketbatch.loader._source import DocPath, Document, did_you_mean

__all__ = ("_Keys",)

# Canonical key -> accepted spellings.
_TOP_KEYS: dict[str, tuple[str, ...]] = {
    "schema": ("schema",),
    "name": ("name",),
    "description": ("description",),
    "version": ("version",),
    "metadata": ("metadata",),
    "input_schema": ("input_schema", "inputSchema"),
    "output_schema": ("output_schema", "outputSchema"),
    "variables_schema": ("variables_schema", "variablesSchema"),
    "schemas": ("schemas",),
    "steps": ("steps",),
    "output": ("output",),
    "start": ("start",),
    "max_steps": ("max_steps", "maxSteps"),
    "test": ("test",),
    "examples": ("examples",),
}
_STEP_KEYS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "component": ("component",),
    "input": ("input",),
    "description": ("description",),
    "metadata": ("metadata",),
    "skip": ("skip", "skip_if", "skipIf"),
    "on_error": ("on_error", "onError"),
    "must_execute": ("must_execute", "mustExecute"),
    "next": ("next",),
    "action": ("action",),
    "for_each": ("for_each", "forEach"),
    "as": ("as",),
    "max_concurrency": ("max_concurrency", "maxConcurrency"),
    "on_item_error": ("on_item_error", "onItemError"),
    "input_schema": ("input_schema", "inputSchema"),
    "output_schema": ("output_schema", "outputSchema"),
    "cache": ("cache",),
}
_CACHE_KEYS: dict[str, tuple[str, ...]] = {"salt": ("salt", "version")}
_ON_ERROR_KEYS: dict[str, tuple[str, ...]] = {
    "action": ("action",),
    "max_retries": ("max_retries", "maxRetries"),
    "default_value": ("default_value", "defaultValue"),
    "wait": ("wait",),
    "backoff": ("backoff",),
}
_TEST_KEYS: dict[str, tuple[str, ...]] = {
    "cases": ("cases",),
    "config": ("config",),
    "config_file": ("config_file", "configFile"),
}
_CASE_KEYS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "description": ("description",),
    "input": ("input",),
    "output": ("output",),
}


class _Keys:
    """Reads a mapping whose keys may come in several spellings; reports unknown keys."""

    def __init__(
        self,
        doc: Document,
        value: Any,
        where: DocPath,
        spellings: dict[str, tuple[str, ...]],
        what: str,
        step: str | None = None,
        *,
        lenient: bool = True,
    ) -> None:
        if not isinstance(value, dict):
            raise doc.error(f"{what} must be a mapping, got {_kind(value)}", where, step=step)
        self.doc, self.value, self.where, self.step = doc, value, where, step
        self.found: dict[str, str] = {}  # canonical -> spelling used
        accepted = {s: c for c, ss in spellings.items() for s in ss}
        for key in value:
            canonical = accepted.get(key) if isinstance(key, str) else None
            if canonical is None:
                hint = did_you_mean(str(key), accepted)
                if not lenient:
                    raise doc.error(
                        f"unknown key {key!r} in {what}{hint}", (*where, key), step=step
                    )
                doc.warn(
                    f"unknown key {key!r} in {what}{hint}, which Stepflow ignores",
                    (*where, key),
                    step=step,
                )
                continue
            if canonical in self.found:
                raise doc.error(
                    f"{key!r} and {self.found[canonical]!r} mean the same thing; keep one",
                    (*where, key),
                    step=step,
                )
            self.found[canonical] = key

    def __contains__(self, canonical: str) -> bool:
        return canonical in self.found

    def get(self, canonical: str, default: Any = None) -> Any:
        key = self.found.get(canonical)
        return default if key is None else self.value[key]

    def at(self, canonical: str) -> DocPath:
        return (*self.where, self.found.get(canonical, canonical))

    def error(self, message: str, canonical: str | None = None) -> LoadError:
        where = self.at(canonical) if canonical else self.where
        return self.doc.error(message, where, step=self.step)


def _whole(value: Any, *, minimum: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
