"""Time-ordered item ids: UUID strings (version 7) that increase as they are made."""

from __future__ import annotations

import uuid

from shelfsync.server.domain.ids import time_ordered_id


def test_ids_are_version_7_uuid_strings_in_increasing_order() -> None:
    ids = [time_ordered_id() for _ in range(20_000)]  # several share a millisecond
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for value in ids[::997]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
