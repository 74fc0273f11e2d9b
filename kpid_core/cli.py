"""Command-line plumbing shared by the project's CLIs (engine, trial, sweep, report): no torch import."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["ArgumentParser", "yaml_error_line"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error contract: bad arguments print one line ``error: ...`` (naming
    the option, with a pointer to ``--help``) and exit with code 2, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def yaml_error_line(exc: Exception) -> str:
    """PyYAML's multi-line message as one line: ``line L, column C: problem``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"
