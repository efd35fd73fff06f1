"""The ``pocketbatch`` flavour of :class:`argparse.ArgumentParser`: usage errors
exit 2 with the usage of the command they concern, and a mistyped flag, command
or choice gets a did-you-mean (what Python 3.12's ``suggest_on_error`` does for
choices, here on 3.11 too, and for flags as well)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from pocketbatch.cli._common import EXIT_USAGE

__all__ = ("Parser", "suggestion")

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def suggestion(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word``, else ``""``.

    Example:
        >>> suggestion("--outptu", ["--output", "--flow"])
        " (did you mean '--output'?)"
        >>> suggestion("--zzz", ["--output"])
        ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Parser(argparse.ArgumentParser):
    """Exit 2 on bad usage (after the usage line); suggest the closest command,
    choice or flag.

    Example:
        >>> parser = Parser(prog="demo")
        >>> _ = parser.add_argument("--output")
        >>> parser.parse(["--output", "x"]).output
        'x'
    """

    def error(self, message: str) -> NoReturn:
        found = _INVALID_CHOICE.search(message)
        if found is not None:
            choices = [c.strip().strip("'") for c in found.group(2).split(",")]
            message += suggestion(found.group(1), choices)
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """``parse_args``, but an unknown flag is reported by the (sub)command it was
        given to, with its usage and the closest flag it has."""
        args, extras = self.parse_known_args(argv)
        if extras:
            target = self.chosen(args)
            flags = [option for action in target._actions for option in action.option_strings]
            hints = "".join(
                suggestion(extra.split("=", 1)[0], flags)
                for extra in extras
                if extra.startswith("-")
            )
            target.error(f"unrecognized arguments: {' '.join(extras)}{hints}")
        return args

    def chosen(self, args: argparse.Namespace) -> argparse.ArgumentParser:
        """The subcommand's parser ``args`` came through (else this one)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                command = getattr(args, action.dest, None)
                chosen = action.choices.get(command) if command else None
                if isinstance(chosen, argparse.ArgumentParser):
                    return chosen
        return self
