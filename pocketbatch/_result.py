"""The result of one run of a flow: :class:`FlowResult` and its :class:`FlowError`.

A leaf module (standard library only), so that the loader that makes results and
the batch runner, server and executors that pass them on all import it at the
top, and none of them needs the loader to build a failed result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ("FlowError", "FlowResult", "Outcome")

Outcome = Literal["success", "failed", "skipped"]


@dataclass(frozen=True)
class FlowError:
    """Why a run failed: a ``code`` (``EXPRESSION_FAILURE``, ``COMPONENT_FAILED``,
    ``INVALID_INPUT``...) and a human ``message``.

    Example:
        >>> FlowError("INVALID_INPUT", "input $.name: 'name' is a required property").to_dict()
        {'code': 'INVALID_INPUT', 'message': "input $.name: 'name' is a required property"}
    """

    code: str | int
    message: str
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"code": ..., "message": ...}`` (plus ``data`` when set)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


@dataclass(frozen=True)
class FlowResult:
    """The result of one run of a loaded flow.

    Attributes:
        outcome: ``"success"``, ``"failed"``, or ``"skipped"`` (the output needed a
            step that was skipped).
        result: the output value, for a success.
        error: the :class:`FlowError`, for a failure.
        steps: each step that was reached, by id: ``completed``, ``failed``,
            ``skipped`` or ``defaulted`` (failed, and ``on_error: use_default``).
        line: for a batch input read from JSONL, its line number in the inputs
            (1-based, blank lines counted); a failed batch record carries it as a
            top-level ``"line"``. Not part of :meth:`to_dict` (Stepflow's shape).

    Example:
        >>> FlowResult("success", {"n": 1}).to_dict()
        {'outcome': 'success', 'result': {'n': 1}}
    """

    outcome: Outcome
    result: Any = None
    error: FlowError | None = None
    steps: Mapping[str, str] = field(default_factory=dict)
    line: int | None = field(default=None, compare=False)

    @classmethod
    def failed(
        cls,
        code: str | int,
        message: str,
        data: Any = None,
        *,
        steps: Mapping[str, str] | None = None,
        line: int | None = None,
    ) -> FlowResult:
        """A failed result with a :class:`FlowError` of ``code``, ``message`` and ``data``
        (and the input ``line`` it came from, when known).

        Example:
            >>> FlowResult.failed("WORKER_CRASHED", "the worker died").to_dict()
            {'outcome': 'failed', 'error': {'code': 'WORKER_CRASHED', 'message': 'the worker died'}}
        """
        error = FlowError(code, message, data)
        return cls("failed", error=error, steps=steps or {}, line=line)

    @property
    def ok(self) -> bool:
        """Whether the run succeeded."""
        return self.outcome == "success"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form Stepflow uses: ``{"outcome": "success", "result": ...}`` or
        ``{"outcome": "failed", "error": {"code": ..., "message": ...}}``."""
        if self.outcome == "success":
            return {"outcome": "success", "result": self.result}
        if self.outcome == "failed" and self.error is not None:
            return {"outcome": "failed", "error": self.error.to_dict()}
        return {"outcome": self.outcome}
