"""Every exception Pachyderm raises, under one base class.

Messages follow one rule: show the offending value with ``!r``, its type, and
what to do instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ActivationError",
    "CodecError",
    "EcosystemClosedError",
    "ExplorationError",
    "ForkedProcessError",
    "InitError",
    "InvalidActivationError",
    "InvalidAddressError",
    "InvalidArgumentError",
    "InvalidIdError",
    "MessageTooLargeError",
    "OutcomeUnknownError",
    "PachydermError",
    "PartitionLostError",
    "RegistrationError",
    "RemoteActivationFailure",
    "StoreAccessError",
    "StoreCorruptedError",
    "StoreLockedError",
    "TimerOrderWarning",
    "UnknownDeadLetterError",
    "UnregisteredNameError",
    "UnstableNameWarning",
    "UpgradeError",
    "WaitingForClassError",
]


def safe_repr(value: Any) -> str:
    """``repr(value)``, or what can be said of it where that raises: an int too long for
    Python's limit on int-to-text conversion (4,300 digits), or a ``__repr__`` that fails.
    Error messages and reprs show ids and messages from anywhere; one must not turn a
    refusal into a crash."""
    try:
        return repr(value)
    except Exception as error:
        if isinstance(value, int):
            return f"<an int of {value.bit_length():,} bits>"
        return f"<{type(value).__qualname__} whose repr raised {exception_text(error)}>"


def shown(value: Any, most: int = 200) -> str:
    """``value`` as an error message shows it: its repr, cut to ``most`` characters."""
    text = safe_repr(value)
    if len(text) > most:
        return f"{text[:most]}... ({len(text) - most:,} more characters)"
    return text


def describe(value: Any) -> str:
    """Show a value and its type the way every error message here does."""
    text = shown(value)
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    # By sound, roughly: "an attack.model.L", but "a uuid.UUID", "a unittest.mock.Mock",
    # "a urllib.parse.ParseResult" (a "you" sound).
    vowel = kind[0] in "aeiouAEIOU" and not kind.lower().startswith(("uu", "uni", "us", "ur"))
    article = "an" if vowel else "a"
    return f"{text} ({article} {kind})"


def exception_text(error: BaseException) -> str:
    """``"Type: text"`` of an exception, always a str that can be stored and printed.

    The text is user code's: its ``str()`` may raise or return no str, and it may hold
    lone surrogates (text decoded with ``errors="surrogateescape"``, like a file name
    that is not UTF-8), which no store's encoding takes. A dead letter's error text
    once stopped the runtime so; it is shown instead with surrogates escaped.
    """
    try:
        text = str(error)
    except Exception as failure:
        try:
            reason = str(failure)
        except Exception:
            reason = "?"
        text = f"<str() failed: {type(failure).__name__}: {reason}>"
    return escape_surrogates(clipped(f"{type(error).__name__}: {text}"))


ERROR_TEXT_SHOWN = 10_000  # characters of an exception's text, or of a traceback, kept


def clipped(text: str, most: int = ERROR_TEXT_SHOWN) -> str:
    """``text`` if it is at most ``most`` characters; else its start and end, saying how
    much is left out between: an exception's text is user code's, and a dead letter
    keeps it (a 50 MB one made a 100 MB dead letter)."""
    if len(text) <= most:
        return text
    half = most // 2
    return f"{text[:half]}... ({len(text) - 2 * half:,} characters left out) ...{text[-half:]}"


def escape_surrogates(text: str) -> str:
    """``text`` with lone surrogates shown as escapes (``'\\udce9'``), so it can be stored."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class PachydermError(Exception):
    """Base class of every error Pachyderm raises on purpose."""


class CodecError(PachydermError, TypeError):
    """A value cannot be encoded, or bytes cannot be decoded."""


