"""Command-line plumbing shared by the project's CLIs (engine, trial, sweep, report): no torch import."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["ArgumentParser", "DefaultsHelpFormatter", "yaml_error_line"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error contract: bad arguments print one line ``error: ...`` (naming
    the option, with a pointer to ``--help``) and exit with code 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help only where it tells something: not for a default
    of None or False (the help says what happens then) nor where the help already names its default
    (argparse's ArgumentDefaultsHelpFormatter printed "default: the bundled ... (default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)"


def yaml_error_line(exc: Exception) -> str:
    """PyYAML's multi-line message as one line: ``line L, column C: problem``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"
