"""The report decision table (protocol section 7) as pure functions.

Every combination of the server's state at a path, the client's base revision
and the incoming change is one row, named for the behaviour it pins down.
"""

from __future__ import annotations

import itertools

import pytest

from shelfsync.server.domain.decisions import Current, Verdict, decide_move, decide_write
from shelfsync.server.domain.items import ItemState

A = "a" * 64
B = "b" * 64

# The server's state at the path, and the base revisions a client may hold for
# it: live items are at revision 3, the tombstone at 4; an absent path has no
# revision, so any number names an item the server does not know (any more).
STATES: dict[str, tuple[Current | None, dict[str, int | None]]] = {
    "absent": (None, {"null": None, "stale": 2, "ahead": 5}),
    "live": (
        Current(3, ItemState(deleted=False, content_hash=A, metadata={})),
        {"null": None, "current": 3, "stale": 2, "ahead": 4},
    ),
    "live-other-metadata": (
        Current(3, ItemState(deleted=False, content_hash=A, metadata={"rating": 5})),
        {"null": None, "current": 3, "stale": 2, "ahead": 4},
    ),
    "tombstone": (
        Current(4, ItemState(deleted=True, content_hash=None, metadata={})),
        {"null": None, "current": 4, "stale": 3, "ahead": 5},
    ),
}
INCOMING = {
    "upsert-same": ItemState(deleted=False, content_hash=A, metadata={}),
    "upsert-other": ItemState(deleted=False, content_hash=B, metadata={}),
    "delete": ItemState(deleted=True, content_hash=None, metadata={}),
}

APPLY, UNCHANGED, CONFLICT = Verdict.APPLY, Verdict.UNCHANGED, Verdict.CONFLICT

# (state, base, incoming) -> (verdict, the behaviour's name)
WRITE_TABLE: dict[tuple[str, str, str], tuple[Verdict, str]] = {
    # -- nothing at the path ---------------------------------------------------
    ("absent", "null", "upsert-same"): (APPLY, "create-new-path-applies"),
    ("absent", "null", "upsert-other"): (APPLY, "create-other-content-applies"),
    ("absent", "null", "delete"): (UNCHANGED, "delete-of-absent-path-is-unchanged"),
    ("absent", "stale", "upsert-same"): (CONFLICT, "edit-of-forgotten-item-is-conflict"),
    ("absent", "stale", "upsert-other"): (CONFLICT, "other-edit-of-forgotten-item-is-conflict"),
    ("absent", "stale", "delete"): (UNCHANGED, "delete-of-forgotten-item-is-unchanged"),
    ("absent", "ahead", "upsert-same"): (CONFLICT, "edit-ahead-of-absent-is-conflict"),
    ("absent", "ahead", "upsert-other"): (CONFLICT, "other-edit-ahead-of-absent-is-conflict"),
    ("absent", "ahead", "delete"): (UNCHANGED, "delete-ahead-of-absent-is-unchanged"),
    # -- live, revision 3, content A -------------------------------------------
    ("live", "null", "upsert-same"): (UNCHANGED, "same-file-created-on-two-devices-is-unchanged"),
    ("live", "null", "upsert-other"): (CONFLICT, "create-over-unseen-file-is-conflict"),
    ("live", "null", "delete"): (CONFLICT, "delete-of-unseen-file-is-conflict"),
    ("live", "current", "upsert-same"): (APPLY, "current-base-touch-applies"),
    ("live", "current", "upsert-other"): (APPLY, "current-base-edit-applies"),
    ("live", "current", "delete"): (APPLY, "current-base-delete-applies"),
    ("live", "stale", "upsert-same"): (UNCHANGED, "retry-of-applied-edit-is-unchanged"),
    ("live", "stale", "upsert-other"): (CONFLICT, "stale-edit-over-edit-is-conflict"),
    ("live", "stale", "delete"): (CONFLICT, "stale-delete-over-edit-is-conflict"),
    ("live", "ahead", "upsert-same"): (UNCHANGED, "base-ahead-same-state-is-unchanged"),
    ("live", "ahead", "upsert-other"): (CONFLICT, "base-ahead-edit-is-conflict"),
    ("live", "ahead", "delete"): (CONFLICT, "base-ahead-delete-is-conflict"),
    # -- live, revision 3, content A with other metadata -----------------------
    ("live-other-metadata", "null", "upsert-same"): (
        CONFLICT,
        "create-same-content-other-metadata-is-conflict",
    ),
    ("live-other-metadata", "null", "upsert-other"): (
        CONFLICT,
        "create-over-unseen-tagged-file-is-conflict",
    ),
    ("live-other-metadata", "null", "delete"): (
        CONFLICT,
        "delete-of-unseen-tagged-file-is-conflict",
    ),
    ("live-other-metadata", "current", "upsert-same"): (
        APPLY,
        "current-base-metadata-change-applies",
    ),
    ("live-other-metadata", "current", "upsert-other"): (
        APPLY,
        "current-base-edit-of-tagged-file-applies",
    ),
    ("live-other-metadata", "current", "delete"): (
        APPLY,
        "current-base-delete-of-tagged-file-applies",
    ),
    ("live-other-metadata", "stale", "upsert-same"): (
        CONFLICT,
        "stale-base-over-metadata-edit-is-conflict",
    ),
    ("live-other-metadata", "stale", "upsert-other"): (
        CONFLICT,
        "stale-edit-over-metadata-edit-is-conflict",
    ),
    ("live-other-metadata", "stale", "delete"): (
        CONFLICT,
        "stale-delete-over-metadata-edit-is-conflict",
    ),
    ("live-other-metadata", "ahead", "upsert-same"): (
        CONFLICT,
        "base-ahead-other-metadata-is-conflict",
    ),
    ("live-other-metadata", "ahead", "upsert-other"): (
        CONFLICT,
        "base-ahead-edit-of-tagged-file-is-conflict",
    ),
    ("live-other-metadata", "ahead", "delete"): (
        CONFLICT,
        "base-ahead-delete-of-tagged-file-is-conflict",
    ),
    # -- tombstone, revision 4 -------------------------------------------------
    ("tombstone", "null", "upsert-same"): (APPLY, "create-over-tombstone-recreates"),
    ("tombstone", "null", "upsert-other"): (APPLY, "create-other-over-tombstone-recreates"),
    ("tombstone", "null", "delete"): (UNCHANGED, "delete-of-deleted-path-is-unchanged"),
    ("tombstone", "current", "upsert-same"): (APPLY, "restore-on-current-tombstone-applies"),
    ("tombstone", "current", "upsert-other"): (APPLY, "edit-on-current-tombstone-applies"),
    ("tombstone", "current", "delete"): (UNCHANGED, "retry-of-applied-delete-is-unchanged"),
    ("tombstone", "stale", "upsert-same"): (CONFLICT, "unedited-upsert-over-delete-is-conflict"),
    ("tombstone", "stale", "upsert-other"): (
        CONFLICT,
        "edit-of-item-deleted-meanwhile-is-conflict",
    ),
    ("tombstone", "stale", "delete"): (UNCHANGED, "same-delete-on-two-devices-is-unchanged"),
    ("tombstone", "ahead", "upsert-same"): (CONFLICT, "base-ahead-of-tombstone-is-conflict"),
    ("tombstone", "ahead", "upsert-other"): (
        CONFLICT,
        "base-ahead-edit-of-tombstone-is-conflict",
    ),
    ("tombstone", "ahead", "delete"): (UNCHANGED, "base-ahead-delete-of-deleted-is-unchanged"),
}


