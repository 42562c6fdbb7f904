"""Garbage collection of stored content (issue "Content"): what is referenced
stays, what nothing needs goes, and a crash mid-removal is repaired at start."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from shelfsync.content_hash import hash_bytes
from shelfsync.server.api.dependencies import Services
from shelfsync.server.app import build_services
from shelfsync.server.domain.accounts import Device, User
from shelfsync.server.domain.clock import utcnow
from shelfsync.server.domain.items import ChangeOp
from shelfsync.server.services.auth import Principal
from shelfsync.server.services.report import LocalChange, ReportStatus
from shelfsync.server.settings import Settings
from shelfsync.server.storage.contents import ContentRepository
from shelfsync.server.storage.engine import Database

NO_GRACE = timedelta(0)


def _services(tmp_path: Path, database_url: str, db: Database) -> tuple[Services, User, Device]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=8192,
    )
    services = build_services(settings, db)
    user = services.accounts.add_user(username="alice", password="correct horse battery")
    device = services.devices.register(Principal(user, None), name="laptop")[0].device
    return services, user, device


def _store(services: Services, user: User, data: bytes) -> str:
    """Put bytes into the blob store the way an upload does, and register them."""
    content_hash = hash_bytes(data)
    session_id = "00000000-0000-4000-8000-" + content_hash[:12]
    services.blobs.create_session_file(session_id, len(data))
    chunk = services.blobs.open_chunk(session_id, 0)
    chunk.write(data)
    chunk.sync()
    chunk.close()
    services.blobs.commit_session(session_id, content_hash)
    with services.db.write() as tx:
        ContentRepository(tx).add(
            user_id=user.id, content_hash=content_hash, size=len(data), now=utcnow()
        )
    return content_hash


def _put(
    services: Services, user: User, device: Device, path: str, data: bytes, base: int | None
) -> None:
    (result,) = services.report.report(
        Principal(user, device),
        [
            LocalChange(
                op=ChangeOp.UPSERT,
                path=path,
                base_revision=base,
                content_hash=hash_bytes(data),
                size=len(data),
            )
        ],
    )
    assert result.status is ReportStatus.APPLIED


def test_content_of_a_current_item_is_kept(tmp_path: Path, database_url: str, db: Database) -> None:
    services, user, device = _services(tmp_path, database_url, db)
    kept = _store(services, user, b"the only copy")
    _put(services, user, device, "a.txt", b"the only copy", None)

    assert services.content_gc.collect(grace=NO_GRACE) == 0
    assert services.blobs.has(kept)


def test_unreferenced_content_is_removed_with_its_rows(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, _ = _services(tmp_path, database_url, db)
    orphan = _store(services, user, b"nobody needs this")

    assert services.content_gc.collect(grace=NO_GRACE) == 1
    assert not services.blobs.has(orphan)
    with db.read() as tx:
        assert not ContentRepository(tx).exists(orphan)
        assert ContentRepository(tx).size_for_user(user.id, orphan) is None


def test_young_content_is_left_alone_during_the_grace_period(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, _ = _services(tmp_path, database_url, db)
    young = _store(services, user, b"just arrived")

    assert services.content_gc.collect(grace=timedelta(hours=1)) == 0
    assert services.blobs.has(young)


def test_replaced_content_stays_for_the_retention_period_then_goes(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, device = _services(tmp_path, database_url, db)
    old = _store(services, user, b"version one")
    new = _store(services, user, b"version two")
    _put(services, user, device, "a.txt", b"version one", None)
    _put(services, user, device, "a.txt", b"version two", 1)

    assert services.content_gc.collect(grace=NO_GRACE) == 0
    assert services.blobs.has(old)

    services.retention.run_once(now=utcnow() + timedelta(days=31))
    assert services.content_gc.collect(grace=NO_GRACE) == 1
    assert not services.blobs.has(old)
    assert services.blobs.has(new)


def test_content_a_pending_upload_relies_on_is_kept(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, device = _services(tmp_path, database_url, db)
    held = _store(services, user, b"deduplicated upload")
    session = services.uploads.create(
        Principal(user, device),
        path="copy.txt",
        size=len(b"deduplicated upload"),
        content_hash=held,
        base_revision=None,
    )
    assert session.deduplicated

    assert services.content_gc.collect(grace=NO_GRACE) == 0
    services.uploads.complete(Principal(user, device), session.id)
    assert services.blobs.has(held)


def test_a_removal_interrupted_before_commit_is_undone_at_start(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, _ = _services(tmp_path, database_url, db)
    content_hash = _store(services, user, b"still recorded")
    services.blobs.trash(content_hash)  # the crash came before the rows were deleted

    assert services.content_gc.recover() == 1
    assert services.blobs.has(content_hash)
    assert services.blobs.trashed() == []


def test_a_removal_interrupted_after_commit_is_finished_at_start(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, _ = _services(tmp_path, database_url, db)
    content_hash = _store(services, user, b"already forgotten")
    trashed = services.blobs.trash(content_hash)
    with db.write() as tx:
        ContentRepository(tx).remove(content_hash)  # committed, then the crash

    assert trashed is not None
    assert trashed.exists()
    assert services.content_gc.recover() == 1
    assert not trashed.exists()
    assert not services.blobs.has(content_hash)
    assert os.listdir(services.blobs.trash_dir) == []


# -- content stored in the database (small content) ------------------------------


def _store_inline(services: Services, user: User, data: bytes) -> str:
    """Record bytes as inline content, the way a batch upload does."""
    content_hash = hash_bytes(data)
    with services.db.write() as tx:
        contents = ContentRepository(tx)
        contents.add(user_id=user.id, content_hash=content_hash, size=len(data), now=utcnow())
        contents.add_data(content_hash, data)
    return content_hash


def _inline(db: Database, content_hash: str) -> bytes | None:
    with db.read() as tx:
        data: bytes | None = ContentRepository(tx).inline_one(content_hash)
    return data


def test_inline_content_is_kept_while_referenced_and_removed_with_its_record(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    services, user, device = _services(tmp_path, database_url, db)
    kept = _store_inline(services, user, b"small and current")
    orphan = _store_inline(services, user, b"small and forgotten")
    _put(services, user, device, "a.txt", b"small and current", None)

    assert services.content_gc.collect(grace=NO_GRACE) == 1
    assert _inline(db, kept) == b"small and current"
    assert _inline(db, orphan) is None
    with db.read() as tx:
        assert not ContentRepository(tx).exists(orphan)
        assert ContentRepository(tx).size_for_user(user.id, orphan) is None
    assert services.blobs.trashed() == []
    assert not services.blobs.has(orphan)


def test_a_failed_removal_of_inline_content_keeps_it_whole(
    tmp_path: Path, database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes go in the transaction that deletes the record: a crash before
    its commit keeps both (no trash step, nothing to recover)."""
    services, user, _ = _services(tmp_path, database_url, db)
    orphan = _store_inline(services, user, b"about to go")
    real = ContentRepository.remove

    def crash_after(self: ContentRepository, content_hash: str) -> None:
        real(self, content_hash)
        raise RuntimeError("the process died before the commit")

    monkeypatch.setattr(ContentRepository, "remove", crash_after)
    with pytest.raises(RuntimeError):
        services.content_gc.collect(grace=NO_GRACE)
    monkeypatch.undo()
    assert _inline(db, orphan) == b"about to go"
    with db.read() as tx:
        assert ContentRepository(tx).size_for_user(user.id, orphan) == len(b"about to go")
    assert services.content_gc.recover() == 0

    assert services.content_gc.collect(grace=NO_GRACE) == 1
    assert _inline(db, orphan) is None


def test_content_stored_both_inline_and_as_a_file_goes_whole(
    tmp_path: Path, database_url: str, db: Database
) -> None:
    """A content stored as a file once and inline later (the limit changed):
    collection removes both copies."""
    services, user, _ = _services(tmp_path, database_url, db)
    content_hash = _store(services, user, b"two copies")
    with db.write() as tx:
        ContentRepository(tx).add_data(content_hash, b"two copies")

    assert services.content_gc.collect(grace=NO_GRACE) == 1
    assert _inline(db, content_hash) is None
    assert not services.blobs.has(content_hash)
    assert os.listdir(services.blobs.trash_dir) == []
