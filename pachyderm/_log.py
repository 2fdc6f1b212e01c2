"""Structured events through structlog, silent unless the application configured structlog.

A library must not print into its users' terminals uninvited: Pachyderm emits
its events (activations at debug, failures at warning, recovery at info) only
once the application has called ``structlog.configure`` (or inside
``structlog.testing.capture_logs``).
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["log", "logging_enabled"]

logging_enabled = structlog.is_configured
"""Check before building the fields of a frequent event (one per activation)."""

_logger = structlog.get_logger("pachyderm")


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Emit ``event`` with ``fields`` if the application has configured structlog."""
    if structlog.is_configured():
        getattr(_logger, level)(event, **fields)
