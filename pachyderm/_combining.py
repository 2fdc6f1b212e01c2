"""A lock for many threads: flat combining, so that callers do not queue up on it.

When many threads each take a lock in turn for a short piece of work, every
hand-over puts one thread to sleep and wakes another: a context switch per
caller, which costs more than the work (about 50 us on the machines measured
here). With flat combining a caller *submits* its request to a queue and only
tries the lock; whoever holds the lock processes every submitted request
before releasing it. A caller then sleeps at most once, waiting for its own
result, however many threads compete.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["CombiningLock"]

RequestT = TypeVar("RequestT")


class CombiningLock(Generic[RequestT]):
    """A mutex (``with lock:``) that also processes submitted requests while held.

    ``process`` is called with the lock held and the queue of requests: it
    takes them from the left, in submission order, and processes each, until
    the queue is empty (requests submitted meanwhile included). It must not
    raise (it answers each request instead). It may be called from whichever
    thread holds the lock when requests are there. Handing it the whole queue
    lets it do once what a run of requests needs, not once per request.
    """

    def __init__(self, process: Callable[[deque[RequestT]], None]) -> None:
        self._lock = threading.Lock()
        self._process = process
        # The queue: appending to it is :meth:`post` without the call (a hot path may).
        self.requests: deque[RequestT] = deque()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._drain_and_release()
        self.combine()  # what was submitted just as we released, by a caller whose try failed

    def _drain_and_release(self) -> None:
        requests = self.requests
        process = self._process
        try:
            while requests:
                process(requests)
        finally:  # whatever happens (a signal's handler raising, say), the lock is free after
            self._lock.release()

    @property
    def queued(self) -> int:
        """How many requests wait to be processed."""
        return len(self.requests)

    def acquire(self, timeout: float) -> bool:
        """Take the lock if it can be had within ``timeout`` seconds; release with ``__exit__``."""
        return self._lock.acquire(timeout=timeout)

    def post(self, request: RequestT) -> int:
        """Queue a request without trying the lock; returns how many now wait.

        Someone must :meth:`combine` (or take the lock) for it to be processed.
        """
        requests = self.requests
        requests.append(request)
        return len(requests)

    def submit(self, request: RequestT) -> None:
        """Queue a request and process the queue if the lock is free; never blocks on it."""
        requests = self.requests
        requests.append(request)
        lock = self._lock
        while requests and lock.acquire(blocking=False):  # combine(), inlined: every call
            self._drain_and_release()

    def combine(self) -> None:
        """Process the queued requests if the lock can be had without waiting.

        A request queued while another thread holds the lock is processed by
        that thread before it releases it, or right after, by this check.
        """
        requests = self.requests
        lock = self._lock
        while requests and lock.acquire(blocking=False):
            self._drain_and_release()
