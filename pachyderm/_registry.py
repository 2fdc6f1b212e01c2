"""Stable names for the classes stored data may mention.

Stored bytes name entity classes and value types by a stable string, never by
an import path to follow: decoding only ever looks names up here.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

from pachyderm._arguments import storable_text
from pachyderm.errors import RegistrationError, UnregisteredNameError, UnstableNameWarning

T = TypeVar("T")


class Registry(Generic[T]):
    """A thread-safe map from stable names (and former names) to classes."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_name: dict[str, type[T]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[tuple[str, ...], bool], None]] = []

    def add(self, cls: type[T], name: str, former_names: tuple[str, ...] = ()) -> None:
        """Register ``cls`` under ``name`` and its former names.

        Defining a class again (same module and qualname: a REPL, a reloaded
        module) replaces the old definition, and the names only the old one
        had are dropped; any *other* class claiming a name already taken is
        refused, naming both classes.

        Raises:
            RegistrationError: a name is not a non-empty str, or is taken.
        """
        for candidate in (name, *former_names):
            if not isinstance(candidate, str) or not candidate or not storable_text(candidate):
                raise RegistrationError(
                    f"{self.kind} names must be non-empty str that can be stored (UTF-8), "
                    f"got {candidate!r} (a {type(candidate).__name__}) on {_full_name(cls)}"
                )
        with self._lock:
            replaced: set[type[T]] = set()
            for candidate in (name, *former_names):
                existing = self._by_name.get(candidate)
                if existing is None or existing is cls:
                    continue
                if _full_name(existing) != _full_name(cls):
                    raise RegistrationError(
                        f"{self.kind} name {candidate!r} is already used by "
                        f"{_full_name(existing)}, so {_full_name(cls)} cannot use it too: "
                        f"stored data would run one class's code for the other's. "
                        f"Give {_full_name(cls)} its own name ("
                        + (
                            "entity_name = '...' in its class body"
                            if self.kind == "entity class"
                            else "@register_value(name='...')"
                        )
                        + "), or rename one of them."
                    )
                replaced.add(existing)
            if replaced:  # a redefinition: forget the names only the old definition had
                for stale in [n for n, c in self._by_name.items() if c in replaced]:
                    del self._by_name[stale]
            for candidate in (name, *former_names):
                self._by_name[candidate] = cls
            listeners = list(self._listeners)
        for listener in listeners:
            listener((name, *former_names), bool(replaced))

    def resolve(self, name: str) -> type[T]:
        """The class registered under ``name``; :class:`UnregisteredNameError` if none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnregisteredNameError(name, self.kind) from None

    def get(self, name: str) -> type[T] | None:
        """The class registered under ``name``, or None."""
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def subscribe(self, listener: Callable[[tuple[str, ...], bool], None]) -> Callable[[], None]:
        """Call ``listener(names, replaced)`` after each registration.

        ``names``: the class's name and former names; ``replaced``: whether it
        replaced an earlier definition. Returns an unsubscribe function.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe


def _full_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_PACKAGE = os.path.dirname(__file__) + os.sep


def warn_if_unstable(cls: type, name: str, how: str) -> None:
    """Warn when ``cls`` gets a default name from ``__main__``: another run names it otherwise.

    ``how``: the way to give it a stable name, shown in the warning.
    """
    if not name.startswith("__main__."):
        return
    # Point at the user's class statement or decorator, past this package's frames.
    frame = sys._getframe(0)
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(
        f"{cls.__qualname__} is defined in __main__ (a script run directly, or a REPL), "
        f"so stored data names it {name!r}; imported from its module in another run it "
        f"is another name, and what it stored seems gone. Give it a stable name: "
        f"{how.format(qualname=cls.__qualname__)}",
        UnstableNameWarning,
        stacklevel=level,
    )
