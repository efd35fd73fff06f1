"""What both config formats share: a reader that fails at ``file:line:column``, and mocks.

:class:`ConfigReader` checks the values of a parsed config document and raises a
:class:`~pocketbatch.LoadError` at the offending spot; :func:`read_mock` reads one
mock component (its behaviours), written the same way in ``pocketbatch.yaml`` and
in a Stepflow ``mock`` plugin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pocketbatch._errors import LoadError
from pocketbatch.loader._mocks import Behavior, MockComponent
from pocketbatch.loader._source import DocPath, Document, PairList, did_you_mean, listed

__all__ = ("ConfigReader", "child_path", "kind_of", "read_mock")

_MOCK_KEYS = ("behaviors", "input_schema", "output_schema", "inputSchema", "outputSchema")


class ConfigReader:
    """Reads a config document, raising :class:`LoadError` at the offending spot."""

    def __init__(self, doc: Document, *, strict: bool) -> None:
        self.doc = doc
        self.strict = strict

    def error(self, message: str, where: DocPath) -> LoadError:
        return self.doc.error(message, where)

    def where(self, where: DocPath) -> str:
        pos = self.doc.position(where)
        return f"{self.doc.name}:{pos.line}:{pos.column}" if pos else self.doc.name

    def mapping(self, value: Any, where: DocPath, what: str) -> dict[Any, Any]:
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        raise self.error(f"{what} must be a mapping, got {kind_of(value)}", where)

    def keys(
        self, mapping: Mapping[Any, Any], where: DocPath, allowed: Sequence[str], what: str
    ) -> None:
        """Unknown keys are errors in a strict reader (pocketbatch's format), and
        warnings (:class:`~pocketbatch.LoadWarning`) in a lenient one (Stepflow's,
        which ignores them)."""
        for index, key in enumerate(mapping):
            if key not in allowed:
                hint = did_you_mean(str(key), allowed) or f" (expected {listed(allowed)})"
                within = f" in {what}" if what else ""
                at = child_path(where, key, index)
                if self.strict:
                    raise self.error(f"unknown key {key!r}{within}{hint}", at)
                self.doc.warn(f"unknown key {key!r}{within}{hint}, which Stepflow ignores", at)

    def string(self, value: Any, where: DocPath, what: str) -> str:
        if isinstance(value, str) and value:
            return value
        raise self.error(f"{what} must be a non-empty string, got {kind_of(value)}", where)

    def boolean(self, value: Any, where: DocPath, what: str) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        raise self.error(f"{what} must be true or false, got {kind_of(value)}", where)


def child_path(where: DocPath, key: Any, index: int) -> DocPath:
    """The document path of a mapping entry, as :mod:`._source` records it."""
    return (*where, key) if isinstance(key, str | int) else (*where, index)


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, PairList):
        return "a mapping with non-string keys"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    return type(value).__name__


def read_mock(r: ConfigReader, path: str, spec: Any, where: DocPath) -> MockComponent:
    spec = r.mapping(spec, where, f"mock {path!r}")
    r.keys(spec, where, _MOCK_KEYS, f"mock {path!r}")
    behaviors = _behaviors(r, spec.get("behaviors"), (*where, "behaviors"))
    return MockComponent(
        path,
        behaviors,
        input_schema=spec.get("input_schema", spec.get("inputSchema")),
        output_schema=spec.get("output_schema", spec.get("outputSchema")),
    )


def _behaviors(r: ConfigReader, value: Any, where: DocPath) -> list[Behavior]:
    """A list of ``{input, outcome, result|error}``, or Stepflow's mapping keyed by input."""
    if value is None:
        return []
    found: list[Behavior] = []
    if isinstance(value, list) and not isinstance(value, PairList):
        for index, spec in enumerate(value):
            at = (*where, index)
            if not isinstance(spec, dict) or "input" not in spec:
                raise r.error(
                    "a mock behavior in a list needs an 'input' and an 'outcome' ('success' "
                    f"with a 'result', or 'failed' with an 'error'); got {kind_of(spec)}",
                    at,
                )
            found.append((spec["input"], *_outcome(r, spec, at, with_input=True)))
        return found
    if isinstance(value, dict | PairList):
        pairs = list(value) if isinstance(value, PairList) else list(value.items())
        for index, (key, spec) in enumerate(pairs):
            at = child_path(where, key, index)
            found.append((_behavior_input(r, key, at), *_outcome(r, spec, at, with_input=False)))
        return found
    raise r.error(
        f"'behaviors' must be a list of {{input, outcome, ...}} or a mapping from input to "
        f"outcome, got {kind_of(value)}",
        where,
    )


def _behavior_input(r: ConfigReader, key: Any, where: DocPath) -> Any:
    """A behaviour's input from its key: a YAML mapping, or JSON text such as ``'{"a": 1}'``."""
    if isinstance(key, str) and key.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(key)
        except ValueError as exc:
            raise r.error(
                f"the behavior key {key!r} looks like JSON but is not: {exc}", where
            ) from None
    return key


def _outcome(r: ConfigReader, spec: Any, where: DocPath, *, with_input: bool) -> tuple[str, Any]:
    spec = r.mapping(spec, where, "a mock behavior")
    allowed = (
        ("input", "outcome", "result", "error") if with_input else ("outcome", "result", "error")
    )
    r.keys(spec, where, allowed, "a mock behavior")
    outcome = spec.get("outcome")
    if outcome is None:
        if isinstance(spec.get("error"), str) and "result" not in spec:
            # Stepflow's "internal error" behaviour: {error: "message"}.
            return "failed", {"code": "COMPONENT_FAILED", "message": spec["error"]}
        raise r.error(
            "a mock behavior needs 'outcome: success' with a 'result', or "
            "'outcome: failed' with an 'error: {code, message}'",
            where,
        )
    if outcome == "success":
        if "result" not in spec:
            raise r.error("'outcome: success' needs a 'result'", (*where, "outcome"))
        return "success", spec["result"]
    if outcome == "failed":
        error = spec.get("error")
        error_at = (*where, "error") if "error" in spec else (*where, "outcome")
        if not isinstance(error, dict):
            raise r.error(
                f"'outcome: failed' needs an 'error' mapping with a 'code' and a 'message', "
                f"got {kind_of(error)}",
                error_at,
            )
        r.keys(error, error_at, ("code", "message", "data"), "a mock error")
        code = error.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, str | int)):
            raise r.error(
                f"an error code must be a string or an integer, got {kind_of(code)}",
                (*error_at, "code"),
            )
        message = error.get("message")
        if message is not None and not isinstance(message, str):
            raise r.error(
                f"an error message must be a string, got {kind_of(message)}",
                (*error_at, "message"),
            )
        return "failed", error
    if outcome == "skipped":
        raise r.error(
            "pocketbatch mocks cannot skip a step; use 'outcome: success' or 'outcome: failed'",
            (*where, "outcome"),
        )
    hint = did_you_mean(str(outcome), ("success", "failed")) or " (expected 'success' or 'failed')"
    raise r.error(f"unknown outcome {outcome!r}{hint}", (*where, "outcome"))
