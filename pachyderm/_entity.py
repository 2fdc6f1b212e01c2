"""``Entity``: a persistent actor, whose instances are its addresses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, TypeVar

from pachyderm._arguments import storable_text
from pachyderm._registry import Registry, warn_if_unstable
from pachyderm.errors import (
    InvalidAddressError,
    InvalidIdError,
    RegistrationError,
    UpgradeError,
    describe,
    safe_repr,
)

if TYPE_CHECKING:
    from pachyderm._commands import Outbox

__all__ = ["Entity", "EntityId", "entity_classes", "newest_address", "validate_id"]

MessageT = TypeVar("MessageT")
# Covariant: callers of the verbs only ever receive states, so an Entity[M, list[int]]
# may stand where an Entity[M, Sequence[int]] is expected (mypy would otherwise solve
# S from the surrounding call, as in sorted(send_sync(...)), and reject the address).
StateT = TypeVar("StateT", covariant=True)

EntityId = str | int | bytes | tuple[Any, ...]
"""What an entity id may be: str, int, bytes, or a tuple of those (nested freely)."""

entity_classes: Registry[Entity[Any, Any]] = Registry("entity class")


MAX_ID_DEPTH = 32
"""How deep tuples may nest in an id: ids are keys, and every key must decode."""


def validate_id(entity_id: object, depth: int = 1) -> None:
    """Raise :class:`InvalidIdError` unless ``entity_id`` is a valid entity id."""
    kind = type(entity_id)
    if kind is str:
        if not storable_text(entity_id):  # type: ignore[arg-type]
            raise _unstorable_id(entity_id)
        return
    if kind is int or kind is bytes:
        return
    if kind is tuple:
        if depth > MAX_ID_DEPTH:
            raise InvalidIdError(
                f"entity ids may nest tuples at most {MAX_ID_DEPTH} deep; this one nests "
                f"deeper (or contains itself). Use a flat tuple of the id's parts."
            )
        for part in entity_id:  # type: ignore[attr-defined]
            validate_id(part, depth + 1)
        return
    raise InvalidIdError(
        f"entity ids must be str, int, bytes, or tuples of those; got "
        f"{describe(entity_id)}. Convert it first, e.g. str(value) or a tuple of its parts."
    )


def _unstorable_id(entity_id: object) -> InvalidIdError:
    return InvalidIdError(
        f"entity ids must be text that can be stored (UTF-8), got {describe(entity_id)}, "
        f"which holds a lone surrogate; decode the text it came from properly, or use "
        f"bytes as the id"
    )


class Entity(Generic[MessageT, StateT]):
    """A persistent actor. Subclass it and write a pure ``activate``.

    An instance is only an address, the pair ``<class, id>``: immutable,
    hashable, equal to another iff same class and same id. The state lives in
    an ecosystem; ``activate`` receives it and returns the new one.

    Class attributes:
        entity_name: the stable name stored data uses for this class
            (default ``module.qualname``). Set it before moving or renaming a class.
        former_names: names this class was stored under before, for stored data
            naming it (addresses in messages and states). It moves no data: an
            entity whose state is stored under a former name is refused.
        version: the version of the state format (default 1). Stored state
            carries it; older state passes through :meth:`upgrade` when loaded.
    """

    __slots__ = ("_id",)

    _id: EntityId
    entity_name: ClassVar[str]
    former_names: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("entity_name")
        if name == "":
            raise RegistrationError(
                f"{cls.__qualname__}.entity_name is empty: give a stable name, like "
                f"entity_name = 'yourapp.{cls.__qualname__}', or leave it out for the "
                f"module and class name"
            )
        if name is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
            warn_if_unstable(cls, name, "entity_name = 'yourapp.{qualname}' in the class body")
        version = cls.version
        if type(version) is not int or version < 1:
            raise RegistrationError(
                f"{cls.__qualname__}.version must be an int >= 1, got {describe(version)}"
            )
        cls.entity_name = name
        cls._pachyderm_name = name  # type: ignore[attr-defined]
        former_names = cls.__dict__.get("former_names", ())
        if isinstance(former_names, str):
            raise RegistrationError(
                f"{cls.__qualname__}.former_names must be a tuple of names, got "
                f"{describe(former_names)}: write ({former_names!r},), with the comma"
            )
        entity_classes.add(cls, name, tuple(former_names))

    def __init__(self, id: EntityId) -> None:  # noqa: A002 - "id" is the documented name
        kind = type(id)
        if kind is str:
            if not id.isascii() and not storable_text(id):  # type: ignore[union-attr, arg-type]
                raise _unstorable_id(id)
        elif kind is not int and kind is not bytes:
            validate_id(id)
        if type(self) is Entity:
            raise InvalidAddressError(
                "Entity is abstract: subclass it and address the subclass, like Counter('c')"
            )
        _set_id(self, id)  # addresses refuse __setattr__; the slot's own setter is the way in

    @property
    def id(self) -> EntityId:
        """This entity's id."""
        return self._id

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(
            f"{self!r} is an address and cannot change; keep data in the state that "
            f"activate() returns"
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._id == self._id

    def __hash__(self) -> int:
        return hash((self.entity_name, self._id))

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({safe_repr(self._id)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._id,))

    def init(self) -> StateT:
        """The state of an entity that has never been activated (default ``None``)."""
        return None  # type: ignore[return-value]

    # The framework alone calls activate, with the state this very entity returned.
    def activate(self, message: MessageT, state: StateT) -> tuple[Outbox, StateT]:  # type: ignore[misc]
        """Handle one message: return ``(outbox, new_state)``. Must be pure."""
        raise NotImplementedError(f"{type(self).__qualname__} must define activate()")

    def upgrade(self, state: Any, from_version: int) -> StateT:
        """Turn state stored by ``from_version`` of this class into the current version's."""
        raise UpgradeError(
            f"{self!r} has state stored by version {from_version} but "
            f"{type(self).__qualname__}.version is {self.version}; define "
            f"upgrade(self, state, from_version) to convert it"
        )


_set_id = Entity.__dict__["_id"].__set__


def newest_address(address: Entity[Any, Any]) -> Entity[Any, Any]:
    """``address`` as an instance of the class now registered under its name.

    The same address unless its class was defined again since (a REPL, a
    reload): then the newest definition is the one that must run.
    """
    newest = entity_classes.get(address.entity_name)
    if newest is None or newest is type(address):
        return address
    return newest(address._id)
