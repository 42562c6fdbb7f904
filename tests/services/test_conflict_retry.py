"""A report retried after a lost answer must not save a second conflict copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import ConflictPolicy
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.report import LocalChange, ReportStatus
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database
from shelfsync.server.storage.items import ItemRepository

V = {name: hashlib.sha256(name.encode()).hexdigest() for name in ("v1", "v2", "v3")}


def _upsert(version: str, base: int | None) -> LocalChange:
    return LocalChange(
        op=ChangeOp.UPSERT, path="notes.txt", base_revision=base, content_hash=V[version], size=2
    )


def test_retried_conflicting_report_under_keep_both_saves_one_copy(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
    )
    services = build_services(settings, db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    owner = Principal(user, None)
    laptop = services.devices.register(owner, name="laptop")[0].device
    phone = services.devices.register(
        owner, name="phone", conflict_policy=ConflictPolicy.KEEP_BOTH
    )[0].device
    with db.write() as tx:
        for content_hash in V.values():
            ContentRepository(tx).add(
                user_id=user.id, content_hash=content_hash, size=2, now=utcnow()
            )
    services.report.report(Principal(user, laptop), [_upsert("v1", None)])
    services.report.report(Principal(user, laptop), [_upsert("v2", 1)])

    first = services.report.report(Principal(user, phone), [_upsert("v3", 1)])
    retry = services.report.report(Principal(user, phone), [_upsert("v3", 1)])

    assert first[0].status is ReportStatus.CONFLICT
    assert retry[0].status is ReportStatus.CONFLICT
    assert retry[0].conflict_id == first[0].conflict_id
    page = services.feed.page(owner, cursor=None, limit=100)
    copies = [item.path for item in page.changes if item.content_hash == V["v3"]]
    assert len(copies) == 1
    assert copies[0].startswith("notes (conflict phone ")
    with db.read() as tx:
        assert ItemRepository(tx).live_at_path(user.id, "notes.txt").content_hash == V["v2"]  # type: ignore[union-attr]
