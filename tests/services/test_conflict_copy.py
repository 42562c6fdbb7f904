"""keep_both saves the client's version at the conflict's suggested_path (protocol section 8).

The name carries the detection time; a resolution made later must still use it
(a client may have shown it to the user), unless the name was taken meanwhile.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from shelfsync.server.api.dependencies import Services
from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import User
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.conflicts import Conflict, Resolution
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.domain.paths import conflict_path
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.report import LocalChange, ReportStatus
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database

VERSIONS = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("v1", "v2", "v3")}


def _upsert(path: str, version: str, base: int | None) -> LocalChange:
    return LocalChange(
        op=ChangeOp.UPSERT,
        path=path,
        base_revision=base,
        content_hash=VERSIONS[version],
        size=2,
        metadata={},
    )


def _conflicted(tmp_path: Path, database_url: str, db: Database) -> tuple[Services, User, Conflict]:
    """laptop edits notes.txt; phone edits its stale copy: one open conflict."""
    services = build_services(Settings(data_dir=tmp_path / "data", database_url=database_url), db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    owner = Principal(user, None)
    laptop = services.devices.register(owner, name="laptop")[0].device
    phone = services.devices.register(owner, name="phone")[0].device
    with db.write() as tx:
        for content_hash in VERSIONS.values():
            ContentRepository(tx).add(
                user_id=user.id, content_hash=content_hash, size=2, now=utcnow()
            )
    services.report.report(Principal(user, laptop), [_upsert("notes.txt", "v1", None)])
    services.report.report(Principal(user, laptop), [_upsert("notes.txt", "v2", 1)])
    (result,) = services.report.report(Principal(user, phone), [_upsert("notes.txt", "v3", 1)])
    assert result.status is ReportStatus.CONFLICT
    ((conflict, _),) = services.conflicts.unresolved(owner)
    return services, user, conflict


def test_keep_both_resolved_later_saves_at_the_suggested_path(
    tmp_path: Path, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, user, conflict = _conflicted(tmp_path, database_url, db)
    later = conflict.detected_at + timedelta(hours=1)
    monkeypatch.setattr("shelfsync.server.services.conflicts.utcnow", lambda: later)

    resolved, written = services.conflicts.resolve(
        Principal(user, None), conflict.id, resolution=Resolution.KEEP_BOTH
    )

    assert conflict.suggested_path.startswith("notes (conflict phone ")
    assert resolved.result_path == conflict.suggested_path
    assert [(item.path, item.content_hash) for item in written] == [
        (conflict.suggested_path, VERSIONS["v3"])
    ]


def test_keep_both_takes_a_fresh_name_when_the_suggested_one_was_taken(
    tmp_path: Path, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, user, conflict = _conflicted(tmp_path, database_url, db)
    laptop = next(
        d for d in services.devices.list(Principal(user, None)) if d.device.name == "laptop"
    )
    services.report.report(
        Principal(user, laptop.device), [_upsert(conflict.suggested_path, "v1", None)]
    )
    later = conflict.detected_at + timedelta(hours=1)
    monkeypatch.setattr("shelfsync.server.services.conflicts.utcnow", lambda: later)

    resolved, written = services.conflicts.resolve(
        Principal(user, None), conflict.id, resolution=Resolution.KEEP_BOTH
    )

    fresh = conflict_path("notes.txt", device_name="phone", when=later)
    assert resolved.result_path == fresh != conflict.suggested_path
    assert [(item.path, item.content_hash) for item in written] == [(fresh, VERSIONS["v3"])]
