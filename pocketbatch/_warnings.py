"""The warnings pocketbatch reports: :class:`PocketbatchWarning` and :class:`LoadWarning`.

They are not exceptions pocketbatch raises (see :mod:`pocketbatch._errors` for
those), but values it collects, e.g. on :attr:`pocketbatch.LoadedFlow.warnings`::

    PocketbatchWarning (UserWarning)
    └── LoadWarning                  a key Stepflow ignores, at file:line:column

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn(LoadWarning("unknown key 'x'", file="f.yaml", line=1, column=1))
    >>> str(caught[0].message)
    "f.yaml:1:1: unknown key 'x'"
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pocketbatch._errors import LoadError, located

__all__ = ("LoadWarning", "PocketbatchWarning")


class PocketbatchWarning(UserWarning):
    """Root of the warnings pocketbatch reports.

    pocketbatch collects them rather than calling :func:`warnings.warn` (a flow
    loaded in a test suite that turns warnings into errors still loads); pass one
    to :func:`warnings.warn` to route it through Python's warning filters.

    Example:
        >>> issubclass(LoadWarning, PocketbatchWarning), issubclass(LoadWarning, UserWarning)
        (True, True)
    """


class LoadWarning(PocketbatchWarning):
    """Something in a flow or config file that Stepflow accepts and pocketbatch doubts.

    Stepflow ignores keys it does not know (``depends_on`` on a step, a top-level
    ``input``, a misspelt ``ouput``); pocketbatch loads such a file too, and reports
    each key as a warning at its ``file:line:column`` (with a did-you-mean), so a
    typo is still seen. ``pocketbatch validate --strict`` (and ``load_flow(...,
    strict=True)``) turn warnings into :class:`LoadError`.

    Attributes:
        message: what was ignored, and the likely fix.
        file: the file (or ``"<string>"``), when known.
        line, column: 1-based position, when known.
        step: the id of the step concerned, when there is one.

    Example:
        >>> print(LoadWarning("unknown key 'depends_on' in a step, ignored",
        ...                   file="flow.yaml", line=9, column=5, step="b"))
        flow.yaml:9:5: step 'b': unknown key 'depends_on' in a step, ignored
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        step: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.step = step
        super().__init__(located(message, file, line, column, step))

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = partial(
            type(self), file=self.file, line=self.line, column=self.column, step=self.step
        )
        return (rebuild, (self.message,), self.__dict__)

    def to_error(self) -> LoadError:
        """The same problem as a :class:`LoadError` (``--strict``).

        Example:
            >>> LoadWarning("unknown key 'x'", file="f.yaml", line=1, column=1).to_error()
            LoadError("f.yaml:1:1: unknown key 'x'")
        """
        return LoadError(
            self.message, file=self.file, line=self.line, column=self.column, step=self.step
        )
