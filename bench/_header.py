"""The head of every BENCHMARKS.*.md file: title, date, machine, torch, and the command that
produced the figures, so that a number can always be traced to how it was measured."""

from __future__ import annotations

import datetime
import os
import platform

__all__ = ["command_line", "emit", "header_lines", "machine"]


def machine(device: str = "CPU only", shared: bool = True) -> str:
    """The machine in one phrase.

    Args:
        device: what ran the model (``"CPU only"``, ``"device cuda"``, a GPU name).
        shared: whether other jobs ran on the same CPUs (say so: timings depend on it).

    Returns:
        e.g. ``"x86_64, 2 CPUs (shared), torch 2.13.0, CPU only"``.
    """
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPUs{' (shared)' if shared else ''}, "
            f"torch {torch.__version__}, {device}")


def command_line(script: str, argv: list[str]) -> str:
    """``python bench/SCRIPT ARGS`` as one string.

    Args:
        script: the script's path from the repository root, e.g. ``"bench/budget.py"``.
        argv: its arguments.

    Returns:
        The command, stripped of trailing blanks.
    """
    return " ".join(["python", script, *argv]).strip()


def header_lines(title: str, command: str, *, device: str = "CPU only", notes: list[str] = ()) -> list[str]:
    """The markdown head of a benchmark file.

    Args:
        title: the heading, without ``#``.
        command: the command that produced the figures (:func:`command_line`).
        device: as for :func:`machine`.
        notes: more bullet lines (the setting, what a cell means), without the leading ``- ``.

    Returns:
        Lines ending with an empty one, ready to be joined with newlines.
    """
    return [f"# {title}", "", f"- Date: {datetime.date.today()}; machine: {machine(device)}",
            f"- Command: `{command}`", *(f"- {n}" for n in notes), ""]


def emit(lines: list[str], md: str | None) -> None:
    """Print a benchmark's markdown, and write it to ``md`` too when given.

    Args:
        lines: the markdown lines.
        md: the ``--md`` file, or None.
    """
    print("\n".join(lines))
    if md:
        with open(md, "w") as f:
            f.write("\n".join(lines) + "\n")
