"""User value types that messages and states may hold, registered by stable name."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pachyderm._registry import Registry, warn_if_unstable
from pachyderm.errors import RegistrationError

__all__ = ["ValueKind", "register_value", "value_kind", "value_types"]

T = TypeVar("T", bound=type)

value_types: Registry[Any] = Registry("value type")


class ValueKind(enum.Enum):
    """How a registered value type is taken apart and rebuilt."""

    DATACLASS = "dataclass"
    ENUM = "enum"
    NAMEDTUPLE = "namedtuple"


def value_kind(cls: type) -> ValueKind:
    """The kind of a value type, or :class:`RegistrationError` if it cannot be stored."""
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return ValueKind.ENUM
    if isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return ValueKind.NAMEDTUPLE
    if dataclasses.is_dataclass(cls):
        params = cls.__dataclass_params__  # type: ignore[attr-defined]
        if not params.frozen:
            raise RegistrationError(
                f"{cls.__qualname__} is a dataclass that is not frozen; messages and "
                f"states must not change after they are sent. Declare it with "
                f"@dataclass(frozen=True)."
            )
        if any(not f.init for f in dataclasses.fields(cls)):
            raise RegistrationError(
                f"{cls.__qualname__} has fields with init=False; every field must be "
                f"a constructor argument so the value can be rebuilt when read back"
            )
        return ValueKind.DATACLASS
    raise RegistrationError(
        f"{cls!r} cannot be registered as a value type: register a frozen dataclass, "
        f"an enum, or a named tuple"
    )


@overload
def register_value(cls: T, /) -> T: ...
@overload
def register_value(*, name: str | None = None) -> Callable[[T], T]: ...
def register_value(cls: T | None = None, /, *, name: str | None = None) -> T | Callable[[T], T]:
    """Let a frozen dataclass, enum or named tuple travel in messages and states.

    Use as ``@register_value`` or ``@register_value(name="shop.Order")``; the
    name (default ``module.qualname``) is what stored data records, so set it
    before moving or renaming the class.
    """

    def register(cls: T) -> T:
        kind = value_kind(cls)
        stable = name
        if not stable:
            stable = f"{cls.__module__}.{cls.__qualname__}"
            warn_if_unstable(cls, stable, "@register_value(name='yourapp.{qualname}')")
        cls._pachyderm_name = stable  # type: ignore[attr-defined]
        cls._pachyderm_kind = kind  # type: ignore[attr-defined]
        value_types.add(cls, stable)
        return cls

    if cls is None:
        return register
    return register(cls)
