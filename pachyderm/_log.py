"""Structured events through structlog, silent unless the application configured structlog.

A library must not print into its users' terminals uninvited: Pachyderm emits
its events (activations at debug, failures at warning, recovery at info) only
once the application has called ``structlog.configure`` (or inside
``structlog.testing.capture_logs``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

from pachyderm.errors import safe_repr

__all__ = ["log", "logging_enabled"]

logging_enabled = structlog.is_configured
"""Check before building the fields of a frequent event (one per activation)."""

_logger = structlog.get_logger("pachyderm")


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Emit ``event`` with ``fields`` if the application has configured structlog.

    Never raises: fields hold users' values (a failed message, an address),
    which the application's renderer may not take (JSON and a dict with tuple
    keys, a ``__repr__`` that raises). Such an event goes out again with every
    field as text, or not at all; logging must not stop a store.
    """
    if not structlog.is_configured():
        return
    emit = getattr(_logger, level)
    try:
        emit(event, **fields)
    except Exception:
        with contextlib.suppress(Exception):
            emit(event, **{name: safe_repr(value) for name, value in fields.items()})
