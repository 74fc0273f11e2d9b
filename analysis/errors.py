"""Typed errors of the analysis package.

:class:`AnalysisError` derives from :class:`kpid_core.errors.KPIDError`, so every command-line entry
point in the project treats it alike: one ``error: ...`` line, exit code 2, no traceback.
"""

from __future__ import annotations

from kpid_core.errors import KPIDError

__all__ = ["AnalysisError"]


class AnalysisError(KPIDError, ValueError):
    """The input is not a usable sweep result (missing files or columns, no finished trial, ...)."""
