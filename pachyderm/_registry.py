"""Stable names for the classes stored data may mention.

Stored bytes name entity classes and value types by a stable string, never by
an import path to follow: decoding only ever looks names up here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from pachyderm.errors import RegistrationError, UnregisteredNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A thread-safe map from stable names (and former names) to classes."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_name: dict[str, type[T]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    def add(self, cls: type[T], name: str, former_names: tuple[str, ...] = ()) -> None:
        """Register ``cls`` under ``name`` and its former names.

        Defining a class again under the same name (a REPL, a reloaded module)
        replaces the old definition; a *different* class claiming a name
        already taken by a class of another name is refused.
        """
        for candidate in (name, *former_names):
            if not isinstance(candidate, str) or not candidate:
                raise RegistrationError(
                    f"{self.kind} names must be non-empty str, got {candidate!r} "
                    f"(a {type(candidate).__name__}) on {cls.__qualname__}"
                )
        with self._lock:
            for candidate in (name, *former_names):
                existing = self._by_name.get(candidate)
                if existing is not None and _stable_name(existing) != name:
                    raise RegistrationError(
                        f"{self.kind} name {candidate!r} is already used by "
                        f"{existing.__module__}.{existing.__qualname__}; give "
                        f"{cls.__module__}.{cls.__qualname__} another name"
                    )
            for candidate in (name, *former_names):
                self._by_name[candidate] = cls
            listeners = list(self._listeners)
        for listener in listeners:
            for candidate in (name, *former_names):
                listener(candidate)

    def resolve(self, name: str) -> type[T]:
        """The class registered under ``name``; :class:`UnregisteredNameError` if none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnregisteredNameError(name, self.kind) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(name)`` after each registration; returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe


def _stable_name(cls: type) -> str | None:
    return getattr(cls, "_pachyderm_name", None)
