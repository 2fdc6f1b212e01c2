"""Signal safety for runtime work done in a caller's own thread.

The shell face does runtime work in the caller's thread: activations, its own
and (through the combining lock) other threads', and commits. Python runs a
signal's handler only in the main thread, but there at any bytecode, and
Ctrl-C's handler raises KeyboardInterrupt (a server's SIGTERM handler often
raises SystemExit): halfway through, that would leave a message accepted and
never scheduled. As in trio's ``_core/_ki.py``, signals are *deferred*
instead: inside ``with deferred_interrupts():`` a signal whose handler is a
Python function is recorded and handed to that handler once the block is done
and the runtime consistent. Inside the caller's own handler (``activate``,
``init``, ``upgrade``: user code, which may loop forever) it is delivered at
once; that activation then fails like any other, its message becomes a dead
letter, and the caller still gets the exception at the end of the block.
Never inside a handler this thread runs for another thread's call: that
caller did not press Ctrl-C.
"""

from __future__ import annotations

import _signal  # the C module: its getsignal is 150x cheaper than signal.getsignal
import contextlib
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from pachyderm._step import inside_own_handler

__all__ = ["DEFERRED_SIGNALS", "deferred_interrupts"]

_MAIN_THREAD = threading.main_thread().ident
_OTHER_THREADS = contextlib.nullcontext()  # signal handlers only ever run in the main thread

DEFERRED_SIGNALS = tuple(
    number
    for number in (
        signal.SIGINT,
        getattr(signal, "SIGTERM", None),
        getattr(signal, "SIGHUP", None),
        getattr(signal, "SIGQUIT", None),
        getattr(signal, "SIGUSR1", None),
        getattr(signal, "SIGUSR2", None),
        getattr(signal, "SIGALRM", None),
    )
    if number is not None
)
"""The signals held back while the runtime works, when their handler is Python code."""


class _Deferral:
    """Swaps in a deferring handler for each signal handled in Python; delivers after."""

    __slots__ = ("pending", "previous", "raised")

    def __enter__(self) -> None:
        previous: dict[int, Any] = {}
        for number in DEFERRED_SIGNALS:
            handler = _signal.getsignal(number)
            # SIG_IGN, or SIG_DFL (the process dies at once, like kill -9): nothing to defer.
            if callable(handler):
                previous[number] = handler
        self.previous = previous
        self.pending: list[tuple[int, FrameType | None]] = []
        self.raised: BaseException | None = None
        for number in previous:
            _signal.signal(number, self._defer)

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if not inside_own_handler(frame):
            self.pending.append((signum, frame))
            return
        try:
            self.previous[signum](signum, frame)  # a looping handler must stay interruptible
        except BaseException as error:
            self.raised = error  # the activation fails with it; the caller gets it after
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        previous = self.previous
        for number, handler in previous.items():
            _signal.signal(number, handler)
        for signum, frame in self.pending:
            previous[signum](signum, frame)  # what Ctrl-C (or the like) would have done
        if self.raised is not None:
            raise self.raised


def deferred_interrupts() -> contextlib.AbstractContextManager[None]:
    """Hold back signals handled in Python until the block is done (main thread only)."""
    if threading.get_ident() != _MAIN_THREAD:
        return _OTHER_THREADS
    return _Deferral()
