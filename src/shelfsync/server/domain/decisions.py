"""The report decision table (protocol section 7), as pure functions.

Order: base is current -> apply; states equal -> unchanged; else conflict.
Two refinements keep the table honest without changing what a client sees:
- a delete of something already deleted or absent is `unchanged` (applying it
  would only mint an empty revision);
- a tombstone counts as "absent", so an upsert with `base_revision: null` over
  a deleted item re-creates it (same id, next revision), while an upsert based
  on a revision older than the delete is a conflict (an edit of an item deleted
  meanwhile).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from shelfsync.server.domain.items import ItemState

__all__ = ["Current", "Verdict", "base_is_current", "decide_move", "decide_write"]

ABSENT = ItemState(deleted=True, content_hash=None, metadata={})


class Verdict(enum.StrEnum):
    """What the engine does with one reported change."""

    APPLY = "apply"  # becomes the current state (new revision and seq)
    UNCHANGED = "unchanged"  # the server already holds that state
    CONFLICT = "conflict"  # stale base and different states: record a conflict


@dataclass(frozen=True, slots=True)
class Current:
    """The server's item at a path: its revision and state (a tombstone counts)."""

    revision: int
    state: ItemState


def base_is_current(current: Current | None, base_revision: int | None) -> bool:
    if current is None:
        return base_revision is None
    if current.state.deleted:
        return base_revision is None or base_revision == current.revision
    return base_revision == current.revision


def decide_write(
    *, current: Current | None, base_revision: int | None, incoming: ItemState
) -> Verdict:
    """Upsert or delete of one path."""
    server = current.state if current is not None else ABSENT
    if incoming.deleted and server.deleted:
        return Verdict.UNCHANGED
    if base_is_current(current, base_revision):
        return Verdict.APPLY
    if server.same_as(incoming):
        return Verdict.UNCHANGED
    return Verdict.CONFLICT


def decide_move(
    *,
    source: Current | None,
    target: Current | None,
    base_revision: int | None,
    already_moved: bool,
) -> Verdict:
    """A move keeps the id; it needs the source's current revision and a free target.

    `already_moved`: the item the client based the move on is already live at
    the target (a retry, or the same move made on two devices).
    """
    source_live = source is not None and not source.state.deleted
    target_free = target is None or target.state.deleted
    if source_live and source is not None and source.revision == base_revision and target_free:
        return Verdict.APPLY
    if already_moved:
        return Verdict.UNCHANGED
    return Verdict.CONFLICT
