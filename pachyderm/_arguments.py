"""Checks shared by the verbs: text that can be stored, and timeouts."""

from __future__ import annotations

import math
import threading

from pachyderm.errors import InvalidArgumentError, describe

__all__ = ["MAX_NAME_BYTES", "check_timeout", "storable_name", "storable_text"]

MAX_NAME_BYTES = 256
"""The longest ecosystem id or timer name, in UTF-8 bytes. On Postgres both are parts of
index keys beside an entity's address (up to 2,048 bytes), and an index entry holds about
2,700 bytes: a longer one made the group's write fail and stopped the worker (and every
worker that ran the message after it). LocalDisk's keys give an ecosystem id 64 kB at
most. The same limit on every kind, so a test on one says what the others do."""


def storable_text(text: str) -> bool:
    """Whether ``text`` can be stored: UTF-8 encodable, so no lone surrogate like ``'\\ud800'``."""
    if text.isascii():  # O(1) in CPython: a flag of the string
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_name(text: str) -> bool:
    """Whether ``text`` can be stored as a name: storable, at most :data:`MAX_NAME_BYTES`
    in UTF-8, and without NUL (``'\\x00'``), which PostgreSQL's text columns refuse
    (ecosystem ids and timer names go there)."""
    if len(text) > MAX_NAME_BYTES or "\x00" in text or not storable_text(text):
        return False
    return text.isascii() or len(text.encode()) <= MAX_NAME_BYTES


def check_timeout(timeout: object) -> float | None:
    """``timeout`` if it is None or a finite number of seconds >= 0.

    Raises:
        InvalidArgumentError: naming the value (NaN would otherwise wait forever).
    """
    if timeout is None:
        return None
    if (type(timeout) is int or type(timeout) is float) and 0 <= timeout < math.inf:
        if timeout > threading.TIMEOUT_MAX:  # centuries: more than a lock waits (OverflowError)
            return None
        return float(timeout)
    raise InvalidArgumentError(
        f"timeout must be None (wait as long as it takes) or a finite number of seconds "
        f">= 0, got {describe(timeout)}"
    )
