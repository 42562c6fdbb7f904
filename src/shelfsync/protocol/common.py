"""Conventions every wire model shares (protocol section 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer

__all__ = ["Timestamp", "format_timestamp"]


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, milliseconds: `2026-11-26T18:27:41.123Z`."""
    # isoformat, not strftime: 2.5x faster, and a feed page formats 2,000 of these
    # (issue 7). In UTC it always ends in "+00:00", which becomes "Z".
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


Timestamp = Annotated[
    datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")
]