class UnregisteredNameError(CodecError):
    """Stored data names an entity class or value type this process has not registered."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        attribute = "former_names" if kind == "entity class" else "name"
        super().__init__(
            f"stored data names the {kind} {name!r}, which is not registered in this "
            f"process. Import the module that defines it; if it was renamed or moved, "
            f"list the old name on the new class: {attribute} = ({name!r},)"
            if kind == "entity class"
            else f"stored data names the {kind} {name!r}, which is not registered in "
            f"this process. Import the module that defines it, or register the type "
            f"under that name with @register_value(name={name!r})."
        )


class InvalidArgumentError(PachydermError, ValueError):
    """An argument to a Pachyderm function is not one it accepts; the message says which."""


class InvalidIdError(PachydermError, TypeError):
    """An entity id is not a str, int, bytes, or a tuple of those, or holds unstorable text."""


class RegistrationError(PachydermError):
    """An entity class or value type cannot be registered as asked."""


class InvalidActivationError(PachydermError):
    """``activate`` returned something other than ``(outbox, new_state)`` with storable parts."""


class MessageTooLargeError(PachydermError):
    """An encoded message is larger than the ecosystem accepts."""

    def __init__(
        self, size: int, limit: int, what: str = "message", remedy: str | None = None
    ) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the encoded {what} is {size:,} bytes, over the limit of {limit:,} bytes. "
            + (
                remedy
                or "Send a reference to the data instead (a key or path), or open the "
                "ecosystem with a larger max_message_bytes."
            )
        )


class UpgradeError(PachydermError):
    """Stored state was written by another version of an entity class and cannot be upgraded."""


class ActivationError(PachydermError):
    """An activation failed; the entity kept its previous state and the message is a dead letter.

    Attributes:
        address: the entity whose activation failed.
        message: the message it was given.
        cause: the exception ``activate`` raised (also ``__cause__``), or the
            :class:`InvalidActivationError` describing what it returned.
        recent_messages: the last messages that entity received, oldest first,
            ending with ``message``.
        dead_letter_id: where the message now waits in the dead-letter store.
    """

    def __init__(
        self,
        address: Any,
        message: Any,
        cause: BaseException,
        recent_messages: Sequence[Any] = (),
        dead_letter_id: int | None = None,
    ) -> None:
        self.address = address
        self.message = message
        self.cause = cause
        self.recent_messages = list(recent_messages)
        self.dead_letter_id = dead_letter_id
        super().__init__(address, message, cause)
        self.__cause__ = cause

    def __str__(self) -> str:
        lines = [
            f"{self.address!r} failed on {shown(self.message)}: {exception_text(self.cause)}",
            "the entity kept its previous state; the message is dead letter "
            f"{self.dead_letter_id} (list with dead_letters(), retry with redeliver()).",
        ]
        if self.recent_messages:
            lines.append("recent messages, oldest first:")
            lines.extend(f"  {shown(m)}" for m in self.recent_messages)
        return "\n".join(lines)


class StoreLockedError(PachydermError):
    """Another process (or another open ecosystem here) already owns a LevelDB directory."""


class StoreCorruptedError(PachydermError):
    """A store directory cannot be read as a Pachyderm store."""


class UnknownDeadLetterError(PachydermError, KeyError):
    """No dead letter has the given id."""


class EcosystemClosedError(PachydermError):
    """An ecosystem was used after it was closed."""


class InvalidAddressError(PachydermError, TypeError):
    """Something that is not an entity address was used as one."""


class ExplorationError(PachydermError):
    """An activation raised while the simulation explored an execution.

    Attributes:
        address: the entity whose activation raised.
        message: the message it was given.
        cause: the exception (also ``__cause__``).
        trace: the deliveries from the initial world up to and including this one.
        received: every message that entity received on that path, in order.
    """

    def __init__(
        self,
        address: Any,
        message: Any,
        cause: BaseException,
        trace: Sequence[Any],
        received: Sequence[Any],
    ) -> None:
        self.address = address
        self.message = message
        self.cause = cause
        self.trace = list(trace)
        self.received = list(received)
        super().__init__(address, message, cause)
        self.__cause__ = cause

    def __str__(self) -> str:
        lines = [
            f"{self.address!r} raised on {shown(self.message)}: {type(self.cause).__name__}: "
            f"{self.cause}",
            "trace from the initial world:",
            *(f"  {step}. {delivery}" for step, delivery in enumerate(self.trace, 1)),
            f"messages {self.address!r} received on this path, in order:",
            *(f"  {shown(message)}" for message in self.received),
        ]
        return "\n".join(lines)


class InitError(PachydermError):
    """An entity's ``init()`` raised, or returned a state that cannot be stored."""


class TimerOrderWarning(UserWarning):
    """An exploration may not have tried every order in which an entity's timers fire.

    Virtual time moves only when a timer fires, so each message is taken as
    coming as early as it could. When a message sets a timer for less time than
    one its entity holds from an earlier message, live either can fire first,
    depending on when the message came, and the search takes the order its
    times give. The result says how often, and the first time
    (``timer_gaps``, ``timer_gap``).
    """


class UnstableNameWarning(UserWarning):
    """A class registered under a name that will not be the same in another run.

    Classes defined in a script run as ``__main__`` (or typed into a REPL)
    get a default name starting ``__main__.``; imported from their module
    later, they are another name, and their stored data seems gone.
    """


class ForkedProcessError(EcosystemClosedError):
    """An ecosystem opened in a parent process was used in a child forked from it.

    Nothing was written: the store is the parent's, and only the parent uses it.
    """


class StoreAccessError(PachydermError):
    """The operating system refused the store's files: permissions, a read-only or full
    file system, or a directory deleted while open."""


class PartitionLostError(PachydermError):
    """A Postgres worker lost a partition's lease to another worker (it was paused or cut
    off past the lease): its group was not written, and it stops; open it again to rejoin."""


class RemoteActivationFailure(PachydermError):
    """The cause of an :class:`ActivationError` raised in another process: its text is
    what that process saw (the exception itself stayed there)."""


class OutcomeUnknownError(PachydermError):
    """A message was accepted, but the ecosystem closed before saying what became of it.

    Unlike :class:`EcosystemClosedError` (refused: nothing happened, safe to
    send again), the message may have been applied, or will be: a store that
    keeps its inboxes (LocalDisk) applies an accepted message when it is next
    opened. Sending it again may apply it twice; read ``state_of`` after
    reopening (and ``settle``) to see its effect. Deliberately not a subclass
    of :class:`EcosystemClosedError`, so that code retrying on that one does
    not catch this one by accident.
    """


class WaitingForClassError(PachydermError):
    """A message was accepted but waits: its entity's data names a class not registered here.

    The message is kept, untouched, in the entity's durable inbox, and is
    applied once the class is registered (its module imported). Sending it
    again would apply it twice.

    Attributes:
        address: the entity the message waits for.
        name: the stored name of the entity class or value type it needs.
    """

    def __init__(self, address: Any, missing: UnregisteredNameError) -> None:
        self.address = address
        self.name = missing.name
        super().__init__(
            f"{address!r} cannot run this message yet: {missing} The message was accepted: "
            f"it waits, untouched, in the entity's inbox and is applied once "
            f"{missing.name!r} is registered. Do not send it again (it would be applied twice)."
        )
        self.__cause__ = missing
