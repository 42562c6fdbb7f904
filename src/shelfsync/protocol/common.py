"""Conventions every wire model shares (protocol section 1)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer

__all__ = ["Timestamp", "format_timestamp"]


def format_timestamp(value: datetime) -> str:
    """RFC 3339, UTC, milliseconds: `2026-11-26T18:27:41.123Z`."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


Timestamp = Annotated[
    datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")
]
