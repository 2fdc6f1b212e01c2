"""After ``os.fork()``: a child must not use what its parent opened.

A forked child inherits the parent's open stores, but not the threads that
run them: used there, the child would write the parent's files beside the
parent (corruption, lost updates) or wait forever on a runtime thread it
does not have. So each thing that owns a store is *forsaken* in the child,
right after the fork: it refuses every use with
:class:`~pachyderm.errors.ForkedProcessError`, and lets go of the parent's
store without closing it. The hook only flips state that the verbs test
anyway, so nothing is added to their cost; it takes no lock, since a lock
may have been held by a thread the child does not have.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["Forsakable", "track"]


class Forsakable(Protocol):
    def forsake(self, parent: int) -> None:
        """Called in a child forked from this process: refuse all use, touch nothing shared."""
        ...


_tracked: weakref.WeakSet[Forsakable] = weakref.WeakSet()


def track(owner: Forsakable) -> None:
    """Forsake ``owner`` in every child forked from this process while it lives."""
    _tracked.add(owner)


def _after_fork_in_child() -> None:
    parent = os.getppid()
    for owner in list(_tracked):
        owner.forsake(parent)


os.register_at_fork(after_in_child=_after_fork_in_child)
