"""User value types that messages and states may hold, registered by stable name."""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pachyderm._registry import Registry, warn_if_unstable
from pachyderm.errors import RegistrationError, describe

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
        stored = {f.name for f in dataclasses.fields(cls)}
        unstored = [
            parameter.name
            for parameter in inspect.signature(cls).parameters.values()
            if parameter.name not in stored and parameter.default is parameter.empty
        ]
        if unstored:
            raise RegistrationError(
                f"{cls.__qualname__}'s constructor needs {', '.join(unstored)}, which "
                f"{'is not a field' if len(unstored) == 1 else 'are not fields'} (an "
                f"InitVar): a value is rebuilt from its stored fields alone when read back. "
                f"Make {'it a field' if len(unstored) == 1 else 'them fields'}, or give "
                f"{'it' if len(unstored) == 1 else 'them'} a default"
            )
        return ValueKind.DATACLASS
    raise RegistrationError(
        f"{cls!r} cannot be registered as a value type: register a frozen dataclass, "
        f"an enum, or a named tuple"
    )


def field_names(cls: type) -> tuple[str, ...]:
    """The fields of a registered dataclass or named tuple, in declaration order."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return tuple(getattr(cls, "_fields", ()))


def required_fields(cls: type) -> tuple[str, ...]:
    """The fields of a value type that have no default."""
    if dataclasses.is_dataclass(cls):
        return tuple(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
    defaults = getattr(cls, "_field_defaults", {})
    return tuple(name for name in field_names(cls) if name not in defaults)


def _version(cls: type, fields: tuple[str, ...]) -> int:
    # A field named "version" is data, not the type's version (its class attribute
    # is the field's default): such a type stays at version 1.
    version = 1 if "version" in fields else getattr(cls, "version", 1)
    if type(version) is not int or version < 1:
        raise RegistrationError(
            f"{cls.__qualname__}.version must be an int >= 1, got {describe(version)}"
        )
    upgrade = getattr(cls, "upgrade", None)
    if upgrade is not None and not callable(upgrade):
        raise RegistrationError(
            f"{cls.__qualname__}.upgrade must be a staticmethod or classmethod "
            f"upgrade(fields, from_version) returning the fields, got {describe(upgrade)}"
        )
    return version


@overload
def register_value(cls: T, /) -> T: ...
@overload
def register_value(*, name: str | None = None) -> Callable[[T], T]: ...
def register_value(cls: T | None = None, /, *, name: str | None = None) -> T | Callable[[T], T]:
    """Let a frozen dataclass, enum or named tuple travel in messages and states.

    Use as ``@register_value`` or ``@register_value(name="shop.Order")``; the
    name (default ``module.qualname``) is what stored data records, so set it
    before moving or renaming the class.

    Dataclasses and named tuples are stored field by field, by name, with the
    type's ``version`` (a class attribute, default 1): reordering fields is
    safe, and a field added with a default reads old values with that default.
    For other changes, raise ``version`` and define ``upgrade``, a staticmethod
    or classmethod taking the stored fields (a dict, by name) and the version
    they were stored with, and returning the fields for today's class::

        @register_value
        @dataclass(frozen=True)
        class Deposit:
            account: str
            cents: int              # version 1 stored "amount" in euros

            version = 2

            @staticmethod
            def upgrade(fields: dict[str, Any], from_version: int) -> dict[str, Any]:
                return {"account": fields["account"], "cents": fields["amount"] * 100}
    """

    def register(cls: T) -> T:
        kind = value_kind(cls)
        stable = name
        if not stable:
            stable = f"{cls.__module__}.{cls.__qualname__}"
            warn_if_unstable(cls, stable, "@register_value(name='yourapp.{qualname}')")
        fields = field_names(cls)
        version = None if kind is ValueKind.ENUM else _version(cls, fields)  # enums: by value
        cls._pachyderm_version = version  # type: ignore[attr-defined]
        cls._pachyderm_fields = fields  # type: ignore[attr-defined]
        cls._pachyderm_name = stable  # type: ignore[attr-defined]
        cls._pachyderm_kind = kind  # type: ignore[attr-defined]
        value_types.add(cls, stable)
        return cls

    if cls is None:
        return register
    if isinstance(cls, str):  # @register_value("shop.Order"): the name given positionally
        raise RegistrationError(
            f"register_value takes the name as a keyword: @register_value(name={cls!r}), "
            f"got {describe(cls)} as the class to register"
        )
    return register(cls)
