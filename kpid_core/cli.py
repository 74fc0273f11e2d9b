"""Command-line plumbing shared by the project's CLIs (engine, trial, sweep, report): no torch import."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["ArgumentParser", "DefaultsHelpFormatter", "YamlFileError", "read_yaml", "whole_at_least",
           "yaml_error_line"]


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


def whole_at_least(text: str, low: int = 1, what: str = "a whole number") -> int:
    """The body of an argparse ``type=``: ``text`` as an int >= ``low``.

    Args:
        text: the option's value as typed.
        low: the smallest value allowed.
        what: how the message names the value (e.g. "a whole number of pixels").

    Returns:
        The int.

    Raises:
        argparse.ArgumentTypeError: not an int, or below ``low`` (argparse turns it into one line).
    """
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {what} >= {low}") from None
    if n < low:
        raise argparse.ArgumentTypeError(f"invalid value {n}: expected {what} >= {low}")
    return n


def yaml_error_line(exc: Exception) -> str:
    """PyYAML's multi-line message as one line: ``line L, column C: problem``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"


class YamlFileError(Exception):
    """A YAML file that cannot be read; the message is one phrase to follow the file's name."""


def read_yaml(path: str | os.PathLike) -> Any:
    """The YAML document in ``path`` (None for an empty file): the one reader of the project's
    config, sweep and saved sweep files, so that each says the same about a bad file.

    Args:
        path: the file.

    Returns:
        The parsed document.

    Raises:
        YamlFileError: "does not exist", "is a directory; expected a YAML file", "is not a text file
            (not UTF-8)", "cannot be read (<why>)" or "is not valid YAML: line L, column C: <problem>"
            (a value YAML parses but cannot build, such as the date 2020-13-45, included).
    """
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise YamlFileError("does not exist") from None
    except IsADirectoryError:
        raise YamlFileError("is a directory; expected a YAML file") from None
    except UnicodeDecodeError:
        raise YamlFileError("is not a text file (not UTF-8)") from None
    except OSError as exc:
        raise YamlFileError(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (yaml.YAMLError, ValueError) as exc:
        raise YamlFileError(f"is not valid YAML: {yaml_error_line(exc) if isinstance(exc, yaml.YAMLError) else exc}"
                            ) from None