def _write_cases() -> list[object]:
    cases: list[object] = []
    for (state, base, change), (verdict, name) in WRITE_TABLE.items():
        current, bases = STATES[state]
        cases.append(pytest.param(current, bases[base], INCOMING[change], verdict, id=name))
    return cases


@pytest.mark.parametrize(("current", "base_revision", "incoming", "verdict"), _write_cases())
def test_decide_write_follows_the_decision_table(
    current: Current | None, base_revision: int | None, incoming: ItemState, verdict: Verdict
) -> None:
    decided = decide_write(current=current, base_revision=base_revision, incoming=incoming)
    assert decided is verdict


def test_write_table_has_one_row_per_state_base_and_change() -> None:
    combinations = {
        (state, base, change)
        for state, (_, bases) in STATES.items()
        for base, change in itertools.product(bases, INCOMING)
    }
    assert set(WRITE_TABLE) == combinations
    names = [name for _, name in WRITE_TABLE.values()]
    assert len(set(names)) == len(names)


LIVE_3 = Current(3, ItemState(deleted=False, content_hash=A, metadata={}))
EDITED_4 = Current(4, ItemState(deleted=False, content_hash=B, metadata={}))
DELETED_4 = Current(4, ItemState(deleted=True, content_hash=None, metadata={}))
NEW_ITEM = Current(1, ItemState(deleted=False, content_hash=B, metadata={}))
OLD_TOMBSTONE = Current(2, ItemState(deleted=True, content_hash=None, metadata={}))

# (source, target, base_revision, already_moved, verdict)
MOVE_TABLE = [
    pytest.param(LIVE_3, None, 3, False, APPLY, id="move-to-free-path-applies"),
    pytest.param(LIVE_3, OLD_TOMBSTONE, 3, False, APPLY, id="move-onto-tombstone-applies"),
    pytest.param(None, None, 3, True, UNCHANGED, id="retry-of-applied-move-is-unchanged"),
    pytest.param(
        NEW_ITEM, None, 3, True, UNCHANGED, id="retry-after-source-path-reused-is-unchanged"
    ),
    pytest.param(EDITED_4, None, 3, False, CONFLICT, id="move-of-edited-source-is-conflict"),
    pytest.param(LIVE_3, None, None, False, CONFLICT, id="move-without-base-is-conflict"),
    pytest.param(LIVE_3, NEW_ITEM, 3, False, CONFLICT, id="move-onto-occupied-path-is-conflict"),
    pytest.param(DELETED_4, None, 3, False, CONFLICT, id="move-of-deleted-source-is-conflict"),
    pytest.param(None, None, 3, False, CONFLICT, id="move-of-vanished-source-is-conflict"),
]


@pytest.mark.parametrize(
    ("source", "target", "base_revision", "already_moved", "verdict"), MOVE_TABLE
)
def test_decide_move_follows_the_decision_table(
    source: Current | None,
    target: Current | None,
    base_revision: int | None,
    already_moved: bool,
    verdict: Verdict,
) -> None:
    decided = decide_move(
        source=source, target=target, base_revision=base_revision, already_moved=already_moved
    )
    assert decided is verdict
