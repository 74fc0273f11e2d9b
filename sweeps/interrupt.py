"""Stopping a sweep on the first Ctrl-C (SIGINT) or SIGTERM, in whatever phase it is.

Outside the trials the signal raises ``KeyboardInterrupt`` at once (Python's own behaviour for
SIGINT, extended to SIGTERM so that ``finally`` blocks run: Ray is shut down, whole-file writes leave
the old file or none). While ``Tuner.fit`` runs, Tune has its own SIGINT handler that ends the run
gracefully, saving its experiment state with the interrupted trials still unfinished (so ``--resume``
continues them): SIGTERM is routed to that handler too. Tune returns from ``fit`` normally after such
a stop; :meth:`StopGuard.fit_was_interrupted` tells the caller, which then stops instead of going on
to the baselines and the report as if the sweep had finished.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is Python 3.11+
    from typing_extensions import Self

__all__ = ["SIGNALS", "StopGuard", "SweepInterrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(Exception):
    """The sweep stopped on a signal; ``str()`` is the one line telling the user how to go on.

    Args:
        message: that line.
    """


class StopGuard:
    """Context manager turning the first SIGINT/SIGTERM into a prompt, clean stop (see the module).

    Handlers are installed only in the main thread (Python allows no other); elsewhere the guard does
    nothing and Ctrl-C behaves as Python and Tune make it.

    Attributes:
        signum: the first signal received by this guard's handler, or None.
        phase: what the sweep is doing (set by the caller; named in the message).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.phase = "starting"
        self._old: dict[int, Any] = {}
        self._in_fit = False

        def on_signal(signum: int, frame: Any) -> None:
            first = self.signum is None
            self.signum = self.signum or signum
            tune_handler = signal.getsignal(signal.SIGINT)
            if self._in_fit and first and callable(tune_handler) and tune_handler != on_signal:
                # SIGTERM while Tune runs: Tune's graceful stop, exactly as its SIGINT gets
                tune_handler(signal.SIGINT, frame)
                return
            raise KeyboardInterrupt

        self._handler: Callable[[int, Any], None] = on_signal

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.getsignal(s)
            self.reinstall()
        return self

    def reinstall(self) -> None:
        """Put this guard's handlers back: ``ray.init`` installs a SIGTERM handler of its own (it exits
        with code 15, skipping the stop and its message). Call it after connecting to Ray."""
        for s in self._old:
            signal.signal(s, self._handler)

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()

    def run_fit(self, fit: Callable[[], Any]) -> Any:
        """Call ``fit()`` (``Tuner.fit``) with SIGTERM routed to Tune's graceful stop; afterwards put
        this guard's SIGINT handler back (Tune leaves its own installed after a normal run, where a
        first Ctrl-C would then be swallowed).

        Args:
            fit: the call that runs the trials.

        Returns:
            What ``fit()`` returned.
        """
        self._in_fit = True
        try:
            return fit()
        finally:
            self._in_fit = False
            if self._old:
                signal.signal(signal.SIGINT, self._handler)

    def fit_was_interrupted(self, grid: Any, expected: int) -> bool:
        """Whether the trials phase ended on a signal rather than with every trial done.

        Args:
            grid: the ``ray.tune.ResultGrid`` that ``fit`` returned.
            expected: how many trials the sweep has.

        Returns:
            True when a signal reached this guard, or when Tune returned with trials missing or
            unfinished (its own SIGINT handler stopped it: Tune then returns normally).
        """
        if self.signum is not None:
            return True
        return len(grid) < expected or grid.num_terminated + grid.num_errors < len(grid)
