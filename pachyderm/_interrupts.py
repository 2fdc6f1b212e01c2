"""Ctrl-C safety for runtime work done in a caller's own thread.

The shell face does an activation and a commit in the caller's thread. Python
raises KeyboardInterrupt only in the main thread, but there at any bytecode:
halfway through, it would leave a message accepted and never scheduled. As in
trio's ``_core/_ki.py``, the interrupt is *deferred* instead: inside
``with deferred_interrupts():`` a SIGINT is recorded and handed to the
previous handler (which raises KeyboardInterrupt) once the block is done and
the runtime consistent. Inside a handler (``activate``, ``init``,
``upgrade``: user code, which may loop forever) it is delivered at once; the
activation then fails like any other, its message becomes a dead letter, and
the caller still gets its KeyboardInterrupt at the end of the block.
"""

from __future__ import annotations

import _signal  # the C module: its getsignal is 150x cheaper than signal.getsignal
import contextlib
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from pachyderm._step import inside_user_code

__all__ = ["deferred_interrupts"]

_MAIN_THREAD = threading.main_thread().ident
_SIGINT = signal.SIGINT
_OTHER_THREADS = contextlib.nullcontext()  # only the main thread ever gets KeyboardInterrupt


class _Deferral:
    """Swaps in a deferring SIGINT handler for the block, then delivers what it held back."""

    __slots__ = ("pending", "previous", "raised")

    def __enter__(self) -> None:
        self.previous: Any = _signal.getsignal(_SIGINT)
        self.pending: FrameType | bool | None = False
        self.raised: BaseException | None = None
        # SIG_IGN, or SIG_DFL (the process dies at once, like kill -9): nothing to defer.
        if callable(self.previous):
            _signal.signal(_SIGINT, self._defer)

    def _defer(self, signum: int, frame: FrameType | None) -> None:
        if not inside_user_code(frame):
            self.pending = frame if frame is not None else True
            return
        try:
            self.previous(signum, frame)  # a looping handler must stay interruptible
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
        if not callable(previous):
            return
        _signal.signal(_SIGINT, previous)
        if self.pending is not False:
            frame = self.pending if isinstance(self.pending, FrameType) else None
            previous(_SIGINT, frame)
        elif self.raised is not None:
            raise self.raised


def deferred_interrupts() -> contextlib.AbstractContextManager[None]:
    """Hold back Ctrl-C until the block is done (main thread only; free elsewhere)."""
    if threading.get_ident() != _MAIN_THREAD:
        return _OTHER_THREADS
    return _Deferral()
