"""The one notion of "now" (UTC, millisecond precision as on the wire)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Now in UTC, truncated to milliseconds so stored and wire times agree."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
